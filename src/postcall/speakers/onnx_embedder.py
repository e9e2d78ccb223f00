"""A speaker-embedding model the operator supplies as a local ONNX file.

The model takes one float32 input, features of 16 kHz audio, and gives one float32
output of shape [batch, dim]: ``fbank80``/``fbank64``/``fbank40`` feed
[batch, frames, bins] Kaldi log mel filterbanks (``speakers.fbank``, with the mean
over each window's frames subtracted unless ``cmn`` is off), as WeSpeaker's ResNet
exports expect (input ``feats``, output ``embs``); ``wave`` feeds the samples
themselves, [batch, samples] in [-1, 1]. Outputs are L2-normalised here.

The file is read from disk and run by onnxruntime; nothing is downloaded. Its
signature is checked when it loads, and one small batch is run through it, so a
model that does not fit fails at a worker's start with the reason, not mid-job.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from postcall import errors
from postcall.speakers import fbank as fb
from postcall.speakers.embedding import (
    FRAME_HOP,
    LEVEL_DBFS,
    WINDOW_SAMPLES,
    Array,
    EmbedderConfig,
    Signal,
    read,
    unit_rows,
)
from postcall.speakers.encoder import highpass, volume_gain

log = logging.getLogger(__name__)

_UTTERANCE_PIECE_S = 20.0  # a long utterance is embedded in pieces of this many seconds
_MARGIN = 4096  # context on each side of a stretch of audio high-passed for ``wave``


def model_id(digest: str, config: EmbedderConfig, output: str) -> str:
    """What names the vectors a model gives: the file (its SHA-256) and how it is fed
    and read, as the same file with other features gives other vectors."""
    if config.features == "wave":
        how = "wave"
    else:
        how = f"{config.features}-{config.window}-{'cmn' if config.cmn else 'nocmn'}"
    return f"onnx:{digest[:12]}:{how}:{output}"


class OnnxEmbedder:
    """A ``SpeakerEmbedder`` running a local ONNX model on CPU (or CUDA) with onnxruntime."""

    def __init__(self, session: Any, config: EmbedderConfig, model_id: str) -> None:
        self.session = session
        self.config = config
        self.model_id = model_id
        self.bins = 0 if config.features == "wave" else int(config.features.removeprefix("fbank"))
        self._input, self._fixed_length, self._fixed_batch = _check_input(
            session, config, self.bins
        )
        self._output = _check_output(session, config.output)
        self._batch = self._fixed_batch or max(1, config.batch_size)
        # The samples one window is embedded from: the diarizer's 1.6 s, or what a model
        # with a fixed number of frames (samples) needs, centred on the window.
        self.window_samples = self._fixed_length or WINDOW_SAMPLES
        if self.bins and self._fixed_length:
            self.window_samples = fb.samples_for(self._fixed_length)
        self.dim = self._probe()

    @classmethod
    def load(cls, config: EmbedderConfig) -> OnnxEmbedder:
        """Open ``config.model_path``; raises ``errors.ModelUnavailable`` saying what is wrong."""
        path = config.model_path
        if path is None:
            raise errors.ModelUnavailable("no speaker model file configured")
        path = Path(path)
        if not path.is_file():
            raise errors.ModelUnavailable(f"speaker model {path}: no such file")
        try:
            with path.open("rb") as file:
                digest = hashlib.file_digest(file, "sha256").hexdigest()
        except OSError as exc:
            raise errors.ModelUnavailable(f"speaker model {path}: cannot read it: {exc}") from exc
        import onnxruntime as ort  # heavy: loaded only when an ONNX model is configured

        options = ort.SessionOptions()
        cores = os.cpu_count() or 1
        options.intra_op_num_threads = min(config.threads or 4, cores)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if config.device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise errors.ModelUnavailable(
                    "POSTCALL_SPEAKER_DEVICE=cuda, but this onnxruntime has no CUDA provider"
                )
            providers.insert(0, "CUDAExecutionProvider")
        try:
            session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own classes for a bad file
            raise errors.ModelUnavailable(
                f"speaker model {path}: not an ONNX model onnxruntime can load: {exc}"
            ) from exc
        embedder = cls(session, config, f"onnx:{digest[:12]}")
        embedder.model_id = model_id(digest, config, embedder._output)
        log.info(
            "speaker model %s (%s): %s %s -> %s, %d-d",
            path,
            embedder.model_id,
            config.features,
            embedder._input,
            embedder._output,
            embedder.dim,
        )
        return embedder

    # ------------------------------------------------------------------ embedding

    def embed_windows(
        self,
        signal: Signal,
        starts: npt.NDArray[np.int64],
        *,
        highpass_hz: float = 0.0,
        gain: float = 1.0,
    ) -> Array:
        """Unit vectors of the diarizer's windows (see ``SpeakerEmbedder``), a batch at a time.

        The features of each batch's stretch of audio are computed once; each window
        takes its frames from them (and has their mean subtracted on its own).
        """
        out = np.empty((starts.size, self.dim), dtype=np.float32)
        offset = (WINDOW_SAMPLES - self.window_samples) // 2
        for b in range(0, starts.size, self._batch):
            chunk = starts[b : b + self._batch]
            first = int(chunk[0]) * FRAME_HOP + offset
            last = int(chunk[-1]) * FRAME_HOP + offset + self.window_samples
            if self.bins:
                piece = read(signal, first, last) * np.float32(gain)
                feats = fb.fbank(
                    piece, self.bins, window=self.config.window, highpass_hz=highpass_hz
                )
                frames = fb.frame_count(self.window_samples)
                rel = (chunk - chunk[0]).tolist()
                batch = np.stack([feats[r : r + frames] for r in rel])
                if self.config.cmn:
                    batch = fb.cmn(batch)
            else:
                margin = _MARGIN if highpass_hz > 0 else 0
                piece = read(signal, first - margin, last + margin)
                if highpass_hz > 0:
                    piece = highpass(piece, highpass_hz)[margin : piece.size - margin]
                piece = piece * np.float32(gain)
                rel = ((chunk - chunk[0]) * FRAME_HOP).tolist()
                batch = np.stack([piece[r : r + self.window_samples] for r in rel])
            out[b : b + chunk.size] = self._run(batch)
        return out

    def embed_utterance(self, wav: Array) -> Array:
        """One unit vector for a whole utterance (16 kHz mono float32).

        The level is raised to -30 dBFS (never lowered). A model with a variable
        length sees the utterance in pieces of up to 20 s; one with a fixed length,
        windows of that length every half window. The pieces' embeddings are averaged,
        weighted by their length, and normalised.
        """
        wav = np.asarray(wav, dtype=np.float32)
        wav = wav * np.float32(volume_gain(wav, LEVEL_DBFS))
        if self._fixed_length:
            size = self.window_samples
            starts = range(0, max(1, wav.size - size + size // 2 + 1), max(1, size // 2))
            pieces = [read(wav, s, s + size) for s in starts]
        else:
            size = round(_UTTERANCE_PIECE_S * 16000)
            least = fb.samples_for(2) if self.bins else 1
            pieces = [wav[s : s + size] for s in range(0, max(1, wav.size), size)]
            pieces = [p if p.size >= least else read(p, 0, least) for p in pieces]
            if len(pieces) > 1 and pieces[-1].size < size // 4:
                pieces.pop()  # a short tail would weigh little and is mostly noise
        total = np.zeros(self.dim, dtype=np.float64)
        for piece in pieces:
            total += piece.size * self._run(self._features(piece)[None])[0]
        vector: Array = unit_rows(total[None])[0]
        return vector

    def _features(self, wav: Array) -> Array:
        if not self.bins:
            return wav
        feats = fb.fbank(wav, self.bins, window=self.config.window)
        return fb.cmn(feats) if self.config.cmn else feats

    def _run(self, batch: Array) -> Array:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        out: list[Array] = []
        for b in range(0, batch.shape[0], self._batch):
            part = batch[b : b + self._batch]
            count = part.shape[0]
            if self._fixed_batch and count < self._fixed_batch:  # a model made for one size
                part = np.concatenate(
                    [part, np.zeros_like(part[:1]).repeat(self._batch - count, 0)]
                )
            try:
                result = self.session.run([self._output], {self._input: part})[0]
            except Exception as exc:  # onnxruntime's own classes
                raise errors.ModelUnavailable(
                    f"the speaker model ({self.model_id}) failed on input of shape "
                    f"{list(part.shape)}: {exc}"
                ) from exc
            out.append(np.asarray(result, dtype=np.float32)[:count])
        return unit_rows(np.concatenate(out))

    def _probe(self) -> int:
        """Run a short batch of quiet noise; the output must be [batch, dim] and finite."""
        rng = np.random.default_rng(0)
        count = self._fixed_batch or 2
        wav = (0.01 * rng.standard_normal(self.window_samples)).astype(np.float32)
        batch = np.stack([self._features(wav)] * count)
        try:
            result = self.session.run([self._output], {self._input: batch})[0]
        except Exception as exc:
            raise errors.ModelUnavailable(
                f"the speaker model fails on {self.config.features} input of shape "
                f"{list(batch.shape)}: {exc}"
            ) from exc
        result = np.asarray(result)
        if result.ndim != 2 or result.shape[0] != count or result.shape[1] < 2:
            raise errors.ModelUnavailable(
                f"the speaker model's output {self._output!r} must be [batch, dim] embeddings; "
                f"for a batch of {count} it gave shape {list(result.shape)}"
            )
        if not np.isfinite(result).all():
            raise errors.ModelUnavailable("the speaker model gives non-finite embeddings")
        return int(result.shape[1])


def _check_input(session: Any, config: EmbedderConfig, bins: int) -> tuple[str, int, int]:
    """(input name, fixed length or 0, fixed batch size or 0) of the model's one input."""
    inputs = session.get_inputs()
    expected = (
        f"[batch, frames, {bins}] float32 ({config.features})"
        if bins
        else "[batch, samples] float32 (wave)"
    )
    if len(inputs) != 1:
        names = ", ".join(f"{i.name} {_shape(i.shape)}" for i in inputs)
        raise errors.ModelUnavailable(
            f"the speaker model must take one input, {expected}; it takes {len(inputs)}: {names}"
        )
    spec = inputs[0]
    found = f"{spec.name!r} {_shape(spec.shape)} {spec.type}"
    rank = 3 if bins else 2
    shape = list(spec.shape)
    wrong = spec.type != "tensor(float)" or len(shape) != rank
    if bins and not wrong and isinstance(shape[2], int) and shape[2] != bins:
        wrong = True
    if wrong:
        hint = ""
        if bins and len(shape) == 3 and isinstance(shape[2], int) and shape[2] != bins:
            hint = f" (set POSTCALL_SPEAKER_FEATURES=fbank{shape[2]}?)"
        elif len(shape) == 2 and bins:
            hint = " (set POSTCALL_SPEAKER_FEATURES=wave?)"
        raise errors.ModelUnavailable(
            f"the speaker model's input must be {expected}; found {found}{hint}"
        )
    length = shape[1] if isinstance(shape[1], int) and shape[1] > 0 else 0
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else 0
    return str(spec.name), length, batch


def _check_output(session: Any, wanted: str | None) -> str:
    """The name of the output that holds the embeddings."""
    outputs = session.get_outputs()
    names = [o.name for o in outputs]
    if wanted is not None:
        if wanted not in names:
            raise errors.ModelUnavailable(
                f"the speaker model has no output {wanted!r}; its outputs: {', '.join(names)}"
            )
        index = names.index(wanted)
    elif len(outputs) == 1:
        index = 0
    else:
        raise errors.ModelUnavailable(
            f"the speaker model has {len(outputs)} outputs ({', '.join(names)}): "
            "name the embeddings with POSTCALL_SPEAKER_MODEL_OUTPUT"
        )
    spec = outputs[index]
    if spec.type != "tensor(float)" or len(spec.shape) != 2:
        raise errors.ModelUnavailable(
            f"the speaker model's output must be [batch, dim] float32 embeddings; found "
            f"{spec.name!r} {_shape(spec.shape)} {spec.type}"
        )
    return str(spec.name)


def _shape(shape: list[Any]) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"
