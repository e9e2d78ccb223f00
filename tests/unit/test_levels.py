"""Level conditioning and detection above the noise floor (numpy only, no model)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from postcall.engines.levels import LevelOptions, above_floor, gain_curve, levelled

RATE = 16000


def babble(seconds: float, peak_dbfs: float, seed: int) -> npt.NDArray[np.float32]:
    """Speech-like sound: noise bursts of 150 ms (syllables) with 50 ms dips, at a peak."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    x = rng.standard_normal(n)
    envelope = (np.arange(n) % round(0.2 * RATE) < round(0.15 * RATE)).astype(np.float64)
    x *= envelope
    x *= 10 ** (peak_dbfs / 20) / np.max(np.abs(x))
    return x.astype(np.float32)


def noise(seconds: float, rms_dbfs: float, seed: int = 9) -> npt.NDArray[np.float32]:
    x = np.random.default_rng(seed).standard_normal(round(seconds * RATE))
    return (x * 10 ** (rms_dbfs / 20)).astype(np.float32)


def rms_db(x: npt.NDArray[np.float32]) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2)))


def meeting() -> tuple[npt.NDArray[np.float32], list[tuple[int, int]]]:
    """Loud, quiet (-40 dB), loud turns over a -80 dBFS noise floor; their spans."""
    parts = [babble(3, -3, 1), babble(3, -43, 2), babble(3, -3, 3)]
    pause = round(1.5 * RATE)
    audio = noise(3 * 3 + 4 * 1.5, -80.0)
    spans = []
    at = pause
    for p in parts:
        audio[at : at + p.size] += p
        spans.append((at, at + p.size))
        at += p.size + pause
    return audio, spans


def test_a_quiet_turn_is_raised_to_the_level_of_the_loud_ones() -> None:
    audio, spans = meeting()
    out = levelled(audio)
    loud, quiet, loud2 = (rms_db(out[a:b]) for a, b in spans)
    assert abs(loud - rms_db(audio[spans[0][0] : spans[0][1]])) < 0.5  # left alone
    assert abs(quiet - loud) < 6, (loud, quiet)  # was 40 dB apart
    assert abs(loud2 - loud) < 1


def test_gain_is_bounded_and_never_below_one() -> None:
    audio, _ = meeting()
    options = LevelOptions(max_gain_db=20)
    gain = gain_curve(audio, options)
    assert gain.min() >= 1.0
    assert 20 * np.log10(gain.max()) <= 20.0 + 1e-3
    assert gain.size == audio.size


def test_noise_and_silence_are_not_raised() -> None:
    for quiet in (noise(20, -60.0), noise(20, -90.0), np.zeros(20 * RATE, dtype=np.float32)):
        gain = gain_curve(quiet)
        assert float(20 * np.log10(gain.max())) < 1.0


def test_pauses_inside_a_turn_keep_their_signal_to_noise_ratio() -> None:
    audio, spans = meeting()
    out = levelled(audio)
    a, b = spans[1]
    gain = out[a:b] / np.where(audio[a:b] == 0, 1, audio[a:b])
    # The gain over the quiet turn is one smooth value, dips between syllables included.
    assert float(np.ptp(20 * np.log10(np.abs(gain[RATE // 2 : -RATE // 2]) + 1e-12))) < 1.0


def test_above_floor_finds_the_turns_and_nothing_in_noise() -> None:
    audio, spans = meeting()
    found = above_floor(audio)
    assert len(found) == 3
    for (a, b), (fa, fb) in zip(spans, found, strict=True):
        assert abs(fa - a) < 0.2 * RATE and abs(fb - b) < 0.2 * RATE
    assert above_floor(noise(30, -50.0)) == []
    assert above_floor(np.zeros(30 * RATE, dtype=np.float32)) == []
    assert above_floor(np.zeros(0, dtype=np.float32)) == []
