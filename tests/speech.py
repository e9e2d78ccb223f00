"""Speech made and degraded on this machine, for tests and benchmarks.

espeak-ng speaks a sentence in one of its voices (``en-us+m3``, ``en+f2``, the whispered
``en+whisper``, the creaky ``en+croak``, …) and sox puts a clip through what meetings do
to voices: a telephone line (300–3400 Hz at 8 kHz), a room (reverberation), a level
(peak in dBFS). All of it is 16 kHz mono float32, as postcall decodes it. Nothing here
is downloaded: both programs are Debian packages (``make test`` installs them).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tests import media

RATE = 16000
Audio = npt.NDArray[np.float32]


def available() -> str | None:
    """None when espeak-ng and sox are both here, else what is missing."""
    missing = [p for p in ("espeak-ng", "sox") if shutil.which(p) is None]
    return " and ".join(missing) or None


def say(text: str, voice: str = "en-us", *, speed: int = 165, pitch: int = 50) -> Audio:
    """``text`` spoken by espeak-ng's ``voice`` (words per minute ``speed``), trimmed."""
    with tempfile.TemporaryDirectory(prefix="postcall-say-") as tmp:
        raw = Path(tmp) / "say.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), text],
            check=True,
            capture_output=True,
        )
        return trim(media.load_mono16k(raw))


def degrade(
    samples: Audio,
    *,
    peak_dbfs: float | None = None,
    telephone: bool = False,
    room: int = 0,
) -> Audio:
    """``samples`` through sox: a telephone line, a room of reverberance ``room`` (0–100,
    0: none) and a peak level of ``peak_dbfs``; the length stays the same."""
    effects: list[str] = []
    if telephone:
        effects += ["sinc", "300-3400", "rate", "8000", "rate", str(RATE)]
    if room:
        effects += ["reverb", str(room), "50", "80", "100", "0", "0"]
    if peak_dbfs is not None:
        effects += ["gain", "-n", f"{peak_dbfs:.2f}"]
    if not effects:
        return samples
    with tempfile.TemporaryDirectory(prefix="postcall-sox-") as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        _write_pcm16(src, samples)
        subprocess.run(
            ["sox", "-q", str(src), "-b", "32", "-e", "floating-point", str(dst), *effects],
            check=True,
            capture_output=True,
        )
        return media.load_mono16k(dst)


def at_level(samples: Audio, peak_dbfs: float) -> Audio:
    """``samples`` scaled so that their peak is ``peak_dbfs``."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak <= 0:
        return samples
    return (samples * (10 ** (peak_dbfs / 20) / peak)).astype(np.float32)


def noise(seconds: float, rms_dbfs: float, *, seed: int = 0) -> Audio:
    """Pink-ish room noise (white noise through a one-pole low-pass) at ``rms_dbfs``."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(round(seconds * RATE))
    # A one-pole low-pass, y[n] = 0.95 y[n-1] + x[n], by its impulse response (FFT).
    taps = 0.95 ** np.arange(200)
    shaped = np.convolve(white, taps, mode="same")
    shaped /= np.sqrt(np.mean(shaped**2)) or 1.0
    return (shaped * 10 ** (rms_dbfs / 20)).astype(np.float32)


def trim(samples: Audio, *, below_peak_db: float = 40.0, frame_s: float = 0.01) -> Audio:
    """``samples`` without the leading and trailing stretches quieter than the peak less
    ``below_peak_db`` (the clip's own silence), so that its span is where it speaks."""
    n = max(1, round(frame_s * RATE))
    usable = samples.size - samples.size % n
    if usable < n:
        return samples
    rms = np.sqrt(np.mean(samples[:usable].astype(np.float64).reshape(-1, n) ** 2, axis=1))
    floor = float(np.max(rms)) * 10 ** (-below_peak_db / 20)
    loud = np.flatnonzero(rms > floor)
    if not loud.size:
        return samples
    return samples[loud[0] * n : (loud[-1] + 1) * n].copy()


def _write_pcm16(path: Path, samples: Audio) -> None:
    """A 16-bit WAV of ``samples`` (clipped to full scale)."""
    import wave

    pcm = np.clip(samples, -1.0, 1.0)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((pcm * 32767).astype("<i2").tobytes())
