"""Resemblyzer's speaker encoder in numpy: its weights read without torch, its mel
front end and its 3-layer LSTM, matching the original to float precision.

The weights come from the ``resemblyzer`` package (``pip install --no-deps
resemblyzer==0.1.4``): its declared dependencies (torch, librosa) are not needed.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import logging
import math
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from postcall import errors

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float32]

SAMPLE_RATE = 16000
_WEIGHTS_HINT = (
    "offline diarization needs the resemblyzer weights: pip install --no-deps resemblyzer==0.1.4"
)

# Resemblyzer's hyper-parameters (resemblyzer/hparams.py): 25 ms windows every 10 ms,
# 40 mel bands, partial utterances of 160 frames, three LSTM layers of 256 units.
_N_FFT = 400
HOP = 160
_N_MELS = 40
PARTIAL_FRAMES = 160
_NORM_TARGET_DBFS = -30.0  # resemblyzer's normalize_volume target (increase only)


# --------------------------------------------------------------------------- weights


class _Storage:
    """A tensor storage named by the checkpoint; its bytes are filled in afterwards."""

    def __init__(self, dtype: np.dtype[Any], key: str, numel: int) -> None:
        self.dtype = dtype
        self.key = key
        self.numel = numel
        self.data: npt.NDArray[Any] | None = None


_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _Tensor:
    """A view into a storage, materialised once every storage has been read."""

    def __init__(
        self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)

    def array(self) -> npt.NDArray[Any]:
        data = self.storage.data
        if data is None:
            raise errors.ModelUnavailable(f"the checkpoint lacks storage {self.storage.key}")
        needed = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if self.size and min(self.size) > 0 and needed >= data.size:
            raise errors.ModelUnavailable("the checkpoint has a tensor outside its storage")
        if not self.size:
            return data[self.offset : self.offset + 1].reshape(()).copy()
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * data.itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view)  # a compact copy, independent of the shared storage


def _rebuild_tensor(
    storage: _Storage,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    *_: object,
) -> _Tensor:
    return _Tensor(storage, offset, size, stride)


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = _STORAGE_DTYPES[name]


class _CheckpointUnpickler(pickle.Unpickler):
    """Unpickles a torch checkpoint into plain containers, refusing any other code."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a checkpoint")

    def persistent_load(self, pid: Any) -> _Storage:
        # ("storage", storage type, key, location, numel[, view metadata])
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        kind, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(kind, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {kind!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(kind.dtype, key, numel)
        return self.storages[key]


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _Tensor):
        return obj.array()
    if isinstance(obj, dict):
        return type(obj)((k, _materialise(v)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def load_torch_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Read a torch checkpoint (legacy or zip format) into dicts of numpy arrays.

    Only tensors, ordered dicts and plain Python values are accepted; any other
    class in the pickle is refused, so a checkpoint cannot run code.
    """
    if zipfile.is_zipfile(path):
        return _load_zip_checkpoint(path)
    with open(path, "rb") as file:
        for _ in range(3):  # magic number, protocol version, system info
            _CheckpointUnpickler(file).load()
        unpickler = _CheckpointUnpickler(file)
        result = unpickler.load()
        keys = _CheckpointUnpickler(file).load()
        # Then each storage's bytes, in that order, after its element count.
        for key in keys:
            storage = unpickler.storages.get(str(key))
            if storage is None:
                raise errors.ModelUnavailable(f"the checkpoint lists unknown storage {key}")
            (numel,) = struct.unpack("<q", file.read(8))
            nbytes = numel * storage.dtype.itemsize
            raw = file.read(nbytes)
            if len(raw) != nbytes:
                raise errors.ModelUnavailable("the checkpoint is truncated")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return _materialise(result)


def _load_zip_checkpoint(path: str | os.PathLike[str]) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise errors.ModelUnavailable("the checkpoint archive has no data.pkl")
        prefix = pkl[: -len("data.pkl")]
        unpickler = _CheckpointUnpickler(io.BytesIO(archive.read(pkl)))
        result = unpickler.load()
        for key, storage in unpickler.storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return _materialise(result)


# ----------------------------------------------------------------------- front end


@functools.cache
def _mel_filterbank() -> Array:
    """librosa.filters.mel(sr=16000, n_fft=400, n_mels=40): Slaney scale and area norm."""

    def hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        linear = hz / (200.0 / 3)
        log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(hz >= 1000.0, log_part, linear)

    def mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        linear = mel * (200.0 / 3)
        log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
        return np.where(mel >= 15.0, log_part, linear)

    fft_freqs = np.fft.rfftfreq(_N_FFT, 1.0 / SAMPLE_RATE)
    edges = hz_to_mel(np.array([0.0, SAMPLE_RATE / 2]))
    mel_f = mel_to_hz(np.linspace(edges[0], edges[1], _N_MELS + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.astype(np.float32)


@functools.cache
def _hann() -> Array:
    n = np.arange(_N_FFT)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / _N_FFT)).astype(np.float32)  # periodic


def mel_spectrogram(wav: Array) -> Array:
    """Resemblyzer's features: (frames, 40) mel power, ``1 + len(wav) // 160`` frames.

    The same as ``librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400,
    hop_length=160, n_mels=40)`` (centred frames, zero padding, power 2), transposed.
    Not logarithmic: the encoder was trained on linear mel power.
    """
    wav = np.asarray(wav, dtype=np.float32)
    return _mel_frames(wav, 0, 1 + wav.size // HOP)


def _mel_frames(signal: Array, first: int, count: int) -> Array:
    """Frames ``first .. first + count - 1`` of ``mel_spectrogram(signal)``."""
    lo, hi = frame_span(first, count)
    piece = signal[max(0, lo) : max(0, min(signal.size, hi))]
    return mel_of(np.pad(piece, (max(0, -lo), 0)), count)


def frame_span(first: int, count: int) -> tuple[int, int]:
    """The samples frames ``first .. first + count - 1`` read (centred 400-sample windows)."""
    return first * HOP - _N_FFT // 2, (first + count - 1) * HOP + _N_FFT // 2


def mel_of(piece: Array, count: int, highpass_hz: float = 0.0) -> Array:
    """Mel power of ``count`` frames, frame j being ``piece[160 j : 160 j + 400]``.

    ``highpass_hz`` weights the power spectrum by a high-pass response first (see
    ``highpass_response``): the same as filtering the audio, without a copy of it.
    """
    piece = np.pad(piece, (0, max(0, (count - 1) * HOP + _N_FFT - piece.size)))
    frames = np.lib.stride_tricks.as_strided(
        piece,
        shape=(count, _N_FFT),
        strides=(piece.strides[0] * HOP, piece.strides[0]),
        writeable=False,
    )
    spectrum = np.fft.rfft(frames * _hann(), axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    return power @ _filterbank(highpass_hz).T


@functools.cache
def _filterbank(highpass_hz: float) -> Array:
    bank = _mel_filterbank()
    if highpass_hz <= 0:
        return bank
    response = highpass_response(np.fft.rfftfreq(_N_FFT, 1.0 / SAMPLE_RATE), highpass_hz)
    return (bank * (response**2)[None, :]).astype(np.float32)


def highpass_response(
    freqs: npt.NDArray[np.floating[Any]], cutoff_hz: float
) -> npt.NDArray[np.float64]:
    """Magnitude of a 4th-order Butterworth high-pass at ``freqs`` (zero phase).

    Far-field meeting audio carries most of its energy below 200 Hz (ventilation,
    handling, table knocks) while speech is identified by its formants above; the
    rumble otherwise sets the level normalisation and fills the lowest mel bands.
    """
    ratio = np.asarray(freqs, dtype=np.float64) / cutoff_hz
    out: npt.NDArray[np.float64] = ratio**4 / np.sqrt(1.0 + ratio**8)
    return out


def highpass(audio: Array, cutoff_hz: float, *, margin: int = 4096) -> Array:
    """``audio`` through ``highpass_response`` (FFT filtering in blocks of about 1 M samples).

    Each block is filtered with ``margin`` samples of its neighbours on either side,
    so block edges do not show; memory is the output plus one block.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if cutoff_hz <= 0 or audio.size == 0:
        return audio.copy()
    out = np.empty_like(audio)
    block = 2**20
    for start in range(0, audio.size, block):
        lo, hi = max(0, start - margin), min(audio.size, start + block + margin)
        piece = audio[lo:hi].astype(np.float64)
        n = 1 << (piece.size - 1).bit_length()  # a power of two: fast FFT, less wrap
        spectrum = np.fft.rfft(piece, n)
        spectrum *= highpass_response(np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE), cutoff_hz)
        filtered = np.fft.irfft(spectrum, n)[: piece.size]
        stop = min(audio.size, start + block)
        out[start:stop] = filtered[start - lo : stop - lo]
    return out


def volume_gain(wav: Array, target_dbfs: float = _NORM_TARGET_DBFS) -> float:
    """The factor by which resemblyzer's ``normalize_volume`` would scale ``wav``.

    Raises the RMS level to ``target_dbfs`` and never lowers it (``increase_only``).
    Sums in blocks so that no float64 copy of a long recording is made.
    """
    blocks = np.array_split(wav, max(1, wav.size // 2**20))
    return volume_gain_of(sum(float(np.dot(b, b)) for b in blocks), wav.size, target_dbfs)


def volume_gain_of(sum_of_squares: float, n: int, target_dbfs: float = _NORM_TARGET_DBFS) -> float:
    if n == 0 or sum_of_squares <= 0:
        return 1.0
    change = target_dbfs - 10 * math.log10(sum_of_squares / n)
    return 10 ** (change / 20) if change > 0 else 1.0


def normalize_volume(wav: Array, target_dbfs: float = _NORM_TARGET_DBFS) -> Array:
    """Raise the level of ``wav`` to ``target_dbfs`` RMS (never lower it), as resemblyzer."""
    gain = volume_gain(wav, target_dbfs)
    return wav if gain == 1.0 else (wav * np.float32(gain)).astype(np.float32)


# ------------------------------------------------------------------------- encoder


class VoiceEncoder:
    """Resemblyzer's speaker encoder in numpy: (batch, 160, 40) mels → (batch, 256).

    Output vectors are non-negative and L2-normalised, so their dot product is the
    cosine similarity of two voices. ``model_id`` names the encoder and its weights:
    embeddings (voiceprints) are only compared with those of the same model.
    """

    model_id = "resemblyzer-0.1.4"

    def __init__(self, state: dict[str, npt.NDArray[Any]]) -> None:
        try:
            self._layers = [
                self._fused(
                    state[f"lstm.weight_ih_l{k}"],
                    state[f"lstm.weight_hh_l{k}"],
                    state[f"lstm.bias_ih_l{k}"] + state[f"lstm.bias_hh_l{k}"],
                )
                for k in range(3)
            ]
            self._linear_w = np.ascontiguousarray(state["linear.weight"].T, dtype=np.float32)
            self._linear_b = np.asarray(state["linear.bias"], dtype=np.float32)
            self.size = int(self._linear_b.size)  # embedding length: 256
        except KeyError as exc:
            raise errors.ModelUnavailable(f"the voice encoder weights lack {exc}") from exc

    @staticmethod
    def _fused(
        w_ih: npt.NDArray[Any], w_hh: npt.NDArray[Any], bias: npt.NDArray[Any]
    ) -> tuple[Array, Array]:
        """One (inputs + units, 4 units) matrix per layer, gates pre-scaled for tanh.

        [x, h] @ W computes the input and recurrent projections in one product. The
        sigmoid gates (PyTorch order: input, forget, cell candidate, output) are
        scaled by 1/2 here because sigmoid(z) = (1 + tanh(z / 2)) / 2: then a single
        tanh over all four gates does the work of three sigmoids and one tanh.
        """
        units = w_hh.shape[1]
        scale = np.full(4 * units, 0.5, dtype=np.float32)
        scale[2 * units : 3 * units] = 1.0
        weights = np.concatenate([w_ih.T, w_hh.T], axis=0).astype(np.float32) * scale
        return np.ascontiguousarray(weights), (bias.astype(np.float32) * scale)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> VoiceEncoder:
        """Load the weights from ``path``, by default the installed resemblyzer package's."""
        if path is None:
            return _default_encoder()
        try:
            checkpoint = load_torch_checkpoint(path)
        except FileNotFoundError as exc:
            raise errors.ModelUnavailable(_WEIGHTS_HINT) from exc
        except (
            OSError,
            pickle.UnpicklingError,
            zipfile.BadZipFile,
            EOFError,
            ValueError,
            KeyError,
            IndexError,
            TypeError,
            struct.error,
        ) as exc:
            raise errors.ModelUnavailable(f"cannot read the voice encoder weights: {exc}") from exc
        state = checkpoint.get("model_state", checkpoint) if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise errors.ModelUnavailable("the voice encoder checkpoint has no model state")
        return cls(state)

    def embed(self, mels: Array, *, batch_size: int = 256) -> Array:
        """Embeddings of a batch of partial utterances, shape (batch, frames, 40).

        Large batches matter for speed: each LSTM step is one matrix product per
        layer, and BLAS only runs efficiently (and in parallel) on big ones.
        """
        mels = np.asarray(mels, dtype=np.float32)
        if mels.ndim != 3 or mels.shape[2] != _N_MELS:
            raise ValueError(f"mels must have shape (batch, frames, 40), got {mels.shape}")
        out = np.empty((mels.shape[0], self.size), dtype=np.float32)
        for start in range(0, mels.shape[0], batch_size):
            out[start : start + batch_size] = self._forward(mels[start : start + batch_size])
        return out

    def embed_utterance(self, wav: Array) -> Array:
        """One voice vector for a whole utterance (16 kHz mono float32), shape (256,).

        Resemblyzer's ``embed_utterance`` on ``normalize_volume(wav)``: partials of
        1.6 s at 1.3 per second (the last kept when 75 % covered, zero-padded), their
        embeddings averaged and L2-normalised. Its silence trimming is not applied.
        """
        wav = normalize_volume(np.asarray(wav, dtype=np.float32))
        n_frames = -(-(wav.size + 1) // HOP)
        step = round(SAMPLE_RATE / 1.3 / HOP)
        starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
        coverage = (wav.size - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
        if coverage < 0.75 and len(starts) > 1:
            starts.pop()
        stop = (starts[-1] + PARTIAL_FRAMES) * HOP
        mel = mel_spectrogram(np.pad(wav, (0, max(0, stop - wav.size))))
        partials = self.embed(np.stack([mel[s : s + PARTIAL_FRAMES] for s in starts]))
        mean = partials.mean(axis=0)
        unit: Array = (mean / np.linalg.norm(mean)).astype(np.float32)
        return unit

    def _forward(self, x: Array) -> Array:
        batch = x.shape[0]
        # All three layers advance together, one time step at a time: memory stays
        # O(batch × units) instead of holding every layer's outputs for every step.
        states = []
        for weights, _ in self._layers:
            units = weights.shape[1] // 4
            states.append(
                (np.zeros((batch, units), np.float32), np.zeros((batch, units), np.float32))
            )
        for t in range(x.shape[1]):
            inputs = x[:, t]
            for k, (weights, bias) in enumerate(self._layers):
                hidden, cell = states[k]
                units = hidden.shape[1]
                gates = np.tanh(np.concatenate([inputs, hidden], axis=1) @ weights + bias)
                i, f, g, o = (gates[:, n * units : (n + 1) * units] for n in range(4))
                cell = (0.5 + 0.5 * f) * cell + (0.5 + 0.5 * i) * g
                hidden = (0.5 + 0.5 * o) * np.tanh(cell)
                states[k] = (hidden, cell)
                inputs = hidden
        raw = np.maximum(states[-1][0] @ self._linear_w + self._linear_b, 0.0)
        norm = np.linalg.norm(raw, axis=1, keepdims=True)
        unit: Array = (raw / np.maximum(norm, 1e-12)).astype(np.float32)
        return unit


@functools.cache
def _default_encoder() -> VoiceEncoder:
    return VoiceEncoder.load(_default_weights())


def _default_weights() -> str:
    """Where the installed resemblyzer package keeps ``pretrained.pt``.

    Found through the import system's spec, without importing the package: its
    ``__init__`` imports torch, librosa and webrtcvad, which we do not install.
    """
    spec = importlib.util.find_spec("resemblyzer")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "pretrained.pt")
        if os.path.isfile(path):
            return path
    raise errors.ModelUnavailable(_WEIGHTS_HINT)
