"""The worker goes by decoded length, not the header: limit, split plan and progress.

Real SQLite store, local blobs and media with lying headers; a scripted engine.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from postcall.blobs.local import LocalBlobStore
from postcall.domain import TranscriptionStatus
from postcall.engines.base import EngineOptions, EngineResult
from postcall.service import Limits, Service
from postcall.store.sqlite import SqliteStore
from postcall.worker import Worker, WorkerConfig
from tests import hostile_media as hostile
from tests import media
from tests.fakes import ScriptedEngine

Parts = tuple[SqliteStore, LocalBlobStore, Service]


@pytest.fixture
def parts(tmp_path: Path) -> Parts:
    store = SqliteStore(tmp_path / "db.sqlite")
    blobs = LocalBlobStore(tmp_path / "blobs")
    return store, blobs, Service(store, blobs, limits=Limits(max_duration_s=60))


def add(service: Service, path: Path) -> str:
    with path.open("rb") as fh:
        rec = service.create_recording("t", fh, filename=path.name, content_type="audio/x")
    assert rec.media.duration == pytest.approx(11.0, abs=0.1) or path.name == "good.wav"
    return service.request_transcription("t", rec.id, language="en").id


@pytest.mark.parametrize("make", [hostile.lying_flac, hostile.lying_wav], ids=["flac", "wav"])
def test_a_file_longer_than_its_header_fails_the_job_before_any_inference(
    parts: Parts, tmp_path: Path, make: object
) -> None:
    store, blobs, service = parts
    liar = add(service, make(tmp_path / "liar", holds_s=220.0, claims_s=11.0))  # type: ignore[operator]
    good = add(service, media.write_audio(tmp_path / "good.wav", hostile.tone(3.0)))
    engine = ScriptedEngine()
    assert Worker(store, blobs, engine, WorkerConfig(max_duration_s=60)).run(burst=True) == 2
    failed = store.get_transcription("t", liar)
    assert failed.status is TranscriptionStatus.FAILED
    assert failed.error is not None and failed.error.code == "duration_exceeded"
    assert "60 s" in failed.error.message
    assert engine.calls == 1  # the good job's one chunk; the liar reached no engine
    assert store.get_transcription("t", good).status is TranscriptionStatus.COMPLETED


def speechy(seconds: float) -> npt.NDArray[np.float32]:
    """A tone with a 1 s pause every 7 s, so that chunks cut at pauses."""
    signal = hostile.tone(seconds)
    t = np.arange(signal.size) / hostile.RATE
    signal[(t % 7.0) > 6.0] = 0
    return signal


def test_progress_and_the_transcript_go_by_the_decoded_length(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "db.sqlite")
    blobs = LocalBlobStore(tmp_path / "blobs")
    service = Service(store, blobs)
    path = tmp_path / "liar.wav"
    path.write_bytes(
        hostile.wav_bytes(speechy(95.0), data_size=0xFFFFFFFF, fact_samples=11 * 16000)
    )
    tr_id = add(service, path)
    seen: list[float] = []

    class Watching(ScriptedEngine):
        def transcribe(
            self, audio: npt.NDArray[np.float32], options: EngineOptions
        ) -> EngineResult:
            seen.append(store.get_transcription("t", tr_id).progress)
            return super().transcribe(audio, options)

    Worker(store, blobs, Watching(), WorkerConfig(chunk_max_s=30)).run(burst=True)
    done = store.get_transcription("t", tr_id)
    assert done.status is TranscriptionStatus.COMPLETED
    # By the header (11 s) progress would sit at 0.99 after the first chunk.
    assert len(seen) >= 3 and seen == sorted(seen) and len(set(seen)) == len(seen)
    assert seen[-1] < 0.9
    document = service.get_document("t", tr_id)
    assert document.duration == pytest.approx(95.0, abs=0.1)
    assert document.segments[-1].end > 80.0


def test_the_split_planner_goes_by_the_decoded_length(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="postcall.unit_worker")
    store = SqliteStore(tmp_path / "db.sqlite")
    blobs = LocalBlobStore(tmp_path / "blobs")
    service = Service(store, blobs)
    path = tmp_path / "liar.wav"
    path.write_bytes(
        hostile.wav_bytes(speechy(95.0), data_size=0xFFFFFFFF, fact_samples=11 * 16000)
    )
    tr_id = add(service, path)
    config = WorkerConfig(chunk_max_s=30, split_min_s=20, unit_s=30)
    Worker(store, blobs, ScriptedEngine(), config).run(burst=True)
    assert store.get_transcription("t", tr_id).status is TranscriptionStatus.COMPLETED
    units = [r for r in caplog.records if re.match(r"unit tr_\w+#\d+ done", r.getMessage())]
    assert len(units) >= 3  # by the header (11 s) the job would not have been split
    document = service.get_document("t", tr_id)
    assert document.duration == pytest.approx(95.0, abs=0.1)
    assert document.segments[-1].end > 80.0
