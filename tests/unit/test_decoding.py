"""How clips are grouped and how much encoder context each gets (``engines.decoding``);
the decoding itself is tested with the real model in tests/e2e/test_engine_batched.py."""

from __future__ import annotations

import numpy as np

from postcall.engines.decoding import (
    FULL_FRAMES,
    MARGIN_S,
    MIN_CONTEXT_S,
    DecodeOptions,
    _batches,
    _fit,
    context_frames,
)


def test_a_clip_gets_its_length_and_a_margin_at_least_the_minimum_at_most_30_s() -> None:
    assert context_frames(0.5) == int(MIN_CONTEXT_S * 100)
    assert context_frames(MIN_CONTEXT_S - MARGIN_S) == int(MIN_CONTEXT_S * 100)
    assert context_frames(17.2) == int((18 + MARGIN_S) * 100)  # 17.2 + 5 s, whole seconds
    assert context_frames(29.9) == FULL_FRAMES
    assert context_frames(45.0) == FULL_FRAMES
    assert context_frames(3.0, min_s=30.0) == FULL_FRAMES  # 30 s everywhere, as before
    for seconds in np.linspace(0.1, 30.0, 50):  # never less than the clip itself
        assert context_frames(float(seconds)) >= min(FULL_FRAMES, seconds * 100)


def test_batches_hold_at_most_batch_size_clips_of_one_context_shortest_first() -> None:
    lengths_s = [28.0, 2.0, 14.0, 3.0, 1.0, 29.0, 2.5, 16.0, 1.5]
    pieces = [np.zeros(int(s * 16000), dtype=np.float32) for s in lengths_s]
    order = sorted(range(len(pieces)), key=lambda i: pieces[i].size)
    options = DecodeOptions(
        language="en", beam_size=5, word_timestamps=True, prompt=None, batch_size=3
    )
    batches = _batches(order, pieces, options)
    assert sorted(i for b in batches for i in b) == list(range(len(pieces)))  # each once
    for batch in batches:
        assert 1 <= len(batch) <= 3
        assert len({context_frames(lengths_s[i]) for i in batch}) == 1
    flat = [lengths_s[i] for b in batches for i in b]
    assert flat == sorted(flat)


def test_features_are_padded_with_zeros_or_cut_to_the_context() -> None:
    feature = np.ones((80, 1234), dtype=np.float32)
    padded = _fit(feature, 2000)
    assert padded.shape == (80, 2000)
    assert np.all(padded[:, :1234] == 1) and np.all(padded[:, 1234:] == 0)
    cut = _fit(np.ones((80, 3100), dtype=np.float32), 3000)
    assert cut.shape == (80, 3000) and cut.flags.c_contiguous


def test_a_cpu_engine_splits_its_threads_into_decoders_and_takes_that_many_chunks() -> None:
    from postcall.engines.base import chunks_at_once
    from postcall.engines.whisper_http import HttpWhisperEngine
    from postcall.engines.whisper_local import FasterWhisperEngine, resolve_parallel
    from tests.fakes import ScriptedEngine

    assert resolve_parallel(0, "cpu", 2) == 2  # one decoder per thread
    assert resolve_parallel(0, "cpu", 16) == 4  # at most 4 when not told
    assert resolve_parallel(0, "cpu", 1) == 1
    assert resolve_parallel(0, "cuda", 16) == 1  # a GPU's batches already fill it
    assert resolve_parallel(3, "cpu", 2) == 3  # told
    assert chunks_at_once(FasterWhisperEngine("tiny.en", device="cpu", cpu_threads=2)) == 2
    one = FasterWhisperEngine("tiny.en", device="cpu", cpu_threads=2, parallel=1)
    assert chunks_at_once(one) == 1
    assert chunks_at_once(HttpWhisperEngine("http://127.0.0.1:9/v1", concurrency=3)) == 3
    assert chunks_at_once(ScriptedEngine()) == 1  # an engine that says nothing gets one


def test_a_decoder_decodes_eight_windows_at_once_on_a_cpu_unless_told() -> None:
    from postcall.engines.whisper_local import resolve_batch_size

    assert resolve_batch_size(0, "cpu") == 8  # a batched step costs about one window's
    assert resolve_batch_size(0, "cuda") == 16
    assert resolve_batch_size(4, "cpu") == 4  # told
    assert resolve_batch_size(1, "cpu") == 1
