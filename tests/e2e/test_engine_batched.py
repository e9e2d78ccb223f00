"""The in-process engine with the real tiny.en model: batched windows cut at pauses,
continuous speech that no pause splits, and the model's life (idle unload, preload)."""

from __future__ import annotations

import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from postcall import audio
from postcall.engines.base import EngineOptions
from postcall.engines.whisper_local import FasterWhisperEngine
from tests.conftest import manifest
from tests.helpers import wait_for, wer

pytestmark = pytest.mark.e2e
RATE = 16000


def read_speech(testdata: Path) -> list[tuple[str, np.ndarray]]:
    clips = [e for e in manifest() if e["audio"].startswith(("librispeech/", "ljspeech/"))]
    return [(e["text"], np.concatenate(list(audio.decode(testdata / e["audio"])))) for e in clips]


@pytest.fixture(scope="module")
def engines(whisper_model_dir: str) -> dict[str, FasterWhisperEngine]:
    return {
        "batched": FasterWhisperEngine(whisper_model_dir, batch_size=8),
        "sequential": FasterWhisperEngine(whisper_model_dir, batch_size=1),
    }


def test_continuous_speech_keeps_its_words_across_window_cuts(
    testdata: Path, engines: dict[str, FasterWhisperEngine]
) -> None:
    # The read-speech clips back to back with only 50 ms between them: well over 30 s
    # that a voice-activity detector sees as one stretch of speech, so the windows must
    # be cut inside it.
    clips, seconds = [], 0.0
    for text, samples in read_speech(testdata):  # about 70 s: two or three windows
        if seconds < 70:
            clips.append((text, samples))
            seconds += samples.size / RATE
    gap = np.zeros(int(0.05 * RATE), dtype=np.float32)
    samples = np.concatenate([part for _, a in clips for part in (a, gap)])
    reference = " ".join(text for text, _ in clips)
    assert samples.size / RATE > 45
    options = EngineOptions(language="en", beam_size=5)
    batched = engines["batched"].transcribe(samples, options)
    sequential = engines["sequential"].transcribe(samples, options)
    text = " ".join(s.text for s in batched.segments)
    batched_wer = wer(reference, text)
    sequential_wer = wer(reference, " ".join(s.text for s in sequential.segments))
    print(
        f"continuous speech {samples.size / RATE:.0f} s: WER batched {batched_wer:.3f}, "
        f"sequential {sequential_wer:.3f}"
    )
    assert batched_wer <= sequential_wer + 0.03, (batched_wer, sequential_wer, text)
    assert batched_wer < 0.2
    # Times are on the input's timeline, in order, and segments are sentence-sized.
    words = [w for s in batched.segments for w in s.words]
    assert all(0 <= w.start <= w.end <= samples.size / RATE + 0.01 for w in words)
    assert all(a.start <= b.start + 0.01 for a, b in pairwise(words))
    assert max(s.end - s.start for s in batched.segments) <= 12.5


def test_silence_gives_no_segments(engines: dict[str, FasterWhisperEngine]) -> None:
    result = engines["batched"].transcribe(np.zeros(10 * RATE, dtype=np.float32), EngineOptions())
    assert result.segments == ()


def test_idle_model_is_unloaded_and_loads_again(testdata: Path, whisper_model_dir: str) -> None:
    engine = FasterWhisperEngine(whisper_model_dir, idle_unload_s=0.3)
    samples = np.concatenate(list(audio.decode(testdata / "jfk.flac")))
    first = engine.transcribe(samples, EngineOptions())
    wait_for(lambda: not engine.loaded, timeout=10, what="the idle model to be unloaded")
    second = engine.transcribe(samples, EngineOptions())
    assert engine.loaded
    assert first.segments and second.segments
    engine.close()
    assert not engine.loaded


def test_preload_with_a_bad_model_stops_the_worker_at_once(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "WHISPER_MODEL": str(tmp_path / "no-model-here"),
        "POSTCALL_DATA_DIR": str(tmp_path / "data"),
        "POSTCALL_WEBHOOK_DISPATCH": "false",
    }
    done = subprocess.run(
        [sys.executable, "-m", "postcall.cli", "worker", "--preload"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "model.bin" in done.stderr


def test_short_clips_read_with_the_least_context_as_well_as_with_30_s(
    testdata: Path, engines: dict[str, FasterWhisperEngine]
) -> None:
    """``decode_clips`` encodes a short clip with its length and a margin (at least
    ``MIN_CONTEXT_S``, 15 s) instead of Whisper's 30: the words are as right as with 30
    (each clip's text against its reference), each clip's words start inside it, and
    the clips come back in their order."""
    from postcall.engines.decoding import MIN_CONTEXT_S, DecodeOptions, decode_clips

    speech = read_speech(testdata)
    gap = np.zeros(RATE, dtype=np.float32)
    joined = np.concatenate([x for _, samples in speech for x in (samples, gap)])
    clips, at = [], 0.0
    for _, samples in speech:
        clips.append((at, at + samples.size / RATE))
        at += (samples.size + gap.size) / RATE
    model = engines["batched"].load()
    texts: dict[float, list[str]] = {}
    for least in (MIN_CONTEXT_S, 30.0):
        options = DecodeOptions("en", 5, True, None, batch_size=4, min_context_s=least)
        per_clip, language = decode_clips(model, joined, clips, options)
        assert language == "en" and len(per_clip) == len(clips)
        texts[least] = [" ".join(s.text for s in segments) for segments in per_clip]
        for (a, b), segments in zip(clips, per_clip, strict=True):
            for w in (w for s in segments for w in s.words):
                # the last word's end may run into the padding (the engine clamps it)
                assert a - 0.05 <= w.start <= b and w.start <= w.end <= b + 0.5, (a, b, w)
    references = [text for text, _ in speech]
    short = wer(" ".join(references), " ".join(texts[MIN_CONTEXT_S]))
    full = wer(" ".join(references), " ".join(texts[30.0]))
    print(f"WER with {MIN_CONTEXT_S} s of context {short:.3f}, with 30 s {full:.3f}")
    assert short <= full + 0.03, (short, full)
    assert short < 0.15


def test_two_chunks_decoded_at_once_read_as_one_at_a_time(
    testdata: Path, whisper_model_dir: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    engine = FasterWhisperEngine(whisper_model_dir, device="cpu", cpu_threads=2, parallel=2)
    assert engine.parallelism == 2
    assert engine.load().model.num_workers == 2  # two decoders (one thread each)
    pieces = [samples for _, samples in read_speech(testdata)[:2]]
    pieces.append(np.concatenate(list(audio.decode(testdata / "jfk.flac"))))

    def words(samples: np.ndarray) -> list[str]:
        result = engine.transcribe(samples, EngineOptions())
        return [w.text for s in result.segments for w in s.words]

    alone = [words(p) for p in pieces]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(words, pieces))
    assert all(alone) and together == alone


def test_batches_spread_over_decoders_read_as_one_batch(
    testdata: Path, whisper_model_dir: str
) -> None:
    from postcall.engines.decoding import DecodeOptions, decode_clips

    model = FasterWhisperEngine(whisper_model_dir, device="cpu", cpu_threads=2).load()
    pieces = [samples for _, samples in read_speech(testdata)[:4]]
    audio_ = np.concatenate(pieces)
    edges = np.cumsum([0, *[p.size for p in pieces]]) / RATE
    clips = list(pairwise(edges.tolist()))

    def words(parallel: int) -> list[list[str]]:
        options = DecodeOptions("en", 5, True, None, batch_size=8, parallel=parallel)
        per_clip, _ = decode_clips(model, audio_, clips, options)
        return [[w.word.strip() for s in segments for w in s.words] for segments in per_clip]

    one_batch, spread = words(1), words(2)
    assert all(one_batch) and len(one_batch) == 4
    # Same words (a word may differ where batch padding moves int8 arithmetic).
    for a, b in zip(one_batch, spread, strict=True):
        assert wer(" ".join(a), " ".join(b)) < 0.05


def test_a_cpu_batch_is_encoded_window_by_window_as_it_would_be_whole(
    testdata: Path, whisper_model_dir: str
) -> None:
    """A CPU decoder encodes a batch's windows one at a time (``_RowEncoding``): the
    encoder's output is the batch's, and the batch reads as its windows one by one."""
    from postcall.engines.decoding import (
        DecodeOptions,
        _fit,
        _RowEncoding,
        context_frames,
        decode_clips,
    )

    model = FasterWhisperEngine(whisper_model_dir, device="cpu", cpu_threads=1).load()
    # Three utterances short enough to share one context, so they make one batch.
    pieces = [samples for _, samples in read_speech(testdata) if samples.size < 9 * RATE][:3]
    frames = context_frames(max(p.size for p in pieces) / RATE)
    assert {context_frames(p.size / RATE) for p in pieces} == {frames}
    features = np.stack([_fit(model.feature_extractor(p)[..., :-1], frames) for p in pieces])
    whole = np.asarray(model.encode(features))
    by_row = np.asarray(_RowEncoding(model).encode(features))
    assert by_row.shape == whole.shape == (3, frames // 2, whole.shape[-1])
    assert np.allclose(by_row, whole, atol=0.05 * float(np.abs(whole).mean()))
    assert not np.allclose(by_row[0], by_row[1])  # each row its own window

    audio_ = np.concatenate(pieces)
    edges = np.cumsum([0, *[p.size for p in pieces]]) / RATE
    clips = list(pairwise(edges.tolist()))

    def words(batch_size: int) -> list[str]:
        options = DecodeOptions("en", 5, True, None, batch_size=batch_size)
        per_clip, _ = decode_clips(model, audio_, clips, options)
        return [w.word.strip() for segments in per_clip for s in segments for w in s.words]

    batched, one_by_one = words(8), words(1)
    assert batched and wer(" ".join(one_by_one), " ".join(batched)) < 0.05
