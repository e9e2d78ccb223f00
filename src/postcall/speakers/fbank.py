"""Kaldi-compatible log mel filterbank features in numpy (``compute-fbank-feats``).

What WeSpeaker (and most speaker models trained with Kaldi-style recipes) feed their
networks: 25 ms frames every 10 ms with ``snip_edges`` (a frame only where all 400
samples exist), DC offset removed per frame, pre-emphasis 0.97, a Hamming (or
Povey) window, a 512-point power spectrum, triangular filters evenly spaced on the
mel scale ``1127 ln(1 + f / 700)`` between 20 Hz and the Nyquist frequency, and the
natural log of each filter's energy (floored at float32's epsilon). No dither.

``cmn`` subtracts the mean over frames (per-utterance cepstral mean normalisation).
Samples are expected on Kaldi's scale, the 16-bit integer range: ``fbank`` takes
float audio in [-1, 1] and scales it by 32768 as WeSpeaker's loaders do.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import numpy.typing as npt

from postcall.speakers.embedding import SAMPLE_RATE, Array
from postcall.speakers.encoder import highpass_response

FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = 160  # 10 ms
N_FFT = 512  # the frame padded to a power of two
PREEMPHASIS = 0.97
LOW_HZ = 20.0
EPSILON = float(np.finfo(np.float32).eps)
INT16_SCALE = 32768.0

Window = Literal["hamming", "povey"]
F64 = npt.NDArray[np.float64]


def frame_count(samples: int) -> int:
    """Frames of ``samples`` samples with snip_edges: 0 below 25 ms, then one per 10 ms."""
    return 0 if samples < FRAME_LENGTH else 1 + (samples - FRAME_LENGTH) // FRAME_SHIFT


def samples_for(frames: int) -> int:
    """The fewest samples that give ``frames`` frames."""
    return FRAME_LENGTH + (frames - 1) * FRAME_SHIFT


def fbank(
    wav: Array,
    bins: int = 80,
    *,
    window: Window = "hamming",
    highpass_hz: float = 0.0,
    scale: float = INT16_SCALE,
) -> Array:
    """Log mel filterbank energies (frames, bins) of 16 kHz ``wav``.

    ``highpass_hz`` weights the power spectrum by ``highpass_response`` squared (the
    same as filtering the audio first). ``scale`` multiplies the samples first.
    """
    wav = np.asarray(wav, dtype=np.float32)
    n = frame_count(wav.size)
    if n == 0:
        return np.zeros((0, bins), dtype=np.float32)
    frames = np.lib.stride_tricks.as_strided(
        wav,
        shape=(n, FRAME_LENGTH),
        strides=(wav.strides[0] * FRAME_SHIFT, wav.strides[0]),
        writeable=False,
    ).astype(np.float64)
    if scale != 1.0:
        frames *= scale
    frames -= frames.mean(axis=1, keepdims=True)
    emphasised = np.empty_like(frames)
    emphasised[:, 1:] = frames[:, 1:] - PREEMPHASIS * frames[:, :-1]
    emphasised[:, 0] = frames[:, 0] * (1.0 - PREEMPHASIS)
    spectrum = np.fft.rfft(emphasised * _window(window), n=N_FFT, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    energies = power @ _filters(bins, highpass_hz).T
    out: Array = np.log(np.maximum(energies, EPSILON)).astype(np.float32)
    return out


def cmn(features: Array) -> Array:
    """``features`` less their mean over frames (axis -2), per utterance or window."""
    out: Array = (features - features.mean(axis=-2, keepdims=True)).astype(np.float32)
    return out


@functools.cache
def _window(kind: Window) -> F64:
    n = np.arange(FRAME_LENGTH)
    cosine = np.cos(2 * np.pi * n / (FRAME_LENGTH - 1))  # symmetric, as Kaldi's
    if kind == "hamming":
        return 0.54 - 0.46 * cosine
    if kind == "povey":
        return (0.5 - 0.5 * cosine) ** 0.85
    raise ValueError(f"unknown window {kind!r}: expected hamming or povey")


def mel(hz: npt.ArrayLike) -> F64:
    """Kaldi's mel scale."""
    out: F64 = 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)
    return out


@functools.cache
def _filters(bins: int, highpass_hz: float) -> F64:
    """(bins, N_FFT // 2 + 1) triangular filters on the mel scale, Kaldi's MelBanks."""
    if bins < 1:
        raise ValueError("need at least one mel bin")
    low, high = float(mel(LOW_HZ)), float(mel(SAMPLE_RATE / 2))
    delta = (high - low) / (bins + 1)
    left = low + np.arange(bins)[:, None] * delta
    centre, right = left + delta, left + 2 * delta
    freqs = np.arange(N_FFT // 2 + 1) * (SAMPLE_RATE / N_FFT)
    m = mel(freqs)[None, :]
    weights = np.maximum(
        0.0, np.minimum((m - left) / (centre - left), (right - m) / (right - centre))
    )
    weights[:, -1] = 0.0  # Kaldi's filters stop below the Nyquist bin
    if highpass_hz > 0:
        weights = weights * highpass_response(freqs, highpass_hz)[None, :] ** 2
    out: F64 = weights
    return out
