"""In-process faster-whisper (CTranslate2): CPU int8 or GPU float16.

The model loads lazily on the first call, once per process, behind a lock. Nothing
here is imported by the API process: wiring imports this module only for workers.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from postcall.domain import Segment, Word
from postcall.engines.base import EngineOptions, EngineResult
from postcall.errors import EngineError, ModelUnavailable

log = logging.getLogger(__name__)

SIZE_NAMES = (
    "tiny",
    "tiny.en",
    "base",
    "base.en",
    "small",
    "small.en",
    "distil-small.en",
    "medium",
    "medium.en",
    "distil-medium.en",
    "large-v1",
    "large-v2",
    "large-v3",
    "large",
    "distil-large-v2",
    "distil-large-v3",
    "large-v3-turbo",
    "turbo",
)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def resolve_compute_type(compute_type: str, device: str) -> str:
    if compute_type != "auto":
        return compute_type
    return "float16" if device == "cuda" else "int8"


class FasterWhisperEngine:
    """The ``Engine`` port over faster-whisper's ``WhisperModel``."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        compute_type: str = "auto",
        cpu_threads: int = 0,
        num_workers: int = 1,
    ) -> None:
        self.model_name = model
        self._device = device
        self._compute_type = compute_type
        self._cpu_threads = cpu_threads or os.cpu_count() or 1
        self._num_workers = max(1, num_workers)  # transcriptions that may run at once
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> Any:
        """Load the model (once); ``ModelUnavailable`` with what to set when it cannot."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self) -> Any:
        name = self.model_name
        looks_like_path = os.sep in name or name.startswith(".") or Path(name).exists()
        if looks_like_path and not (Path(name) / "model.bin").is_file():
            raise ModelUnavailable(
                f"WHISPER_MODEL={name!r} is not a CTranslate2 model directory (no model.bin "
                "there). Set WHISPER_MODEL to a model size name such as 'base' or to a "
                "directory holding model.bin, config.json and tokenizer.json."
            )
        if not looks_like_path and name not in SIZE_NAMES:
            raise ModelUnavailable(
                f"WHISPER_MODEL={name!r} is neither a local model directory nor a known size "
                f"name. Set it to one of {', '.join(SIZE_NAMES)} or to a local model directory."
            )
        try:
            from faster_whisper import WhisperModel

            device = resolve_device(self._device)
            compute_type = resolve_compute_type(self._compute_type, device)
            log.info(
                "loading Whisper model %s on %s (%s, %d threads)",
                name,
                device,
                compute_type,
                self._cpu_threads,
            )
            return WhisperModel(
                name,
                device=device,
                compute_type=compute_type,
                cpu_threads=self._cpu_threads if device == "cpu" else 0,
                num_workers=self._num_workers,
            )
        except ModelUnavailable:
            raise
        except Exception as exc:
            raise ModelUnavailable(
                f"could not load Whisper model {name!r}: {exc}. Set WHISPER_MODEL to a local "
                "CTranslate2 model directory, or give this machine access to the model hub "
                "so the size name can be downloaded into its cache; POSTCALL_WHISPER_DEVICE "
                "and POSTCALL_WHISPER_COMPUTE_TYPE override the device and compute type."
            ) from exc

    def transcribe(self, audio: npt.NDArray[np.float32], options: EngineOptions) -> EngineResult:
        model = self.load()
        try:
            raw_segments, info = model.transcribe(
                audio,
                language=options.language,
                beam_size=options.beam_size,
                vad_filter=options.vad,
                word_timestamps=options.word_timestamps,
                initial_prompt=options.prompt or None,
            )
            segments = tuple(_segment(s) for s in raw_segments)
        except Exception as exc:
            raise EngineError(f"inference failed: {exc}") from exc
        return EngineResult(language=str(info.language), segments=segments)


def _segment(raw: Any) -> Segment:
    words = tuple(
        Word(
            start=float(w.start),
            end=float(w.end),
            text=str(w.word).strip(),
            probability=float(w.probability),
        )
        for w in (raw.words or ())
    )
    return Segment(
        start=float(raw.start), end=float(raw.end), text=str(raw.text).strip(), words=words
    )
