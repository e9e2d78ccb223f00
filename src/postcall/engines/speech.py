"""Where the speech is: the regions of a chunk worth decoding.

Two detectors, and a region is speech when either finds it:

* Silero VAD (bundled with faster-whisper) on the *levelled* audio, so that a quiet
  participant reaches its threshold (``levels.gain_curve``);
* ``levels.above_floor`` on the audio as recorded: sound that stands well out of the
  room's noise for half a second or more, where Silero's speech probability is not
  negligible in a tenth of it (``MIN_SUPPORT``). Silero was trained on voiced speech
  and misses most frames of a whisper, or of a voice through a narrow telephone band,
  yet scores them well above typing, beeps or music; stationary noise and silence
  never stand out at all.

A region that holds no words after all costs one more look by the decoder, which
drops windows it finds no speech in (``whisper_local._hallucinated``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from postcall.engines.levels import above_floor
from postcall.engines.windows import normalised

Region = tuple[int, int]

# Silero: short pauses count as gaps; regions padded a little (samples at 16 kHz).
VAD_MIN_SILENCE_MS = 160
VAD_PAD_MS = 200
_SILERO_WINDOW = 512
# Sound that stands out of the noise is taken for speech when Silero's speech
# probability over a tenth of it (its 90th percentile, ``SUPPORT_PERCENTILE``) reaches
# this. On the development meetings (seeds 1-7, 11 and 12) all 397 such stretches of
# speech scored 0.117 or more, keyboard typing and beeps 0.009-0.045. The mean, used
# before, dropped slow speech through a telephone line (three words in 7.8 s: 0.050-0.061
# against 0.06), whose pauses between the words dilute it.
MIN_SUPPORT = 0.07
SUPPORT_PERCENTILE = 90


def find_speech(
    levelled: npt.NDArray[np.float32], recorded: npt.NDArray[np.float32]
) -> list[Region]:
    """Speech regions (sample ranges, sorted, disjoint) of a chunk, given it levelled
    and as recorded."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model

    found = get_speech_timestamps(
        levelled,
        VadOptions(min_silence_duration_ms=VAD_MIN_SILENCE_MS, speech_pad_ms=VAD_PAD_MS),
    )
    regions = [(int(r["start"]), int(r["end"])) for r in found]
    covered = np.zeros(levelled.size, dtype=bool)
    for a, b in regions:
        covered[a:b] = True
    model = get_vad_model()
    for a, b in above_floor(recorded):
        if covered[a:b].mean() >= 0.5 or _support(model, levelled[a:b]) >= MIN_SUPPORT:
            regions.append((a, b))
    return normalised(regions, recorded.size)


def _support(
    model: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
    audio: npt.NDArray[np.float32],
) -> float:
    """Silero's speech probability that a tenth of ``audio`` reaches (its 90th
    percentile over 32 ms frames)."""
    padded = np.pad(audio, (0, -audio.size % _SILERO_WINDOW))
    if not padded.size:
        return 0.0
    return float(np.percentile(model(padded), SUPPORT_PERCENTILE))
