"""One recording, many workers: range decoding, planning, and worker threads sharing a job."""

from __future__ import annotations

import itertools
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from postcall import audio, split
from postcall.blobs.local import LocalBlobStore
from postcall.domain import TranscriptDocument, TranscriptionStatus
from postcall.pipeline import SOURCE_STRIDE, Source
from postcall.service import Service
from postcall.store.sqlite import SqliteStore
from postcall.worker import Worker, WorkerConfig, WorkerPool
from tests import media
from tests.fakes import ScriptedEngine, TimedEngine
from tests.helpers import wait_for
from tests.unit.test_worker import speechy

# Units of at most 40 s for recordings of more than 60 s; chunks as long as units.
CONFIG = WorkerConfig(chunk_max_s=40, unit_s=40, split_min_s=60, lease_s=10, poll_s=0.05)


@pytest.mark.parametrize(
    ("name", "codec", "container"),
    [("a.wav", "pcm_s16le", None), ("a.mp3", "mp3", None), ("a.m4a", "aac", "mp4")],
)
def test_a_stretch_decodes_to_the_same_samples_as_the_whole(
    tmp_path: Path, name: str, codec: str, container: str | None
) -> None:
    t = np.arange(16000 * 40) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t))).astype(
        np.float32
    )
    path = media.write_audio(tmp_path / name, tone, codec=codec, container=container)
    whole = np.concatenate(list(audio.decode(path)))
    for start, end in [(17.25, 29.5), (0.4, 2.0), (33.0, None)]:
        part = np.concatenate(list(audio.decode(path, start=start, end=end, block_s=3)))
        ref = whole[round(start * 16000) : None if end is None else round(end * 16000)]
        assert part.size == ref.size
        np.testing.assert_allclose(part, ref, atol=1e-4)
    assert list(audio.decode(path, start=60.0, end=70.0)) == []  # past the end: empty


def test_a_plan_cuts_in_pauses_into_even_units_and_covers_every_source(tmp_path: Path) -> None:
    wav = media.write_audio(tmp_path / "a.wav", speechy(200, pause_every=3))  # 1 s pauses
    short = media.write_audio(tmp_path / "b.wav", speechy(20))
    sources = [Source("a", 200.0), Source("b", 20.0, offset=5.0)]
    files = {"a": wav, "b": short}

    class Opener:
        def __init__(self, key: str) -> None:
            self.key = key

        def __enter__(self) -> Path:
            return files[self.key]

        def __exit__(self, *exc: object) -> None:
            return None

    units = split.plan(sources, Opener, unit_s=45)  # 200 s: 5 units of about 40 s
    specs = [(u.index, split.UnitSpec.from_json(u.spec)) for u in units]
    first = [s for i, s in specs if i < SOURCE_STRIDE]
    assert [i for i, _ in specs] == [0, 1, 2, 3, 4, SOURCE_STRIDE]
    assert specs[-1][1] == split.UnitSpec(1, 0.0, None)  # a short source is one unit
    assert first[0].start == 0 and first[-1].end is None
    for k, (a, b) in enumerate(itertools.pairwise(first), start=1):
        assert a.end == b.start  # contiguous
        assert a.end is not None
        assert abs(a.end - 40 * k) <= 45 * split.WINDOW_SHARE / 2  # near the ideal place
        assert (a.end % 3) > 2


@pytest.fixture
def parts(tmp_path: Path) -> tuple[SqliteStore, LocalBlobStore, Service]:
    store = SqliteStore(tmp_path / "db.sqlite")
    blobs = LocalBlobStore(tmp_path / "blobs")
    return store, blobs, Service(store, blobs)


def transcribe(
    parts: tuple[SqliteStore, LocalBlobStore, Service],
    rec_id: str,
    engine: ScriptedEngine,
    config: WorkerConfig,
    threads: int,
) -> tuple[str, TranscriptDocument]:
    store, blobs, service = parts
    tr = service.request_transcription("t", rec_id, language="en")
    pool = WorkerPool(store, blobs, engine, config, concurrency=threads)
    pool.start()
    try:
        wait_for(
            lambda: store.get_transcription("t", tr.id).status.terminal,
            timeout=60,
            what="the job to end",
        )
    finally:
        pool.stop(grace_s=10)
    done = store.get_transcription("t", tr.id)
    assert done.status is TranscriptionStatus.COMPLETED, done.error
    return tr.id, service.get_document("t", tr.id)


def texts(doc: TranscriptDocument) -> list[tuple[float, float, str, str]]:
    return [(s.start, s.end, s.speaker or "", s.text) for s in doc.segments]


def unit_runs(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The worker thread of every unit that ran to completion."""
    return [
        r.threadName or ""
        for r in caplog.records
        if r.name == "postcall.unit_worker" and re.match(r"unit tr_\w+#\d+ done", r.getMessage())
    ]


def test_three_workers_share_one_recording_and_get_the_same_document(
    parts: tuple[SqliteStore, LocalBlobStore, Service],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, _, service = parts
    wav = media.write_audio(tmp_path / "long.wav", speechy(200))
    with wav.open("rb") as fh:
        rec = service.create_recording("t", fh, filename="long.wav", content_type="audio/wav")
    one_id, one = transcribe(parts, rec.id, ScriptedEngine(), CONFIG, 1)
    engine = TimedEngine(0.2)
    caplog.clear()
    caplog.set_level(logging.INFO, logger="postcall.unit_worker")
    three_id, three = transcribe(parts, rec.id, engine, CONFIG, 3)
    assert texts(one) == texts(three)
    runs = unit_runs(caplog)
    assert len(set(runs)) == 3, f"every worker should have taken units: {runs}"
    assert engine.calls == len(runs) >= 5
    times = [w.start for s in three.segments for w in s.words]
    assert times == sorted(times) and 190 < times[-1] < 200
    assert store.list_units(three_id) == [] and store.load_chunks(three_id) == {}
    assert store.get_transcription("t", three_id).progress == 1.0
    assert one_id != three_id


def test_progress_counts_units(
    parts: tuple[SqliteStore, LocalBlobStore, Service], tmp_path: Path
) -> None:
    store, _, service = parts
    wav = media.write_audio(tmp_path / "long.wav", speechy(130))
    with wav.open("rb") as fh:
        rec = service.create_recording("t", fh, filename="a.wav", content_type="audio/wav")
    seen: list[float] = []

    class Watching(ScriptedEngine):
        def transcribe(self, samples, options):  # type: ignore[no-untyped-def]
            tr = service.list_transcriptions("t", recording_id=rec.id, limit=1, cursor=None)
            seen.append(tr.items[0].progress)
            return super().transcribe(samples, options)

    tr_id, _ = transcribe(parts, rec.id, Watching(), CONFIG, 1)
    units = len(seen)
    assert units >= 4
    assert seen == pytest.approx([0.98 * i / units for i in range(units)])
    assert store.get_transcription("t", tr_id).progress == 1.0


def test_separate_streams_split_per_track(
    parts: tuple[SqliteStore, LocalBlobStore, Service], tmp_path: Path
) -> None:
    _, _, service = parts
    a = media.write_audio(tmp_path / "a.wav", speechy(100))
    b = media.write_audio(tmp_path / "b.wav", speechy(70, pause_every=5))
    with a.open("rb") as fa, b.open("rb") as fb:
        rec = service.create_multitrack_recording(
            "t",
            [(fa, "a.wav", "audio/wav"), (fb, "b.wav", "audio/wav")],
            tracks=[{"participant_id": "ada"}, {"participant_id": "bob", "offset": 12.5}],
            metadata={"participants": [{"id": "ada", "name": "Ada"}, {"id": "bob", "name": "Bob"}]},
        )
    _, alone = transcribe(parts, rec.id, ScriptedEngine(), CONFIG, 1)
    engine = TimedEngine(0.1)
    _, shared = transcribe(parts, rec.id, engine, CONFIG, 2)
    assert texts(shared) == texts(alone)
    assert engine.calls == 3 + 2

    assert {s.speaker for s in shared.segments} == {"Ada", "Bob"}
    bob = [s for s in shared.segments if s.speaker == "Bob"]
    assert min(s.start for s in bob) >= 12.5


def test_a_failing_unit_fails_the_job(
    parts: tuple[SqliteStore, LocalBlobStore, Service], tmp_path: Path
) -> None:
    store, blobs, service = parts
    wav = media.write_audio(tmp_path / "long.wav", speechy(130))
    with wav.open("rb") as fh:
        rec = service.create_recording("t", fh, filename="a.wav", content_type="audio/wav")
    tr = service.request_transcription("t", rec.id, language="en")
    Worker(store, blobs, ScriptedEngine(fail_on_call=3), CONFIG).run(burst=True)
    failed = store.get_transcription("t", tr.id)
    assert failed.status is TranscriptionStatus.FAILED
    assert failed.error is not None and failed.error.code == "engine_error"
    assert store.list_units(tr.id) == []
    assert store.claim_work("w", lease_s=10, max_attempts=3) is None
