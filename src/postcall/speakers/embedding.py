"""What the diarizer (and anything that keeps voiceprints) needs from a speaker model.

A ``SpeakerEmbedder`` turns 16 kHz mono speech into L2-normalised vectors whose dot
product is the cosine similarity of two voices. Two implement it: the bundled
Resemblyzer encoder (``encoder.VoiceEncoder``) and a local ONNX model chosen by the
operator (``onnx_embedder.OnnxEmbedder``). ``load_embedder`` picks one from an
``EmbedderConfig``; it imports onnxruntime only when an ONNX model is configured.

Vectors are only comparable between embeddings of the same ``model_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]

SAMPLE_RATE = 16000
FRAME_HOP = 160  # the diarizer's 10 ms frames, in samples
WINDOW_FRAMES = 160  # its sliding windows: 1.6 s
WINDOW_SAMPLES = WINDOW_FRAMES * FRAME_HOP
LEVEL_DBFS = -30.0  # speech is raised to this RMS level (never lowered) before embedding

Features = Literal["fbank80", "fbank64", "fbank40", "wave"]
FEATURES: tuple[str, ...] = ("fbank80", "fbank64", "fbank40", "wave")


class Signal(Protocol):
    """Audio read by slices: an array, or the diarizer's speech with the pauses cut out.
    A slice past either end comes back shorter (``read`` pads it)."""

    @property
    def size(self) -> int: ...

    def __getitem__(self, window: slice, /) -> Array: ...


class SpeakerEmbedder(Protocol):
    """A speaker-embedding model: 16 kHz mono float32 audio in, unit vectors out."""

    @property
    def model_id(self) -> str:
        """Which model made the vectors (e.g. ``resemblyzer-0.1.4``, ``onnx:<sha256[:12]>``)."""
        ...

    @property
    def dim(self) -> int:
        """Length of the vectors."""
        ...

    def embed_utterance(self, wav: Array) -> Array:
        """One unit vector (``dim``,) for a whole utterance of one speaker."""
        ...

    def embed_windows(
        self,
        signal: Signal,
        starts: npt.NDArray[np.int64],
        *,
        highpass_hz: float = 0.0,
        gain: float = 1.0,
    ) -> Array:
        """Unit vectors (len(starts), ``dim``) of the diarizer's sliding windows.

        Window ``i`` is the ``WINDOW_FRAMES`` 10 ms frames from frame ``starts[i]`` of
        ``signal`` (``starts`` ascending). Before embedding, the audio is scaled by
        ``gain`` (the diarizer's level normalisation) and, when ``highpass_hz`` > 0,
        seen through ``encoder.highpass_response`` (rumble removed). Implementations
        work through the windows in batches, reading each stretch of audio once.
        """
        ...


@dataclass(frozen=True)
class EmbedderConfig:
    """Which speaker model the diarizer uses: ``model_path`` None = the bundled one."""

    model_path: Path | None = None
    features: Features = "fbank80"
    window: Literal["hamming", "povey"] = "hamming"  # fbank analysis window
    cmn: bool = True  # fbank: subtract each window's (utterance's) mean
    output: str | None = None  # the model's output to read, when it has several
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int = 0  # onnxruntime intra-op threads; 0 = up to 4 (never more than the cores)
    batch_size: int = 32  # windows per model call


def load_embedder(config: EmbedderConfig | None = None) -> SpeakerEmbedder:
    """The configured speaker model, loaded and checked.

    Raises ``errors.ModelUnavailable`` with the reason when it cannot be used.
    """
    if config is None or config.model_path is None:
        from postcall.speakers.encoder import VoiceEncoder

        return VoiceEncoder.load()
    from postcall.speakers.onnx_embedder import OnnxEmbedder

    return OnnxEmbedder.load(config)


def read(signal: Signal, lo: int, hi: int) -> Array:
    """Samples ``lo .. hi - 1`` of ``signal``, zeros where that runs past its ends."""
    piece = signal[max(0, lo) : max(0, min(signal.size, hi))]
    left = max(0, -lo)
    right = (hi - lo) - left - piece.size
    if left == 0 and right == 0:
        return piece
    return np.pad(piece, (left, max(0, right)))


def unit_rows(x: npt.NDArray[np.floating[Any]]) -> Array:
    """Each row scaled to length 1 (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    out: Array = (x / np.maximum(norm, np.float32(1e-12))).astype(np.float32)
    return out
