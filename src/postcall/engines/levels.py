"""Level conditioning: a quiet participant heard as clearly as a loud one.

Whisper's features and the speech detector both see absolute levels: a remote
participant on a bad microphone, 40 dB below the person next to the recorder, falls
under the detector's threshold and, packed into a window beside loud speech, under the
model's attention. ``gain_curve`` raises each stretch of speech towards ``target_dbfs``
by its own level, not the recording's:

* the level at a moment is the loudest 10 ms frame within ``reach_s`` of it (so a
  word's quiet consonants get the gain of its vowels);
* the gain is bounded (``max_gain_db``) and never below 0 dB: loud speech is left alone;
* a stretch is raised only where it stands ``min_snr_db`` above the local noise floor
  (the quietest frames within ``floor_s``): stationary room noise, hum and silence
  have no such stretch and keep their level, so boosting invents no speech;
* the gain changes smoothly (``ramp_s``), so it makes no clicks, and the noise in the
  pauses inside a turn is raised with the turn: the turn's signal-to-noise ratio, what
  the detector and the model rely on, stays what it was.

Pure numpy over 16 kHz mono float32: no model, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

RATE = 16000
_FRAME = 160  # 10 ms
_BLOCK = 25  # frames per noise-floor block (250 ms)
_SILENCE_DB = -100.0  # frame energies are floored here (digital silence)

Audio = npt.NDArray[np.float32]


@dataclass(frozen=True)
class LevelOptions:
    """How speech is levelled; the defaults were chosen on the development meeting
    (bench/meeting.py --set dev), never on the set whose figures are reported."""

    target_dbfs: float = -20.0  # frame level (10 ms RMS) the loudest part of a turn reaches
    max_gain_db: float = 40.0
    min_snr_db: float = 12.0
    reach_s: float = 0.75
    floor_s: float = 8.0
    ramp_s: float = 0.1


def gain_curve(audio: Audio, options: LevelOptions | None = None) -> Audio:
    """A gain per sample (linear, >= 1) that levels the speech in ``audio``."""
    o = options or LevelOptions()
    db = _frame_db(audio)
    if db.size == 0:
        return np.ones(audio.size, dtype=np.float32)
    level = _sliding_max(db, round(o.reach_s * RATE / _FRAME))
    floor = _noise_floor(db, round(o.floor_s * RATE / _FRAME / _BLOCK))
    gain_db = np.clip(o.target_dbfs - level, 0.0, o.max_gain_db)
    gain_db = np.where(level - floor >= o.min_snr_db, gain_db, 0.0)
    # Smoothed from both sides: the ramp starts before the speech that needs it.
    k = max(1, round(o.ramp_s * RATE / _FRAME / 2))
    gain_db = np.convolve(
        np.pad(gain_db, k, mode="edge"), np.ones(2 * k + 1) / (2 * k + 1), "valid"
    )
    # Per frame, then per sample: no recording-long temporary arrays of float64.
    per_sample = np.repeat((10 ** (gain_db / 20)).astype(np.float32), _FRAME)
    return np.pad(per_sample, (0, audio.size - per_sample.size), mode="edge")


def levelled(audio: Audio, options: LevelOptions | None = None) -> Audio:
    """``audio`` times its ``gain_curve``, kept within full scale."""
    out = np.asarray(audio, dtype=np.float32) * gain_curve(audio, options)
    return np.clip(out, -1.0, 1.0, out=out)


def _frame_db(audio: Audio) -> npt.NDArray[np.float64]:
    """Level of each whole 10 ms frame, dBFS (RMS), floored at digital silence."""
    n = audio.size // _FRAME
    frames = np.asarray(audio[: n * _FRAME], dtype=np.float32).reshape(n, _FRAME)
    power = np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / _FRAME
    db: npt.NDArray[np.float64] = 10 * np.log10(np.maximum(power, 10 ** (_SILENCE_DB / 10)))
    return db


def _sliding_max(x: npt.NDArray[np.float64], reach: int) -> npt.NDArray[np.float64]:
    if reach <= 0:
        return x
    padded = np.pad(x, reach, mode="edge")
    result: npt.NDArray[np.float64] = sliding_window_view(padded, 2 * reach + 1).max(axis=1)
    return result


def _noise_floor(db: npt.NDArray[np.float64], reach_blocks: int) -> npt.NDArray[np.float64]:
    """Per frame: the lowest 10th-percentile frame level of the 250 ms blocks within
    ``reach_blocks`` of it (the room's noise, between words and turns)."""
    n = db.size
    blocks = -(-n // _BLOCK)
    padded = np.pad(db, (0, blocks * _BLOCK - n), mode="edge").reshape(blocks, _BLOCK)
    quiet = np.percentile(padded, 10, axis=1)
    if reach_blocks > 0:
        quiet = sliding_window_view(np.pad(quiet, reach_blocks, mode="edge"), 2 * reach_blocks + 1)
        quiet = quiet.min(axis=1)
    floor: npt.NDArray[np.float64] = np.repeat(quiet, _BLOCK)[:n]
    return floor


def above_floor(
    audio: Audio,
    *,
    min_snr_db: float = 15.0,
    min_s: float = 0.5,
    bridge_s: float = 0.3,
    pad_s: float = 0.1,
    floor_s: float = 8.0,
) -> list[tuple[int, int]]:
    """Sample ranges where ``audio`` stands ``min_snr_db`` above its local noise floor for
    at least ``min_s`` (dips shorter than ``bridge_s`` bridged), padded by ``pad_s``.

    What a speech detector trained on voiced speech can miss (whispers, a voice through
    a narrow telephone band) still stands out of the room's noise; stationary noise,
    hum and silence never do, whatever their level.
    """
    db = _frame_db(audio)
    if db.size == 0:
        return []
    floor = _noise_floor(db, round(floor_s * RATE / _FRAME / _BLOCK))
    loud = db - floor >= min_snr_db
    runs: list[tuple[int, int]] = []
    edges = np.flatnonzero(np.diff(np.concatenate(([0], loud.astype(np.int8), [0]))))
    for a, b in zip(edges[0::2], edges[1::2], strict=True):
        if runs and a - runs[-1][1] < bridge_s * RATE / _FRAME:
            runs[-1] = (runs[-1][0], int(b))
        else:
            runs.append((int(a), int(b)))
    pad = round(pad_s * RATE)
    return [
        (max(0, a * _FRAME - pad), min(audio.size, b * _FRAME + pad))
        for a, b in runs
        if (b - a) * _FRAME >= min_s * RATE
    ]
