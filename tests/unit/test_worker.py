"""The worker and pipeline over a real SQLite store and local blobs, with a scripted engine."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from postcall.blobs.local import LocalBlobStore
from postcall.domain import TranscriptionStatus
from postcall.engines.whisper_local import FasterWhisperEngine
from postcall.service import Service
from postcall.store.sqlite import SqliteStore
from postcall.worker import Worker, WorkerConfig
from tests import media
from tests.fakes import ScriptedEngine


def speechy(seconds: float, pause_every: float = 7.0) -> np.ndarray:
    """Tone bursts with a 1 s pause every ``pause_every`` seconds."""
    t = np.arange(int(seconds * 16000)) / 16000
    signal = 0.3 * np.sin(2 * np.pi * 220 * t)
    signal[(t % pause_every) > pause_every - 1] = 0
    return signal.astype(np.float32)


@pytest.fixture
def parts(tmp_path: Path) -> tuple[SqliteStore, LocalBlobStore, Service]:
    store = SqliteStore(tmp_path / "db.sqlite")
    blobs = LocalBlobStore(tmp_path / "blobs")
    return store, blobs, Service(store, blobs)


def add(service: Service, path: Path, metadata: dict[str, object] | None = None) -> str:
    with path.open("rb") as fh:
        rec = service.create_recording(
            "t", fh, filename=path.name, content_type="audio/wav", metadata=metadata
        )
    return service.request_transcription("t", rec.id, language="en").id


def test_a_failed_job_resumes_from_its_last_chunk(parts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, blobs, service = parts
    wav = media.write_audio(tmp_path / "long.wav", speechy(150))
    tr_id = add(service, wav)
    crashing = ScriptedEngine(fail_on_call=4)
    config = WorkerConfig(chunk_max_s=30, max_attempts=5)
    Worker(store, blobs, crashing, config).run(burst=True)
    failed = store.get_transcription("t", tr_id)
    assert failed.status is TranscriptionStatus.FAILED
    assert failed.error is not None and failed.error.code == "engine_error"
    kept = store.load_chunks(tr_id)
    assert sorted(kept) == [0, 1, 2]
    assert 0.3 < failed.progress < 1

    # Run the same job again (as after a crash): only the missing chunks are transcribed.
    with store._tx() as db:  # put it back in the queue as a reclaim would
        db.execute(
            "UPDATE transcriptions SET status='queued', error_code=NULL WHERE id=?", (tr_id,)
        )
    fresh = ScriptedEngine()
    Worker(store, blobs, fresh, config).run(burst=True)
    done = store.get_transcription("t", tr_id)
    assert done.status is TranscriptionStatus.COMPLETED
    total_chunks = crashing.calls - 1 + fresh.calls  # the failed call produced nothing
    assert fresh.calls == total_chunks - 3
    doc = service.get_document("t", tr_id)
    times = [w.start for s in doc.segments for w in s.words]
    assert times == sorted(times)
    assert doc.segments[-1].end <= 150.0


def test_failing_job_does_not_stop_the_worker(parts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, blobs, service = parts
    silent = add(service, media.write_audio(tmp_path / "silence.wav", media.silence(4)))
    good = add(service, media.write_audio(tmp_path / "good.wav", speechy(5)))
    assert Worker(store, blobs, ScriptedEngine()).run(burst=True) == 2
    s = store.get_transcription("t", silent)
    assert s.status is TranscriptionStatus.FAILED
    assert s.error is not None and s.error.code == "no_speech"
    assert store.get_transcription("t", good).status is TranscriptionStatus.COMPLETED


def test_model_that_cannot_load_fails_with_model_unavailable(parts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, blobs, service = parts
    tr_id = add(service, media.write_audio(tmp_path / "a.wav", speechy(3)))
    engine = FasterWhisperEngine(str(tmp_path / "no-such-model"))
    Worker(store, blobs, engine).run(burst=True)
    t = store.get_transcription("t", tr_id)
    assert t.status is TranscriptionStatus.FAILED
    assert t.error is not None and t.error.code == "model_unavailable"
    assert "WHISPER_MODEL" in t.error.message


def test_progress_is_recorded_per_chunk(parts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, blobs, service = parts
    tr_id = add(service, media.write_audio(tmp_path / "a.wav", speechy(95)))
    seen: list[float] = []

    class Watching(ScriptedEngine):
        def transcribe(self, audio, options):  # type: ignore[no-untyped-def]
            seen.append(store.get_transcription("t", tr_id).progress)
            return super().transcribe(audio, options)

    Worker(store, blobs, Watching(), WorkerConfig(chunk_max_s=30)).run(burst=True)
    assert seen[0] == 0.0
    assert seen == sorted(seen) and len(set(seen)) == len(seen) > 2
    assert store.get_transcription("t", tr_id).progress == 1.0


def test_single_participant_names_the_speaker(parts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, blobs, service = parts
    wav = media.write_audio(tmp_path / "a.wav", speechy(3))
    one = add(service, wav, {"participants": [{"id": "u1", "name": "Grace"}]})
    two = add(service, wav, {"participants": [{"name": "Grace"}, {"name": "Alan"}]})
    Worker(store, blobs, ScriptedEngine()).run(burst=True)
    assert {s.speaker for s in service.get_document("t", one).segments} == {"Grace"}
    assert {s.speaker for s in service.get_document("t", two).segments} == {"Speaker 1"}
    stored = json.loads(blobs.get_bytes(store.get_transcription("t", one).result.document_key))  # type: ignore[union-attr]
    assert stored["participants"][0]["name"] == "Grace"


def test_language_auto_reaches_the_engine_as_none(parts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, blobs, service = parts
    with (media.write_audio(tmp_path / "a.wav", speechy(3))).open("rb") as fh:
        rec = service.create_recording("t", fh, filename="a.wav", content_type="audio/wav")
    service.request_transcription("t", rec.id, language="auto")
    engine = ScriptedEngine(language="de")
    Worker(store, blobs, engine).run(burst=True)
    assert engine.seen_options[0].language is None
    tr = service.list_transcriptions("t", recording_id=rec.id, limit=5, cursor=None).items[0]
    assert tr.result is not None and tr.result.language == "de"


def test_refused_upload_keeps_nothing(parts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from postcall.errors import MediaError

    store, _, service = parts
    with pytest.raises(MediaError):
        service.create_recording(
            "t", io.BytesIO(b"hello " * 100), filename="x.txt", content_type="text/plain"
        )
    assert not [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert store.list_recordings("t", limit=5, cursor=None).items == []


class Overlapping(ScriptedEngine):
    """A scripted engine that takes two chunks at once and records how many it had."""

    parallelism = 2

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most = 0
        self._turn = threading.Condition()

    def transcribe(self, audio, options):  # type: ignore[no-untyped-def]
        with self._turn:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self._turn.notify_all()
            # The first call waits (with a deadline) for the worker to hand it a partner.
            self._turn.wait_for(lambda: self.most >= 2, timeout=10)
        try:
            return super().transcribe(audio, options)
        finally:
            with self._turn:
                self.in_flight -= 1


def test_an_engine_gets_as_many_chunks_at_once_as_it_takes(parts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, blobs, service = parts
    wav = media.write_audio(tmp_path / "long.wav", speechy(150))
    sequential = add(service, wav)
    Worker(store, blobs, ScriptedEngine(), WorkerConfig(chunk_max_s=30)).run(burst=True)
    parallel = add(service, wav)
    engine = Overlapping()
    Worker(store, blobs, engine, WorkerConfig(chunk_max_s=30)).run(burst=True)
    assert engine.most == 2 and engine.calls > 2
    done = store.get_transcription("t", parallel)
    assert done.status is TranscriptionStatus.COMPLETED and done.progress == 1.0
    # The same transcript, chunks in order, whatever order they finished in.
    one_at_a_time = service.get_document("t", sequential)
    two_at_once = service.get_document("t", parallel)
    assert two_at_once.text == one_at_a_time.text and len(two_at_once.text.split()) > 100
    assert [(s.start, s.text) for s in two_at_once.segments] == [
        (s.start, s.text) for s in one_at_a_time.segments
    ]
