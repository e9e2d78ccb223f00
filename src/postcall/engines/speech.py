"""Where the speech is: the regions of a chunk worth decoding.

Two detectors, and a region is speech when either finds it:

* Silero VAD (bundled with faster-whisper) on the *levelled* audio, so that a quiet
  participant reaches its threshold (``levels.gain_curve``);
* ``levels.above_floor`` on the audio as recorded: sound that stands well out of the
  room's noise for half a second or more. Silero was trained on voiced speech and
  misses much of a whisper, or a voice through a narrow telephone band; those still
  stand out of the noise. Stationary noise and silence never do.

A region that holds no words after all costs one more look by the decoder, which
drops windows it finds no speech in (``whisper_local._hallucinated``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from postcall.engines.levels import above_floor
from postcall.engines.windows import normalised

Region = tuple[int, int]

# Silero: short pauses count as gaps; regions padded a little (samples at 16 kHz).
VAD_MIN_SILENCE_MS = 160
VAD_PAD_MS = 200


def find_speech(
    levelled: npt.NDArray[np.float32], recorded: npt.NDArray[np.float32]
) -> list[Region]:
    """Speech regions (sample ranges, sorted, disjoint) of a chunk, given it levelled
    and as recorded."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps  # onnxruntime: on use

    found = get_speech_timestamps(
        levelled,
        VadOptions(min_silence_duration_ms=VAD_MIN_SILENCE_MS, speech_pad_ms=VAD_PAD_MS),
    )
    regions = [(int(r["start"]), int(r["end"])) for r in found]
    return normalised(regions + above_floor(recorded), recorded.size)
