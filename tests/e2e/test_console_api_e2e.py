"""The API under the console against a real server and the real model: queue position
and ETA while jobs wait, the audio by HTTP Range, a renamed speaker in the SRT, and a
failed transcription retried under its id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import srt

from postcall import wiring
from postcall.domain import Transcription, TranscriptionOptions, TranscriptionStatus, new_id, utcnow
from postcall.settings import Settings
from tests.conftest import clip
from tests.e2e.server import Server, model_server
from tests.helpers import wait_for, wer

pytestmark = pytest.mark.e2e

KEY = "e2e-console-key"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, whisper_model_dir: str) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("console-e2e")
    server = model_server(root, whisper_model_dir, KEY)
    yield server, root / "data"
    server.stop()


def done(c: httpx.Client, tr_id: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body: dict[str, Any] = c.get(f"/v1/transcriptions/{tr_id}").json()
        return body if body["status"] in ("completed", "failed") else None

    return wait_for(probe, timeout=180, what=f"transcription {tr_id}")


def test_queue_media_rename_and_retry(site: Any, testdata: Path) -> None:
    server, data_dir = site
    assert isinstance(server, Server)
    with server.client(KEY) as c, (testdata / "jfk.flac").open("rb") as fh:
        meta = '{"participants": [{"id": "1", "name": "JFK"}]}'
        r = c.post("/v1/recordings", files={"file": ("jfk.flac", fh)}, data={"metadata": meta})
        assert r.status_code == 201, r.text
        rec = r.json()["id"]

        # Three jobs at once: while the first runs, the last waits with its place.
        ids = [c.post(f"/v1/recordings/{rec}/transcribe").json()["transcriptionId"] for _ in "abc"]
        last = c.get(f"/v1/transcriptions/{ids[2]}").json()
        if last["status"] == "queued":
            assert last["queuePosition"] in (1, 2, 3)
            assert "etaSeconds" in last  # null until a job has run here
        for tr in ids:
            assert done(c, tr)["status"] == "completed"
        # Now jobs have run: a new one gets an estimate while it waits or runs.
        fresh = c.post(f"/v1/recordings/{rec}/transcribe").json()["transcriptionId"]
        seen = c.get(f"/v1/transcriptions/{fresh}").json()
        if seen["status"] in ("queued", "processing"):
            assert isinstance(seen["etaSeconds"], int | float) and seen["etaSeconds"] >= 0
        done(c, fresh)

        # The audio, by ranges, over real HTTP; and through a key-less media link.
        size = (testdata / "jfk.flac").stat().st_size
        part = c.get(f"/v1/recordings/{rec}/media", headers={"Range": "bytes=4-15"})
        assert part.status_code == 206 and part.headers["content-range"] == f"bytes 4-15/{size}"
        assert part.content == (testdata / "jfk.flac").read_bytes()[4:16]
        link = c.get(f"/v1/recordings/{rec}/media_link").json()["url"]
        assert httpx.get(link).content == (testdata / "jfk.flac").read_bytes()

        # Rename the speaker: every format follows.
        renamed = {"participants": [{"id": "1", "name": "John F. Kennedy"}]}
        assert c.patch(f"/v1/recordings/{rec}", json={"metadata": renamed}).status_code == 200
        subtitles = c.get(f"/v1/transcriptions/{ids[0]}/transcript", params={"format": "srt"})
        cues = list(srt.parse(subtitles.text))
        assert cues and all(cue.content.startswith("John F. Kennedy: ") for cue in cues)

        # A failed transcription runs again under its id, and the real worker finishes it.
        comps = wiring.build(Settings(data_dir=data_dir), with_worker=False)
        now = utcnow()
        failed = Transcription(
            id=new_id("tr"),
            recording_id=rec,
            tenant="default",
            status=TranscriptionStatus.FAILED,
            options=TranscriptionOptions(language="en"),
            created_at=now,
            updated_at=now,
            attempts=3,
        )
        comps.store.add_transcription(failed)
        comps.store.close()
        count = len(c.get(f"/v1/recordings/{rec}/transcriptions").json()["data"])
        r = c.post(f"/v1/transcriptions/{failed.id}/retry")
        assert r.status_code == 202, r.text
        finished = done(c, failed.id)
        assert finished["status"] == "completed"
        spoken = " ".join(line.split(": ", 1)[1] for line in finished["text"].splitlines())
        assert wer(clip("jfk.flac")["text"], spoken) < 0.25
        assert len(c.get(f"/v1/recordings/{rec}/transcriptions").json()["data"]) == count
