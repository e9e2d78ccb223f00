"""Offline speaker diarization of a mixed (mono) recording, in numpy only.

Who spoke when, for recordings that do not come with one stream per participant:
speech detection → 1.6 s sliding windows → speaker embeddings → clustering →
smoothing → turns. The embeddings come from Resemblyzer's voice encoder
(Apache-2.0; a 3-layer LSTM over 40 mel bands, 256-d L2-normalised output), whose
weights ship inside the ``resemblyzer`` wheel from the package registry. We read
those weights without torch (a restricted unpickler maps the checkpoint's tensor
storages to numpy arrays) and run the same mel front end and LSTM in numpy, so the
``diarize`` extra needs neither torch nor librosa: ``pip install --no-deps
resemblyzer==0.1.4`` next to what postcall already installs.

Also here: ``der`` (diarization error rate with optimal speaker mapping and a
forgiveness collar) and ``read_rttm``, for tests and benchmarks.
"""

from __future__ import annotations

import functools
import heapq
import importlib.util
import io
import itertools
import logging
import math
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal

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
_HOP = 160
_N_MELS = 40
_PARTIAL_FRAMES = 160
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
    return _mel_frames(wav, 0, 1 + wav.size // _HOP)


def _mel_frames(signal: Array, first: int, count: int) -> Array:
    """Frames ``first .. first + count - 1`` of ``mel_spectrogram(signal)``."""
    lo, hi = _frame_span(first, count)
    piece = signal[max(0, lo) : max(0, min(signal.size, hi))]
    return _mel_of(np.pad(piece, (max(0, -lo), 0)), count)


def _frame_span(first: int, count: int) -> tuple[int, int]:
    """The samples frames ``first .. first + count - 1`` read (centred 400-sample windows)."""
    return first * _HOP - _N_FFT // 2, (first + count - 1) * _HOP + _N_FFT // 2


def _mel_of(piece: Array, count: int) -> Array:
    """Mel power of ``count`` frames, frame j being ``piece[160 j : 160 j + 400]``."""
    piece = np.pad(piece, (0, max(0, (count - 1) * _HOP + _N_FFT - piece.size)))
    frames = np.lib.stride_tricks.as_strided(
        piece,
        shape=(count, _N_FFT),
        strides=(piece.strides[0] * _HOP, piece.strides[0]),
        writeable=False,
    )
    spectrum = np.fft.rfft(frames * _hann(), axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    return power @ _mel_filterbank().T


def volume_gain(wav: Array, target_dbfs: float = _NORM_TARGET_DBFS) -> float:
    """The factor by which resemblyzer's ``normalize_volume`` would scale ``wav``.

    Raises the RMS level to ``target_dbfs`` and never lowers it (``increase_only``).
    Sums in blocks so that no float64 copy of a long recording is made.
    """
    blocks = np.array_split(wav, max(1, wav.size // 2**20))
    return _gain(sum(float(np.dot(b, b)) for b in blocks), wav.size, target_dbfs)


def _gain(sum_of_squares: float, n: int, target_dbfs: float = _NORM_TARGET_DBFS) -> float:
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
    cosine similarity of two voices.
    """

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
        n_frames = -(-(wav.size + 1) // _HOP)
        step = round(SAMPLE_RATE / 1.3 / _HOP)
        starts = list(range(0, max(1, n_frames - _PARTIAL_FRAMES + step + 1), step))
        coverage = (wav.size - starts[-1] * _HOP) / (_PARTIAL_FRAMES * _HOP)
        if coverage < 0.75 and len(starts) > 1:
            starts.pop()
        stop = (starts[-1] + _PARTIAL_FRAMES) * _HOP
        mel = mel_spectrogram(np.pad(wav, (0, max(0, stop - wav.size))))
        partials = self.embed(np.stack([mel[s : s + _PARTIAL_FRAMES] for s in starts]))
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


# ------------------------------------------------------------------ speech detection

_VAD_WINDOW = 512  # Silero's window at 16 kHz (32 ms)
# ~64 s of audio per model call: memory stays bounded (~50 MB; whole 5-minute blocks
# take ~150 MB), and the state reset at block edges does not move regions measurably.
_VAD_BLOCK = 2000 * _VAD_WINDOW


def speech_regions(
    audio: Array,
    *,
    threshold: float = 0.5,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.3,
    pad_s: float = 0.1,
) -> list[tuple[float, float]]:
    """Speech as (start, end) seconds, from the Silero VAD that faster-whisper bundles.

    Hysteresis: speech starts where the probability reaches ``threshold`` and ends
    where it stays below ``threshold - 0.15`` for ``min_silence_s``. Runs the model on
    blocks of about a minute, so its memory does not grow with the audio's length.
    """
    from faster_whisper.vad import get_vad_model  # heavy (onnxruntime): load on use

    audio = np.asarray(audio, dtype=np.float32)
    model = get_vad_model()
    probs: list[npt.NDArray[np.float32]] = []
    for start in range(0, audio.size, _VAD_BLOCK):
        block = audio[start : start + _VAD_BLOCK]
        block = np.pad(block, (0, -block.size % _VAD_WINDOW))
        probs.append(np.asarray(model(block), dtype=np.float32).reshape(-1))
    prob = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    return _hysteresis(
        prob,
        _VAD_WINDOW / SAMPLE_RATE,
        audio.size / SAMPLE_RATE,
        high=threshold,
        low=max(threshold - 0.15, 0.01),
        min_speech_s=min_speech_s,
        min_silence_s=min_silence_s,
        pad_s=pad_s,
    )


def _hysteresis(
    score: npt.NDArray[np.float32],
    step_s: float,
    duration: float,
    *,
    high: float,
    low: float,
    min_speech_s: float,
    min_silence_s: float,
    pad_s: float,
) -> list[tuple[float, float]]:
    """Regions where ``score`` rises above ``high``, extended while it stays above ``low``."""
    regions: list[tuple[float, float]] = []
    active = False
    begin = 0
    for i, value in enumerate(score.tolist()):
        if not active and value >= high:
            active, begin = True, i
            # Extend backwards over the rising edge (the "low" hysteresis on the left).
            while begin > 0 and score[begin - 1] >= low:
                begin -= 1
        elif active and value < low:
            active = False
            regions.append((begin * step_s, i * step_s))
    if active:
        regions.append((begin * step_s, score.size * step_s))
    merged: list[tuple[float, float]] = []
    for start, end in regions:
        if merged and start - merged[-1][1] < min_silence_s:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return [
        (max(0.0, start - pad_s), min(duration, end + pad_s))
        for start, end in merged
        if end - start >= min_speech_s
    ]


def energy_regions(
    audio: Array,
    *,
    margin_db: float = 12.0,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.3,
    pad_s: float = 0.1,
) -> list[tuple[float, float]]:
    """Speech as (start, end) seconds from frame energy relative to the noise floor.

    The floor is the 10th percentile of 30 ms frame levels; frames more than
    ``margin_db`` above it count as speech (with a 6 dB hysteresis).
    """
    audio = np.asarray(audio, dtype=np.float32)
    step = 480
    n = audio.size // step
    if n == 0:
        return []
    power = np.mean(np.square(audio[: n * step].reshape(n, step), dtype=np.float64), axis=1)
    level = 10 * np.log10(power + 1e-10)
    level = np.convolve(level, np.ones(5) / 5, mode="same")  # 150 ms smoothing
    floor = float(np.percentile(level, 10))
    return _hysteresis(
        level.astype(np.float32),
        step / SAMPLE_RATE,
        audio.size / SAMPLE_RATE,
        high=floor + margin_db,
        low=floor + margin_db - 6.0,
        min_speech_s=min_speech_s,
        min_silence_s=min_silence_s,
        pad_s=pad_s,
    )


# ------------------------------------------------------------------------- pipeline


@dataclass(frozen=True)
class Turn:
    """One speaker talking from ``start`` to ``end`` seconds; speakers count from 0."""

    start: float
    end: float
    speaker: int


@dataclass(frozen=True)
class DiarizeOptions:
    """Tuning of ``diarize``; the defaults are the values the benchmark was run with."""

    hop_s: float = 0.4  # between the 1.6 s windows (the encoder's partial utterances)
    threshold: float = 0.4  # average-linkage cosine distance at which clusters stay apart
    max_cluster_windows: int = 2000  # more windows: cluster a subsample, assign the rest
    min_speaker_share: float = 0.05  # smaller clusters (share of windows) are dissolved
    min_turn_s: float = 0.5  # shorter runs of one label give way to their neighbours
    merge_gap_s: float = 0.5  # same-speaker turns this close become one
    vad: Literal["silero", "energy"] = "silero"  # energy: only for clean recordings


def diarize(
    audio: Array,
    *,
    num_speakers: int | None = None,
    min_speakers: int = 1,
    max_speakers: int = 8,
    speech: Sequence[tuple[float, float]] | None = None,
    options: DiarizeOptions | None = None,
    encoder: VoiceEncoder | None = None,
) -> list[Turn]:
    """Who speaks when in ``audio`` (16 kHz mono float32), as non-overlapping turns.

    ``num_speakers`` fixes the count; otherwise it is estimated between
    ``min_speakers`` and ``max_speakers``. ``speech`` gives the speech regions in
    seconds (e.g. from the transcriber) instead of detecting them. Speakers are
    numbered in order of first appearance. Overlapping speech gets one speaker.
    Raises ``ModelUnavailable`` when the resemblyzer weights are not installed.
    """
    if num_speakers is not None and num_speakers < 1:
        raise ValueError("num_speakers must be at least 1")
    if not 1 <= min_speakers <= max_speakers:
        raise ValueError("need 1 <= min_speakers <= max_speakers")
    opts = options or DiarizeOptions()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D mono, got shape {audio.shape}")
    encoder = encoder or VoiceEncoder.load()
    if speech is None:
        speech = energy_regions(audio) if opts.vad == "energy" else speech_regions(audio)
    spans = _sample_spans(speech, audio.size)
    if not spans:
        return []
    # Embeddings are computed on the speech alone, pauses cut out (as resemblyzer trims
    # long silences): windows then hold 1.6 s of voice, not of room noise.
    voiced = _Voiced(audio, spans)
    frame_n = -(-voiced.size // _HOP)
    starts = _window_starts(frame_n, round(opts.hop_s * 100))
    embeddings = _embed_windows(encoder, voiced, starts)
    if num_speakers is not None:
        low = high = num_speakers
    else:
        low, high = min_speakers, max_speakers
    centroids = _cluster(
        embeddings, low, high, opts.threshold, opts.max_cluster_windows, opts.min_speaker_share
    )
    labels = _frame_labels(embeddings, centroids, starts, frame_n)
    labels = _smooth(labels, round(opts.min_turn_s * 100))
    turns = _turns(labels, spans, opts.merge_gap_s)
    log.debug(
        "diarized %.1f s of speech in %d windows: %d speakers, %d turns",
        voiced.size / SAMPLE_RATE,
        starts.size,
        len({t.speaker for t in turns}),
        len(turns),
    )
    return turns


def _sample_spans(regions: Sequence[tuple[float, float]], size: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for start, end in sorted(regions):
        a = max(0, round(start * SAMPLE_RATE))
        b = min(size, round(end * SAMPLE_RATE))
        if spans and a <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], b))
        elif b > a:
            spans.append((a, b))
    return spans


def _window_starts(frame_n: int, hop: int) -> npt.NDArray[np.int64]:
    """First frames of the windows: every ``hop`` frames, the last one flush with the end."""
    last = max(0, frame_n - _PARTIAL_FRAMES)
    starts = np.arange(0, last + 1, max(1, hop), dtype=np.int64)
    if starts[-1] != last:
        starts = np.append(starts, last)
    return starts


class _Voiced:
    """The speech of a recording with the pauses cut out, read piece by piece.

    Windows are placed on this "voiced" timeline; slices are copied out on demand,
    so the speech is never held twice.
    """

    def __init__(self, audio: Array, spans: list[tuple[int, int]]) -> None:
        self.audio = audio
        self.spans = spans
        lengths = np.array([b - a for a, b in spans], dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(lengths)))
        self.size = int(self.offsets[-1])

    def __getitem__(self, window: slice) -> Array:
        lo, hi = max(0, window.start or 0), min(self.size, window.stop)
        if hi <= lo:
            return np.zeros(0, dtype=np.float32)
        first = int(np.searchsorted(self.offsets, lo, side="right")) - 1
        pieces = []
        for k in range(first, len(self.spans)):
            begin = int(self.offsets[k])
            if begin >= hi:
                break
            a = self.spans[k][0] + max(lo - begin, 0)
            b = self.spans[k][0] + min(hi - begin, self.spans[k][1] - self.spans[k][0])
            pieces.append(self.audio[a:b])
        return np.concatenate(pieces)

    def gain(self) -> float:
        """``volume_gain`` of the voiced audio, without assembling it."""
        return _gain(
            sum(float(np.dot(self.audio[a:b], self.audio[a:b])) for a, b in self.spans), self.size
        )


def _embed_windows(encoder: VoiceEncoder, voiced: _Voiced, starts: npt.NDArray[np.int64]) -> Array:
    """Embeddings of the 160-frame windows at ``starts``, a group of windows at a time.

    The level is normalised as resemblyzer does for an utterance (all the speech
    raised to -30 dBFS): the encoder reads linear mel power, so level matters. Applied
    to the mel power (gain squared), which spares a copy of the audio.
    """
    power_gain = np.float32(voiced.gain() ** 2)
    out = np.empty((starts.size, encoder.size), dtype=np.float32)
    group = 256
    for g in range(0, starts.size, group):
        chunk = starts[g : g + group]
        first = int(chunk[0])
        count = int(chunk[-1]) + _PARTIAL_FRAMES - first
        lo, hi = _frame_span(first, count)
        mel = _mel_of(np.pad(voiced[max(0, lo) : hi], (max(0, -lo), 0)), count) * power_gain
        mels = np.stack([mel[s - first : s - first + _PARTIAL_FRAMES] for s in chunk])
        out[g : g + group] = encoder.embed(mels)
    return out


def _cluster(
    embeddings: Array,
    low: int,
    high: int,
    threshold: float,
    max_windows: int,
    min_share: float = 0.0,
) -> Array:
    """Speaker centroids (k, 256) by average-linkage clustering on cosine distance.

    The number of clusters is where the merge distance first reaches ``threshold``,
    clamped to [low, high]. Over ``max_windows`` windows, an evenly spaced subsample
    is clustered and the rest only assigned, which bounds memory and time to
    O(max_windows²).
    """
    n = embeddings.shape[0]
    sample = embeddings
    if n > max_windows:
        sample = embeddings[np.linspace(0, n - 1, max_windows).round().astype(np.int64)]
    merges = _average_linkage(sample)
    k = 1 + sum(1 for _, _, distance in merges if distance >= threshold)
    k = min(max(k, low), high, sample.shape[0])
    labels = _cut(merges, sample.shape[0], k)
    sizes = np.bincount(labels, minlength=k)
    # Clusters of a few windows are mostly overlapped speech, laughter or noise, not a
    # participant: their windows go to the nearest larger cluster (down to ``low``).
    order = np.argsort(-sizes, kind="stable")
    keep = [c for i, c in enumerate(order) if i < low or sizes[c] >= min_share * labels.size]
    centroids = np.stack([sample[labels == c].mean(axis=0) for c in sorted(keep)])
    # Two spherical k-means steps over all windows (also those a subsample left out):
    # each centroid moves to the mean of the windows nearest to it, which undoes early
    # merges that average linkage can not take back.
    for _ in range(2):
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        assign = np.argmax(embeddings @ centroids.T, axis=1)
        for c in range(centroids.shape[0]):
            if np.any(assign == c):
                centroids[c] = embeddings[assign == c].mean(axis=0)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    return centroids.astype(np.float32)


def _average_linkage(x: Array) -> list[tuple[int, int, float]]:
    """Average-linkage (UPGMA) merges of the rows of ``x`` by cosine distance.

    Returns n - 1 merges (kept, absorbed, distance) with non-decreasing distances.
    Keeps each row's nearest neighbour, so a merge usually costs O(n), not O(n²).
    """
    n = x.shape[0]
    if n < 2:
        return []
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    dist = 1.0 - (unit @ unit.T).astype(np.float64)
    np.fill_diagonal(dist, np.inf)
    size = np.ones(n)
    nearest = np.argmin(dist, axis=1)
    nearest_d = dist[np.arange(n), nearest]
    merges: list[tuple[int, int, float]] = []
    for _ in range(n - 1):
        i = int(np.argmin(nearest_d))
        j = int(nearest[i])
        merges.append((i, j, float(nearest_d[i])))
        row = (size[i] * dist[i] + size[j] * dist[j]) / (size[i] + size[j])
        row[i] = np.inf
        dist[i, :] = row
        dist[:, i] = row
        dist[j, :] = np.inf
        dist[:, j] = np.inf
        size[i] += size[j]
        nearest_d[j] = np.inf
        # Rows whose nearest neighbour was i or j look again; others may now prefer i.
        stale = np.flatnonzero(((nearest == i) | (nearest == j)) & np.isfinite(nearest_d))
        for r in [*stale.tolist(), i]:
            nearest[r] = int(np.argmin(dist[r]))
            nearest_d[r] = dist[r, nearest[r]]
        closer = np.flatnonzero(row < nearest_d)
        nearest[closer] = i
        nearest_d[closer] = row[closer]
    return merges


def _cut(merges: list[tuple[int, int, float]], n: int, k: int) -> npt.NDArray[np.int64]:
    """Cluster labels 0..k-1 after the first n - k merges."""
    parent = list(range(n))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for kept, absorbed, _ in merges[: n - k]:
        parent[root(absorbed)] = root(kept)
    roots = [root(a) for a in range(n)]
    ids = {r: c for c, r in enumerate(dict.fromkeys(roots))}
    return np.array([ids[r] for r in roots], dtype=np.int64)


def _frame_labels(
    embeddings: Array, centroids: Array, starts: npt.NDArray[np.int64], frame_n: int
) -> npt.NDArray[np.int64]:
    """A speaker per 10 ms frame: the centroid closest to the windows around it.

    Each window votes its cosine similarity to every centroid into the frames it
    covers, weighted by a Hann taper: a frame's label comes mostly from the windows
    centred near it, which places speaker changes more precisely than whole windows.
    """
    similarity = embeddings @ centroids.T
    taper = np.hanning(_PARTIAL_FRAMES + 2)[1:-1].astype(np.float32)
    votes = np.zeros((frame_n + _PARTIAL_FRAMES, centroids.shape[0]), dtype=np.float32)
    weight = np.zeros(frame_n + _PARTIAL_FRAMES, dtype=np.float32)
    for start, sim in zip(starts.tolist(), similarity, strict=True):
        votes[start : start + _PARTIAL_FRAMES] += taper[:, None] * sim[None, :]
        weight[start : start + _PARTIAL_FRAMES] += taper
    mean = votes[:frame_n] / np.maximum(weight[:frame_n], np.float32(1e-6))[:, None]
    labels: npt.NDArray[np.int64] = np.argmax(mean, axis=1).astype(np.int64)
    return labels


def _runs(labels: npt.NDArray[np.int64]) -> Iterator[tuple[int, int, int]]:
    """(start, end, label) of each run of equal labels."""
    if not labels.size:
        return
    edges = np.flatnonzero(np.diff(labels)) + 1
    bounds = [0, *edges.tolist(), labels.size]
    for a, b in itertools.pairwise(bounds):
        yield a, b, int(labels[a])


def _smooth(labels: npt.NDArray[np.int64], min_frames: int) -> npt.NDArray[np.int64]:
    """Give runs shorter than ``min_frames`` to their longer neighbour, shortest first.

    Runs form a linked list and short ones wait in a heap: O(r log r) for r runs.
    """
    runs = list(_runs(labels))
    if len(runs) < 2:
        return labels
    start = [r[0] for r in runs]
    end = [r[1] for r in runs]
    label = [r[2] for r in runs]
    before = list(range(-1, len(runs) - 1))
    after = [*range(1, len(runs)), -1]
    alive = [True] * len(runs)
    heap = [(end[i] - start[i], i) for i in range(len(runs)) if end[i] - start[i] < min_frames]
    heapq.heapify(heap)
    while heap:
        length, i = heapq.heappop(heap)
        if not alive[i] or end[i] - start[i] != length:
            continue  # absorbed or grown since it was queued
        p, q = before[i], after[i]
        if p < 0 and q < 0:
            break
        longer_before = q < 0 or (p >= 0 and end[p] - start[p] >= end[q] - start[q])
        if longer_before:
            end[p] = end[i]
        else:
            start[q] = start[i]
        alive[i] = False
        _unlink(i, before, after)
        kept = p if longer_before else q
        if p >= 0 and q >= 0 and label[p] == label[q]:  # the neighbours now touch: join
            end[p] = end[q]
            alive[q] = False
            _unlink(q, before, after)
            kept = p
        if end[kept] - start[kept] < min_frames:
            heapq.heappush(heap, (end[kept] - start[kept], kept))
    out = labels.copy()
    for i in range(len(runs)):
        if alive[i]:
            out[start[i] : end[i]] = label[i]
    return out


def _unlink(i: int, before: list[int], after: list[int]) -> None:
    if before[i] >= 0:
        after[before[i]] = after[i]
    if after[i] >= 0:
        before[after[i]] = before[i]


def _turns(
    labels: npt.NDArray[np.int64], spans: list[tuple[int, int]], merge_gap_s: float
) -> list[Turn]:
    """Frame labels on the voiced timeline → turns on the recording's timeline."""
    raw: list[tuple[float, float, int]] = []
    offset = 0  # where the span starts on the voiced timeline, in samples
    for a, b in spans:
        length = b - a
        first, last = offset // _HOP, (offset + length - 1) // _HOP
        for r0, r1, label in _runs(labels[first : last + 1]):
            s0 = max(offset, (first + r0) * _HOP) - offset + a
            s1 = min(offset + length, (first + r1) * _HOP) - offset + a
            raw.append((s0 / SAMPLE_RATE, s1 / SAMPLE_RATE, label))
        offset += length
    merged: list[tuple[float, float, int]] = []
    for start, end, label in raw:
        if merged and merged[-1][2] == label and start - merged[-1][1] <= merge_gap_s:
            merged[-1] = (merged[-1][0], end, label)
        else:
            merged.append((start, end, label))
    order: dict[int, int] = {}
    for _, _, label in merged:
        order.setdefault(label, len(order))
    return [Turn(round(s, 3), round(e, 3), order[label]) for s, e, label in merged]


# ------------------------------------------------------------------------ evaluation


def read_rttm(
    path: str | os.PathLike[str], file_id: str | None = None
) -> list[tuple[float, float, str]]:
    """The SPEAKER lines of an RTTM file as (start, end, speaker), in file order."""
    turns: list[tuple[float, float, str]] = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            fields = line.split()
            if len(fields) < 8 or fields[0] != "SPEAKER":
                continue
            if file_id is not None and fields[1] != file_id:
                continue
            start, duration = float(fields[3]), float(fields[4])
            turns.append((start, start + duration, fields[7]))
    return turns


def der(
    reference: Sequence[tuple[float, float, str]],
    hypothesis: Sequence[Turn],
    *,
    collar: float = 0.25,
    uem: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Diarization error rate of ``hypothesis`` against ``reference`` turns.

    DER = (missed speech + false alarm + speaker confusion) / reference speech, all
    in seconds of the scored time, with speakers counted per overlapping voice (as
    NIST md-eval). Hypothesis speakers map one-to-one onto reference speakers so as
    to maximise their common time (the Hungarian method). ``collar`` seconds on each
    side of every reference boundary are not scored (md-eval's ``-c``; pyannote's
    ``collar`` is the total, twice this). ``uem`` limits scoring to (start, end);
    by default it spans both inputs. Returns the rate and its parts, in seconds.
    """
    ref = _by_speaker((s, e, str(k)) for s, e, k in reference)
    hyp = _by_speaker((t.start, t.end, str(t.speaker)) for t in hypothesis)
    if uem is None:
        bounds = [t for spans in (*ref.values(), *hyp.values()) for span in spans for t in span]
        uem = (min(bounds, default=0.0), max(bounds, default=0.0))
    scored = [uem]
    if collar > 0:
        edges = sorted({t for spans in ref.values() for span in spans for t in span})
        scored = _subtract(scored, _union([(t - collar, t + collar) for t in edges]))
    # Elementary segments: between consecutive boundaries, who speaks does not change.
    cuts = np.unique(
        [t for spans in (*ref.values(), *hyp.values(), scored) for s in spans for t in s]
    )
    mids = (cuts[:-1] + cuts[1:]) / 2
    lengths = np.diff(cuts) * _active(scored, mids)
    on_ref = np.array([_active(v, mids) for v in ref.values()]).reshape(len(ref), mids.size)
    on_hyp = np.array([_active(v, mids) for v in hyp.values()]).reshape(len(hyp), mids.size)
    overlap = (on_hyp * lengths) @ on_ref.T.astype(np.float64)
    correct = np.zeros(mids.size)
    for h, r in _assignment(overlap) if overlap.size else []:
        correct += on_hyp[h] & on_ref[r]
    n_ref, n_hyp = on_ref.sum(axis=0), on_hyp.sum(axis=0)
    total = float(lengths @ n_ref)
    missed = float(lengths @ np.maximum(0, n_ref - n_hyp))
    false_alarm = float(lengths @ np.maximum(0, n_hyp - n_ref))
    confusion = float(lengths @ (np.minimum(n_ref, n_hyp) - correct))
    errors_s = missed + false_alarm + confusion
    rate = errors_s / total if total > 0 else (0.0 if errors_s == 0 else math.inf)
    return {
        "der": rate,
        "missed": missed,
        "false_alarm": false_alarm,
        "confusion": confusion,
        "total": total,
    }


Spans = list[tuple[float, float]]


def _by_speaker(turns: Iterator[tuple[float, float, str]] | Any) -> dict[str, Spans]:
    grouped: dict[str, Spans] = {}
    for start, end, speaker in turns:
        if end > start:
            grouped.setdefault(speaker, []).append((float(start), float(end)))
    return {k: _union(v) for k, v in grouped.items()}


def _union(spans: Spans) -> Spans:
    out: Spans = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _subtract(spans: Spans, remove: Spans) -> Spans:
    """``spans`` minus ``remove``; both sorted and disjoint (as ``_union`` gives)."""
    out: Spans = []
    j = 0
    for start, end in spans:
        while j < len(remove) and remove[j][1] <= start:
            j += 1
        t, k = start, j
        while k < len(remove) and remove[k][0] < end:
            if remove[k][0] > t:
                out.append((t, remove[k][0]))
            t = max(t, remove[k][1])
            k += 1
        if t < end:
            out.append((t, end))
    return out


def _active(spans: Spans, times: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Whether each of ``times`` falls inside ``spans`` (sorted and disjoint)."""
    if not spans:
        return np.zeros(times.shape, dtype=bool)
    starts = np.array([s for s, _ in spans])
    ends = np.array([e for _, e in spans])
    index = np.searchsorted(starts, times, side="right") - 1
    return (index >= 0) & (times < ends[np.maximum(index, 0)])


def _assignment(gain: npt.NDArray[np.float64]) -> list[tuple[int, int]]:
    """Row → column pairs maximising the total ``gain`` (Hungarian method, O(n³)).

    Rectangular matrices are padded with zeros; pairs with padding are dropped.
    """
    rows, cols = gain.shape
    n = max(rows, cols)
    cost = np.zeros((n, n))
    cost[:rows, :cols] = -gain
    # Jonker-Volgenant style shortest augmenting paths with potentials u, v.
    u = np.zeros(n + 1)
    v = np.zeros(n + 1)
    match = np.zeros(n + 1, dtype=np.int64)  # match[col] = row (1-based), 0 = free
    for row in range(1, n + 1):
        match[0] = row
        col0 = 0
        best = np.full(n + 1, np.inf)
        way = np.zeros(n + 1, dtype=np.int64)
        used = np.zeros(n + 1, dtype=bool)
        while True:
            used[col0] = True
            r = match[col0]
            delta, col1 = np.inf, 0
            for col in range(1, n + 1):
                if used[col]:
                    continue
                reduced = cost[r - 1, col - 1] - u[r] - v[col]
                if reduced < best[col]:
                    best[col], way[col] = reduced, col0
                if best[col] < delta:
                    delta, col1 = best[col], col
            for col in range(n + 1):
                if used[col]:
                    u[match[col]] += delta
                    v[col] -= delta
                else:
                    best[col] -= delta
            col0 = col1
            if match[col0] == 0:
                break
        while col0:
            col1 = way[col0]
            match[col0] = match[col1]
            col0 = col1
    pairs = [(int(match[c]) - 1, c - 1) for c in range(1, n + 1)]
    return sorted((r, c) for r, c in pairs if r < rows and c < cols)
