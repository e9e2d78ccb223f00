"""Batched decoding of clips, each window encoded only as long as it needs to be.

faster-whisper's ``BatchedInferencePipeline`` pads every clip's features to Whisper's
full 30 seconds (3,000 frames). The encoder's cost grows faster than its input (its
attention is quadratic): on one CPU thread, tiny.en encodes 30 s in about 0.53 s,
20 s in 0.29 s and 15 s in 0.19 s, and each decoding step attends over the encoder's
output, so it is cheaper too. Whisper reads a short clip as well with less context:
a clip gets ``context_frames(duration)``, its length and a 5 s margin, at least
``MIN_CONTEXT_S``. On the meeting benchmark's development set (three 10-minute
meetings, where most short clips are stretches read again) a least context of 15 s
gave WER 15.58/16.48/17.79 % against 15.73/16.41/18.09 % with 20 s, in 5-12 % less
time; with 20 s against 30 s, 16.01/16.41/17.87 % against 16.08/16.13/17.94 %. 10 s
lost about two points on turns read alone.

Clips are batched with others of the same context (sorted by length), decoded with the
pipeline's own ``forward`` (the same prompt, beam search, segment splitting and word
alignment), and the segments come back in the clips' order.

With ``parallel`` > 1 (a CPU model with that many single-threaded replicas) the batches
are made small enough to give every replica one and decoded at once, each in its own
thread, the longest first; two replicas take half the time of one, and less than one
replica with both threads, whose single steps are too small to share. On a CPU a
batch's windows are encoded one at a time and decoded together (``_RowEncoding``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

RATE = 16000
FRAMES_PER_S = 100
FULL_FRAMES = 3000  # Whisper's 30 s window
# The least context a clip is encoded with (s), and what a clip gets beyond its length.
MIN_CONTEXT_S = 15.0
MARGIN_S = 5.0


def context_frames(duration_s: float, *, min_s: float = MIN_CONTEXT_S) -> int:
    """Encoder frames for a clip of ``duration_s``: its length plus ``MARGIN_S``, rounded
    up to whole seconds, at least ``min_s`` and at most the full 30 s."""
    wanted = max(min_s, math.ceil(duration_s + MARGIN_S))
    return min(FULL_FRAMES, int(wanted * FRAMES_PER_S))


@dataclass(frozen=True)
class DecodeOptions:
    language: str | None
    beam_size: int
    word_timestamps: bool
    prompt: str | None
    batch_size: int
    min_context_s: float = MIN_CONTEXT_S
    parallel: int = 1  # batches decoded at once (model replicas)


def decode_clips(
    model: Any,
    audio: npt.NDArray[np.float32],
    clips: Sequence[tuple[float, float]],
    options: DecodeOptions,
) -> tuple[list[list[Any]], str]:
    """Decode each clip (start, end in s of ``audio``) as one window: the
    faster-whisper ``Segment``s of each clip (times on ``audio``'s timeline), in the
    clips' order, and the language (detected from the clips when not given)."""
    from faster_whisper import BatchedInferencePipeline
    from faster_whisper.tokenizer import Tokenizer

    pieces = [audio[round(a * RATE) : round(b * RATE)] for a, b in clips]
    features = [model.feature_extractor(p)[..., :-1] for p in pieces]
    language = options.language or _detect_language(model, features)
    tokenizer = Tokenizer(
        model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language
    )
    settings = _options(tokenizer, options)
    out: list[list[Any]] = [[] for _ in clips]
    order = sorted(range(len(clips)), key=lambda i: pieces[i].size)
    spread = max(1, min(options.batch_size, math.ceil(len(clips) / max(1, options.parallel))))
    groups = _batches(order, pieces, replace(options, batch_size=spread))

    def decode(group: list[int]) -> list[list[Any]]:
        frames = max(
            context_frames(pieces[i].size / RATE, min_s=options.min_context_s) for i in group
        )
        batch = np.stack([_fit(features[i], frames) for i in group])
        meta = [
            {
                "offset": clips[i][0],
                "duration": min(pieces[i].size / RATE, frames / FRAMES_PER_S),
                "segments": [],
            }
            for i in group
        ]
        # One pipeline per batch: it keeps state.
        by_row = len(group) > 1 and model.model.device == "cpu"
        pipeline = BatchedInferencePipeline(_RowEncoding(model) if by_row else model)
        results = pipeline.forward(batch, tokenizer, meta, settings)
        return [[_segment(raw, options.word_timestamps) for raw in result] for result in results]

    if options.parallel > 1 and len(groups) > 1:
        groups.reverse()  # the longest first, so that no decoder is left with one at the end
        with ThreadPoolExecutor(min(options.parallel, len(groups))) as pool:
            decoded = list(pool.map(decode, groups))
    else:
        decoded = [decode(group) for group in groups]
    for group, segments in zip(groups, decoded, strict=True):
        for i, clip_segments in zip(group, segments, strict=True):
            out[i] = clip_segments
    return out, language


class _RowEncoding:
    """A CPU ``WhisperModel`` that encodes a batch's windows one at a time and decodes
    them together. On a CPU a batch's encoder pass costs more than its windows' passes
    one by one (its activations outgrow the caches), while a batched decoding step costs
    little more than one window's (each step reads the whole output projection, 51,864
    tokens wide, whatever the number of rows). A GPU encodes a batch at once, so
    ``decode_clips`` wraps only a CPU model's batches of two or more."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def encode(self, features: npt.NDArray[np.float32]) -> Any:
        import ctranslate2

        rows = [
            np.asarray(self._model.encode(features[i : i + 1])) for i in range(features.shape[0])
        ]
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.concatenate(rows)))


def _batches(
    order: list[int], pieces: Sequence[npt.NDArray[np.float32]], options: DecodeOptions
) -> list[list[int]]:
    """``batch_size`` clips at a time, shortest first, a batch never mixing contexts."""
    batches: list[list[int]] = []
    for i in order:
        frames = context_frames(pieces[i].size / RATE, min_s=options.min_context_s)
        last = batches[-1] if batches else None
        if (
            last is not None
            and len(last) < options.batch_size
            and context_frames(pieces[last[0]].size / RATE, min_s=options.min_context_s) == frames
        ):
            last.append(i)
        else:
            batches.append([i])
    return batches


def _fit(feature: npt.NDArray[np.float32], frames: int) -> npt.NDArray[np.float32]:
    """Features padded (with zeros, as the pipeline pads them) or cut to ``frames``."""
    if feature.shape[-1] >= frames:
        return np.ascontiguousarray(feature[..., :frames])
    return np.pad(feature, ((0, 0), (0, frames - feature.shape[-1])))


def _detect_language(model: Any, features: list[npt.NDArray[np.float32]]) -> str:
    if not model.model.is_multilingual:
        return "en"
    dummy = np.full((model.model.n_mels, 1), -1.5, dtype=np.float32)  # empty audio
    language, _, _ = model.detect_language(
        features=np.concatenate([*features, dummy], axis=1), language_detection_segments=1
    )
    return str(language)


def _options(tokenizer: Any, options: DecodeOptions) -> Any:
    """The options ``BatchedInferencePipeline.transcribe`` gives ``forward``."""
    from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

    return TranscriptionOptions(
        beam_size=options.beam_size,
        best_of=5,
        patience=1.0,
        length_penalty=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        log_prob_threshold=-1.0,
        no_speech_threshold=0.6,
        compression_ratio_threshold=2.4,
        condition_on_previous_text=False,
        prompt_reset_on_temperature=0.5,
        temperatures=[0.0],
        initial_prompt=options.prompt,
        prefix=None,
        suppress_blank=True,
        suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        without_timestamps=True,
        max_initial_timestamp=0.0,
        word_timestamps=options.word_timestamps,
        prepend_punctuations="\"'“¿([{-",
        append_punctuations="\"'.。,，!！?？:：”)]}、",
        multilingual=False,
        max_new_tokens=None,
        clip_timestamps="0",
        hallucination_silence_threshold=None,
        hotwords=None,
    )


def _segment(raw: dict[str, Any], word_timestamps: bool) -> Any:
    from faster_whisper.transcribe import Segment, Word

    return Segment(
        id=0,
        seek=raw["seek"],
        start=round(raw["start"], 3),
        end=round(raw["end"], 3),
        text=raw["text"],
        tokens=raw["tokens"],
        avg_logprob=raw["avg_logprob"],
        compression_ratio=raw["compression_ratio"],
        no_speech_prob=raw["no_speech_prob"],
        words=[Word(**w) for w in raw["words"]] if word_timestamps else None,
        temperature=0.0,
    )
