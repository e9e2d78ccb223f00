"""End to end, the Recall-compatible flow: `postcall serve` as a real process, the real
tiny.en model, real speech; the download link fetched like any client would."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from postcall.signing import LinkSigner
from postcall.transcripts import LINK_KIND
from tests.conftest import clip
from tests.e2e.receiver import Receiver, running
from tests.e2e.server import Server, model_server
from tests.helpers import wait_for, wer

pytestmark = pytest.mark.e2e

KEY = "e2e-recall-key"
SECRET = "e2e-shared-link-secret"
STARTED = "2026-02-03T14:00:00+00:00"
PARTICIPANT = {"id": "p1", "name": "John", "is_host": True, "platform": "zoom"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, whisper_model_dir: str) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("recall-e2e")
    srv = model_server(
        root,
        whisper_model_dir,
        KEY,
        POSTCALL_SECRET_KEY=SECRET,
        POSTCALL_ALLOWED_NETWORKS="127.0.0.0/8",  # the webhook receiver runs on loopback
        POSTCALL_WEBHOOK_POLL_S="0.2",
    )
    yield srv
    srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client(KEY) as c:
        yield c


def upload(client: httpx.Client, path: Path, key: str) -> httpx.Response:
    meta = json.dumps({"started_at": STARTED, "participants": [PARTICIPANT]})
    with path.open("rb") as fh:
        return client.post(
            "/v1/recordings",
            files={"file": (path.name, fh)},
            data={"metadata": meta},
            headers={"Idempotency-Key": key},
        )


def poll(client: httpx.Client, transcript_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/api/v1/transcript/{transcript_id}/").json()
        return body if body["status"]["code"] in ("done", "failed") else None

    return wait_for(finished, timeout=180, interval=0.25, what=f"transcript {transcript_id}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with running(Receiver()) as rx:
        yield rx


def test_recall_flow_upload_create_poll_download(
    client: httpx.Client,
    server: Server,
    receiver: Receiver,
    testdata: Path,
    whisper_model_dir: str,
) -> None:
    hook = client.post(
        "/v1/webhooks/endpoints",
        json={"url": receiver.url + "/recall", "events": ["transcript.done", "transcript.failed"]},
    )
    assert hook.status_code == 201, hook.text
    receiver.secrets = [hook.json()["secret"]]
    audio = testdata / "jfk.flac"
    first = upload(client, audio, "upload-jfk-1")
    assert first.status_code == 201, first.text
    retry = upload(client, audio, "upload-jfk-1")  # a client retrying after a timeout
    assert retry.status_code == 201 and retry.json()["id"] == first.json()["id"]
    rec_id = first.json()["id"]

    body = {
        "provider": {
            "postcall": {"language": "en", "model": whisper_model_dir, "prompt": "Americans."}
        },
        "diarization": {"use_separate_streams_when_available": False},
        "metadata": {"ticket": "T-1"},
    }
    r = client.post(f"/api/v1/recording/{rec_id}/create_transcript/", json=body)
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["status"]["code"] == "processing"
    assert created["recording"]["id"] == rec_id
    assert created["recording"]["metadata"]["started_at"] == STARTED

    done = poll(client, created["id"])
    assert done["status"]["code"] == "done", done
    assert done["metadata"] == {"ticket": "T-1"} and done["provider"] == body["provider"]
    url = done["data"]["download_url"]
    assert url.startswith(server.url)

    # transcript.done arrives, signed (verified by the standardwebhooks package), in
    # Recall's payload shape.
    def delivered() -> list[Any]:
        return [r for r in receiver.delivered() if r.json()["event"] == "transcript.done"]

    (event,) = wait_for(delivered, timeout=60, what="transcript.done")
    assert event.verified
    data = event.json()["data"]
    assert data["transcript"] == {"id": created["id"], "metadata": {"ticket": "T-1"}}
    assert data["recording"]["id"] == rec_id
    assert data["data"]["code"] == "done" and data["bot"] is None

    # Fetched like any client would: no API key, the link is the credential.
    got = httpx.get(url, timeout=30)
    assert got.status_code == 200, got.text
    assert got.headers["content-type"].startswith("application/json")
    blocks = got.json()
    assert isinstance(blocks, list) and blocks
    assert all(b["participant"] == {**PARTICIPANT, "extra_data": {}} for b in blocks)
    words = [w for b in blocks for w in b["words"]]
    start = datetime.fromisoformat(STARTED)
    previous = 0.0
    for w in words:
        assert set(w) == {"text", "start_timestamp", "end_timestamp"}
        rel_start, rel_end = w["start_timestamp"]["relative"], w["end_timestamp"]["relative"]
        assert previous - 0.01 <= rel_start <= rel_end <= 11.1
        previous = rel_start
        absolute = datetime.fromisoformat(w["start_timestamp"]["absolute"])
        assert abs(absolute - (start + timedelta(seconds=rel_start))) < timedelta(milliseconds=2)
    spoken = " ".join(w["text"] for w in words)
    assert wer(clip("jfk.flac")["text"], spoken) <= 0.15, spoken

    # The link is refused once tampered with or expired (signed with the server's key,
    # an hour ago, for one minute).
    base, token = url.split("?token=")
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert httpx.get(f"{base}?token={flipped}", timeout=30).status_code == 403
    old = LinkSigner(lambda: SECRET, clock=lambda: time.time() - 3600)
    expired = old.sign(LINK_KIND, "default", created["id"], ttl_s=60)
    r = httpx.get(f"{base}?token={expired}", timeout=30)
    assert r.status_code == 403 and "expired" in r.json()["error"]["message"]

    listed = client.get("/api/v1/transcript/", params={"recording_id": rec_id}).json()
    assert [t["id"] for t in listed["results"]] == [created["id"]]
    assert client.delete(f"/api/v1/transcript/{created['id']}/").status_code == 204
    assert client.get(f"/api/v1/transcript/{created['id']}/").status_code == 404
    assert httpx.get(url, timeout=30).status_code == 404
