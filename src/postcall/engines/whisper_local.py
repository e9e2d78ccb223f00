"""In-process faster-whisper (CTranslate2): CPU int8 or GPU float16.

The model loads lazily on the first call (or at start with ``preload``), once per
process, behind a lock, and stays loaded between jobs; with ``idle_unload_s`` it is
dropped after that long without work, to give the memory (a GPU's above all) back,
and loads again on the next call. Nothing here is imported by the API process:
wiring imports this module only for workers.

Every chunk goes the same way (``_transcribe_windows``):

1. its level is conditioned (``levels.levelled``): each stretch of speech is raised
   towards one level by its own loudness, bounded, and only where it stands out of
   the room's noise, so a participant 40 dB below the others is heard;
2. its speech regions are found on that (``speech.find_speech``);
3. the regions are packed into 10-second windows (``WINDOW_S``) cut only at
   pauses, inner pauses shortened (``windows.plan_windows``, ``windows.splice``), and
   the windows decoded ``batch_size`` at a time (``decoding.decode_clips``:
   faster-whisper's batched decoding, a short window encoded with its length and 5 s,
   at least 15 s, rather than 30);
4. each word is mapped back through the splice and kept inside the region it was
   said in (``completeness.place``);
5. the result is checked against the audio: every stretch of speech of a second or
   more that no word accounts for (a region that came back empty, an utterance
   skipped inside one: ``completeness.unheard``) is read again, first a few to a
   10-second window, then what is still unheard each on its own (and a stretch that
   gives nothing even so, once more with Whisper's whole 30 s of context), and the
   new words put in (``completeness.recover``);
6. a region of two seconds or more whose words the model doubts (mean probability
   under 0.5), or a run of two seconds or more of unsure words and "..." marks inside
   a region
   (``completeness.doubted_stretches``), is read again alone with the whole 30 s of
   context, and that reading put in where it holds a word
   (``completeness.replaced_if_said``).

``batch_size=1`` decodes the same windows one at a time.

On a CPU the cores are split between ``parallel`` decoders (model replicas sharing
one copy of the weights, one thread each): the batches of every decoding call are
spread over them (``decoding.decode_clips``), and a job keeps that many chunks in
flight (``parallelism``), so one chunk's speech detection overlaps another's
decoding. tiny.en's matrices are too small for two threads to share one decoding step
well: this way the development meetings take about half the time, with the same
words, of two threads on one decoder. Each decoder takes up to 8 windows of the same
context at a time (``resolve_batch_size``), encoding them one by one and decoding them
together (``decoding``).
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from postcall.domain import Segment, Word
from postcall.engines import completeness
from postcall.engines.base import EngineOptions, EngineResult
from postcall.engines.cpu_runtime import keep_heap, release_heap, tune_for_cpu
from postcall.engines.decoding import MIN_CONTEXT_S, DecodeOptions, decode_clips
from postcall.engines.levels import levelled
from postcall.engines.speech import find_speech
from postcall.engines.windows import RATE, plan_windows, splice
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


# Pauses inside a decoding window are shortened to this; longer ones make decoding
# without timestamps stop early and drop the words after them.
MAX_GAP_S = 0.3
# Whisper's test for a window that holds no speech (faster-whisper's defaults).
NO_SPEECH_PROB = 0.6

NO_SPEECH_LOGPROB = -1.0
MAX_COMPRESSION_RATIO = 2.4
# The first reading packs a chunk's speech into windows of at most this (s), and the
# reading again of what it skipped into windows this short too: with the 5 s margin a
# window is encoded with (``decoding.MARGIN_S``) every such window fills the least
# context (``decoding.MIN_CONTEXT_S``, 15 s) and no more. Each decoding step reads
# every beam's copy of the encoder's output, so its cost follows the context, and
# fewer utterances to a window skip fewer. On the 17 development meetings (seeds 1-17),
# against 15 s first windows and 12 s rereading windows (20 s and 17 s of context):
# mean WER 16.91 % against 17.26 %, the same 20 turns with no word matched, 9 % less
# CPU time (265 s against 292 s) and wall time (143 s against 158 s); on three
# 20-minute long-form development recordings of clean read speech (seeds 1-3) WER
# 6.34 % against 6.28 %. 8 s windows took longer (294 s), more of them to encode;
# keeping a region of up to 15 s whole in a window of its own read long-form speech
# worse (6.47 %) in no less time. Against 30 s windows, 15 s ones had skipped less
# (development meeting 7: 241 s of speech left to read again against 327 s) in about a
# fifth less time.
WINDOW_S = 10.0
REREAD_WINDOW_S = 10.0
# Whisper's own window (s): the context of a last reading alone.
FULL_CONTEXT_S = 30.0
# Decoders a CPU engine runs at once when not told (``resolve_parallel``).
MAX_AUTO_PARALLEL = 4


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def resolve_compute_type(compute_type: str, device: str) -> str:
    """``auto``: float16 on a GPU that has it (else int8_float16), int8 on a CPU."""
    if compute_type != "auto":
        return compute_type
    import ctranslate2

    supported = ctranslate2.get_supported_compute_types(device)
    preferred = ("float16", "int8_float16", "int8") if device == "cuda" else ("int8",)
    return next((c for c in preferred if c in supported), "default")


def resolve_batch_size(batch_size: int, device: str) -> int:
    """``0`` (auto): 16 windows at once on a GPU, 8 on a CPU. A CPU decoder encodes a
    batch's windows one by one and decodes them together (``decoding``): a batched
    decoding step costs little more than one window's, whatever the threads, so on the
    development meetings 1, 2 and 7 batches of 8 took 32.3-36.8 s against 35.3-37.8 s
    one window at a time (mean WER 15.89 % against 15.82 %)."""
    if batch_size > 0:
        return batch_size
    return 16 if device == "cuda" else 8


def resolve_parallel(parallel: int, device: str, threads: int) -> int:
    """``0`` (auto): on a CPU one decoder per thread, at most ``MAX_AUTO_PARALLEL``; on a
    GPU one (its batches already fill it)."""
    if parallel > 0:
        return parallel
    if device == "cuda":
        return 1
    return max(1, min(threads, MAX_AUTO_PARALLEL))


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
        batch_size: int = 0,
        idle_unload_s: float = 0.0,
        min_context_s: float = MIN_CONTEXT_S,
        parallel: int = 0,
    ) -> None:
        self.model_name = model
        self.min_context_s = min_context_s
        self._device = device
        self._compute_type = compute_type
        self._cpu_threads = cpu_threads or available_cpus()
        self._num_workers = max(1, num_workers)  # transcriptions that may run at once
        self._parallel = parallel  # decoders (CPU replicas); 0 = auto (resolve_parallel)
        self._batch_size = batch_size
        self._idle_unload_s = idle_unload_s
        self._model: Any = None
        self._lock = threading.Lock()
        self._active = 0
        self._last_used = time.monotonic()
        self._reaper: threading.Thread | None = None
        self._closed = threading.Event()
        if resolve_device(device) == "cpu":
            # Now, not at load (``tune_for_cpu``): a worker's threads that allocated
            # before would keep arenas (and their free memory) of their own.
            keep_heap()
        self.device = ""
        self.compute_type = ""
        self.batch_size = 0
        self.decoders = 1

    @property
    def parallelism(self) -> int:
        """Chunks of one job this engine decodes at once (``resolve_parallel``)."""
        device = self.device or resolve_device(self._device)
        return resolve_parallel(self._parallel, device, self._cpu_threads)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> Any:
        """Load the model (once); ``ModelUnavailable`` with what to set when it cannot."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
                if self._idle_unload_s > 0 and self._reaper is None:
                    self._reaper = threading.Thread(
                        target=self._unload_when_idle, name="whisper-idle-unload", daemon=True
                    )
                    self._reaper.start()
            self._last_used = time.monotonic()
            return self._model

    def unload(self) -> bool:
        """Drop the model now unless a transcription is running; True when dropped."""
        with self._lock:
            if self._model is None or self._active:
                return False
            self._model = None
        gc.collect()
        if self.device == "cpu":
            release_heap()  # the heap kept the model's memory (``keep_heap``)
        log.info("unloaded Whisper model %s", self.model_name)
        return True

    def close(self) -> None:
        """Stop the idle check and drop the model."""
        self._closed.set()
        self.unload()

    def _unload_when_idle(self) -> None:
        interval = min(max(self._idle_unload_s / 4, 0.05), 5.0)
        while not self._closed.wait(interval):
            with self._lock:
                idle = time.monotonic() - self._last_used
                due = self._model is not None and not self._active
            if due and idle >= self._idle_unload_s:
                self.unload()

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
            if device == "cpu":  # before CTranslate2 picks its kernels
                tune_for_cpu()
            compute_type = resolve_compute_type(self._compute_type, device)
            self.device, self.compute_type = device, compute_type
            parallel = resolve_parallel(self._parallel, device, self._cpu_threads)
            # The CPU threads shared out among the replicas (one copy of the weights);
            # more calls than replicas wait their turn inside CTranslate2.
            replicas = max(self._num_workers, parallel)
            threads = max(1, self._cpu_threads // replicas)
            self.batch_size = resolve_batch_size(self._batch_size, device)
            # On a CPU one call's batches are spread over the replicas (a GPU's one
            # batch already fills it).
            self.decoders = replicas if device == "cpu" else 1
            log.info(
                "loading Whisper model %s on %s (%s, %d decoders of %d threads, batch %d)",
                name,
                device,
                compute_type,
                replicas,
                threads,
                self.batch_size,
            )
            return WhisperModel(
                name,
                device=device,
                compute_type=compute_type,
                cpu_threads=threads if device == "cpu" else 0,
                num_workers=replicas,
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
        with self._lock:
            self._active += 1
        try:
            return self._transcribe_windows(model, audio, options)
        except Exception as exc:
            raise EngineError(f"inference failed: {exc}") from exc
        finally:
            with self._lock:
                self._active -= 1
                self._last_used = time.monotonic()

    def _transcribe_windows(
        self, model: Any, audio: npt.NDArray[np.float32], options: EngineOptions
    ) -> EngineResult:
        conditioned = levelled(audio)
        speech = find_speech(conditioned, audio) if options.vad else [(0, int(audio.size))]
        windows = plan_windows(speech, conditioned, max_s=WINDOW_S, max_gap_s=MAX_GAP_S)
        if not windows:
            return EngineResult(language=options.language or "", segments=())
        spliced = splice(conditioned, windows, max_gap_s=MAX_GAP_S)
        # Without timestamps: a batched window is decoded once, and with timestamps the
        # model more often ends it after its first few segments (on clean read speech
        # twice the words were lost); what is skipped either way is read again below.
        decoded, language = self._decode(
            model, spliced.audio, spliced.clips, options, spliced.to_original
        )
        if not options.word_timestamps:
            return EngineResult(language=language, segments=tuple(decoded))
        regions = [r for window in windows for r in window]
        first = completeness.unrepeated([w for s in decoded for w in s.words])
        placed = completeness.place(first, regions)

        def read_again(spans: list[tuple[int, int]], packed: bool) -> list[Word]:
            if packed:  # a few to a short window: fewer windows, little left to skip
                short = plan_windows(spans, conditioned, max_s=REREAD_WINDOW_S, max_gap_s=MAX_GAP_S)
                again = splice(conditioned, short, max_gap_s=MAX_GAP_S)
                redone, _ = self._decode(
                    model, again.audio, again.clips, options, again.to_original
                )
                return completeness.unrepeated([w for s in redone for w in s.words])
            clips = [(a / RATE, b / RATE) for a, b in spans]
            redone, _ = self._decode(model, conditioned, clips, options)
            words = [w for s in redone for w in s.words]
            # A stretch alone that still gives nothing is read once more in Whisper's
            # whole 30 s window, as it would be read on its own by anyone.
            silent = [(a, b) for a, b in clips if not any(a <= _mid(w) <= b for w in words)]
            if silent and self.min_context_s < FULL_CONTEXT_S:
                whole, _ = self._decode(
                    model, conditioned, silent, options, min_context_s=FULL_CONTEXT_S
                )
                words += [w for s in whole for w in s.words]
            return completeness.unrepeated(sorted(words, key=lambda w: (w.start, w.end)))

        words = completeness.recover(regions, placed, read_again)
        words = self._doubted_read_again(model, conditioned, regions, words, options)
        return EngineResult(language=language, segments=tuple(completeness.segments(words)))

    def _doubted_read_again(
        self,
        model: Any,
        audio: npt.NDArray[np.float32],
        regions: list[tuple[int, int]],
        words: list[list[Word]],
        options: EngineOptions,
    ) -> list[list[Word]]:
        """``words`` with each stretch the model read in doubt (a region whose words'
        mean probability is low, or a run of two seconds or more of unsure words and
        "..." marks inside one: ``completeness.doubted_stretches``) read again alone in
        Whisper's whole 30 s window, that reading put in where it holds a word.
        Slow or drawn-out speech that a short context misreads is often read right so:
        on the seven development meetings doubted regions read again left 8 turns empty
        against 13 (mean WER 17.00 % against 17.12 %) for about 5 % more time; reading
        doubted runs again too left 6 (16.93 %), with 13 windows read in doubt on three
        meetings against 10, in no time that could be measured."""
        if self.min_context_s >= FULL_CONTEXT_S:  # every stretch was read so already
            return words
        doubted = completeness.doubted_stretches(regions, words)
        if not doubted:
            return words
        spans = [span for _, span in doubted]
        clips = [(a / RATE, b / RATE) for a, b in spans]
        redone, _ = self._decode(model, audio, clips, options, min_context_s=FULL_CONTEXT_S)
        again = completeness.place([w for s in redone for w in s.words], spans)
        out = list(words)
        for (i, span), new in zip(doubted, again, strict=True):
            out[i] = completeness.replaced_if_said(out[i], span, new)
        return out

    def _decode(
        self,
        model: Any,
        audio: npt.NDArray[np.float32],
        clips: list[tuple[float, float]],
        options: EngineOptions,
        to_original: Callable[[float], float] | None = None,
        *,
        min_context_s: float | None = None,
    ) -> tuple[list[Segment], str]:
        """Decode each clip (s) of ``audio`` as one window, batched: the segments, times
        mapped by ``to_original``, and the language. ``min_context_s`` overrides the
        engine's least encoder context."""
        per_clip, language = decode_clips(
            model,
            audio,
            clips,
            DecodeOptions(
                language=options.language,
                beam_size=options.beam_size,
                word_timestamps=options.word_timestamps,
                prompt=options.prompt or None,
                batch_size=self.batch_size,
                min_context_s=min_context_s or self.min_context_s,
                parallel=self.decoders,
            ),
        )
        raw_segments = [raw for segments in per_clip for raw in segments]
        segments = [_segment(raw, to_original) for raw in raw_segments if not _hallucinated(raw)]
        return [s for s in segments if s.text], language


def _mid(word: Word) -> float:
    return (word.start + word.end) / 2


def _hallucinated(raw: Any) -> bool:
    """Whisper's own rules for text that is not speech: the model says the window holds
    none and is unsure of the text anyway, or the text repeats itself (it compresses
    too well: "see you in the next video, see you in the next video, ...")."""
    silent = raw.no_speech_prob > NO_SPEECH_PROB and raw.avg_logprob < NO_SPEECH_LOGPROB
    return bool(silent or raw.compression_ratio > MAX_COMPRESSION_RATIO)


def _segment(raw: Any, to_original: Callable[[float], float] | None = None) -> Segment:
    """A faster-whisper segment as ours, its times mapped by ``to_original``."""
    t = to_original or float
    words = tuple(
        Word(
            start=round(t(float(w.start)), 3),
            end=round(t(float(w.end)), 3),
            text=str(w.word).strip(),
            probability=float(w.probability),
        )
        for w in (raw.words or ())
    )
    start, end = round(t(float(raw.start)), 3), round(t(float(raw.end)), 3)
    if words:  # a batched window's segment spans the window; its words are exact
        start, end = words[0].start, words[-1].end
    return Segment(start=start, end=end, text=str(raw.text).strip(), words=words)
