"""The native API in-process: real SQLite store and local blobs, a scripted engine."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from postcall import wiring
from postcall.api.app import create_app
from postcall.settings import Settings
from tests import media
from tests.fakes import ScriptedEngine

KEY = "test-key-123"


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.fixture
def wav(tmp_path: Path) -> bytes:
    return media.write_audio(tmp_path / "tone.wav", tone(3)).read_bytes()


def make_client(data_dir: Path, **overrides: Any) -> tuple[TestClient, wiring.Components]:
    settings = Settings(data_dir=data_dir, api_keys=KEY, **overrides)
    comps = wiring.build(settings, with_worker=True, engine=ScriptedEngine())
    client = TestClient(create_app(comps))
    client.headers["Authorization"] = f"Bearer {KEY}"
    return client, comps


@pytest.fixture
def api(data_dir: Path) -> Iterator[tuple[TestClient, wiring.Components]]:
    client, comps = make_client(data_dir)
    yield client, comps
    comps.store.close()


def upload(client: TestClient, data: bytes, name: str = "a.wav", **fields: str) -> Any:
    return client.post("/v1/recordings", files={"file": (name, io.BytesIO(data))}, data=fields)


def test_upload_probe_and_get(api: Any, wav: bytes) -> None:
    client, _ = api
    r = upload(client, wav, id="call-42", metadata='{"participants": [{"name": "Ada"}]}')
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] == "call-42"
    assert body["duration"] == "3.0"
    assert body["channels"] == 1
    assert body["contentType"] == "audio/x-wav" or body["contentType"].startswith("audio/")
    assert client.get("/v1/recordings/call-42").json() == body
    assert upload(client, wav, id="call-42").json()["error"]["code"] == "conflict"


def test_an_upload_whose_probe_dies_is_refused_and_the_api_serves_on(
    api: Any, wav: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools

    from postcall import decode_child

    client, _ = api
    real = decode_child.probe
    # The probe's child with too little memory to load FFmpeg dies, as on a file that
    # crashes the decoder: the upload is refused, the API process lives on.
    monkeypatch.setattr(decode_child, "probe", functools.partial(real, memory_bytes=64 << 20))
    r = upload(client, wav, id="call-1")
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media", r.text
    assert "decoding the file failed" in r.json()["error"]["message"]
    assert client.get("/v1/recordings/call-1").status_code == 404  # nothing kept
    monkeypatch.setattr(decode_child, "probe", real)
    assert upload(client, wav, id="call-1").status_code == 201


def test_full_flow_with_worker(api: Any, wav: bytes) -> None:
    client, comps = api
    rec = upload(client, wav, metadata='{"participants": [{"id": "7", "name": "Ada"}]}').json()
    r = client.post(f"/v1/recordings/{rec['id']}/transcribe", json={"language": "en"})
    assert r.status_code == 202
    tr = r.json()
    assert tr["status"] == "queued" and tr["transcriptionId"].startswith("tr_")
    assert set(tr) == {"transcriptionId", "status"}
    assert client.get(f"/v1/transcriptions/{tr['transcriptionId']}").json()["status"] == "queued"
    assert comps.workers.workers[0].run(burst=True) == 1
    done = client.get(f"/v1/transcriptions/{tr['transcriptionId']}").json()
    assert done["status"] == "completed"
    assert done["duration"] == "3.0" and done["segmentCount"] == "1"
    assert done["text"] == "[00:00:00] Ada: w0 w1 w2"
    listed = client.get(f"/v1/recordings/{rec['id']}/transcriptions").json()
    assert [t["transcriptionId"] for t in listed["data"]] == [tr["transcriptionId"]]
    doc = client.get(f"/v1/transcriptions/{tr['transcriptionId']}/transcript?format=json").json()
    assert doc["segments"][0]["speaker"] == "Ada"
    assert [w["text"] for w in doc["segments"][0]["words"]] == ["w0", "w1", "w2"]


def test_transcript_before_completion_is_a_conflict(api: Any, wav: bytes) -> None:
    client, _ = api
    rec = upload(client, wav).json()
    tr = client.post(f"/v1/recordings/{rec['id']}/transcribe").json()
    r = client.get(f"/v1/transcriptions/{tr['transcriptionId']}/transcript?format=txt")
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_ready"


def test_auth_schemes(api: Any) -> None:
    client, _ = api
    for header in (f"Bearer {KEY}", f"Token {KEY}", KEY):
        assert client.get("/v1/recordings", headers={"Authorization": header}).status_code == 200
    for header in ("Bearer wrong", "", "Token "):
        r = client.get("/v1/recordings", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert r.json()["error"]["code"] == "unauthorized"


def test_stored_key_is_accepted(api: Any) -> None:
    from postcall.api.deps import hash_key

    client, comps = api
    comps.store.add_api_key(hash_key("pc_stored"), name="x", tenant="default")
    r = client.get("/v1/recordings", headers={"Authorization": "Bearer pc_stored"})
    assert r.status_code == 200


def test_anonymous_only_when_disabled(data_dir: Path) -> None:
    client, comps = make_client(data_dir, auth="disabled")
    del client.headers["Authorization"]
    assert client.get("/v1/recordings").status_code == 200
    comps.store.close()


def test_transcription_endpoints_can_be_disabled(data_dir: Path, wav: bytes) -> None:
    client, comps = make_client(data_dir, transcription_post_enabled=False)
    rec = upload(client, wav).json()
    for method, url in (
        ("POST", f"/v1/recordings/{rec['id']}/transcribe"),
        ("GET", "/v1/transcriptions/tr_x"),
        ("GET", f"/v1/recordings/{rec['id']}/transcriptions"),
        ("GET", "/v1/transcriptions/tr_x/transcript"),
        ("DELETE", "/v1/transcriptions/tr_x"),
    ):
        r = client.request(method, url)
        assert r.status_code == 404, url
        assert "TRANSCRIPTION_POST_ENABLED" in r.json()["error"]["message"]
    comps.store.close()


def test_upload_over_the_cap_is_413_and_keeps_nothing(data_dir: Path, wav: bytes) -> None:
    client, comps = make_client(data_dir, max_upload_bytes=len(wav) - 1)
    r = upload(client, wav)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    assert client.get("/v1/recordings").json()["data"] == []
    assert not [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]
    comps.store.close()


def test_malformed_bodies_name_the_field(api: Any, wav: bytes) -> None:
    client, _ = api
    rec = upload(client, wav).json()
    r = client.post(f"/v1/recordings/{rec['id']}/transcribe", json={"language": 5})
    assert r.status_code == 422 and r.json()["error"]["field"] == "language"
    r = client.post(f"/v1/recordings/{rec['id']}/transcribe", json={"langauge": "en"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "langauge"
    r = upload(client, wav, metadata="{not json")
    assert r.status_code == 422 and r.json()["error"]["field"] == "metadata"
    r = upload(client, wav, id="../../etc/passwd")
    assert r.status_code == 422 and r.json()["error"]["field"] == "id"
    r = client.post("/v1/recordings", data={"metadata": "{}"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "file"
    r = client.get("/v1/transcriptions/tr_x/transcript?format=docx")
    assert r.status_code == 422 and r.json()["error"]["field"] == "format"


def test_pagination(api: Any, wav: bytes) -> None:
    client, _ = api
    ids = [upload(client, wav).json()["id"] for _ in range(5)]
    seen: list[str] = []
    url = "/v1/recordings?limit=2"
    while True:
        page = client.get(url).json()
        seen += [r["id"] for r in page["data"]]
        if not page["nextCursor"]:
            break
        url = f"/v1/recordings?limit=2&cursor={page['nextCursor']}"
    assert sorted(seen) == sorted(ids) and len(seen) == 5


def test_delete_recording_removes_everything(api: Any, wav: bytes, data_dir: Path) -> None:
    client, comps = api
    rec = upload(client, wav).json()
    tr = client.post(f"/v1/recordings/{rec['id']}/transcribe").json()
    comps.workers.workers[0].run(burst=True)
    files = [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]
    assert len(files) == 2  # the media and the transcript document
    assert client.delete(f"/v1/recordings/{rec['id']}").status_code == 204
    assert client.get(f"/v1/recordings/{rec['id']}").status_code == 404
    assert client.get(f"/v1/transcriptions/{tr['transcriptionId']}").status_code == 404
    assert not [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]
    assert client.delete(f"/v1/recordings/{rec['id']}").status_code == 404


def test_delete_transcription(api: Any, wav: bytes) -> None:
    client, comps = api
    rec = upload(client, wav).json()
    tr = client.post(f"/v1/recordings/{rec['id']}/transcribe").json()["transcriptionId"]
    assert client.delete(f"/v1/transcriptions/{tr}").status_code == 204
    assert client.get(f"/v1/transcriptions/{tr}").status_code == 404
    assert comps.workers.workers[0].run(burst=True) == 0


def test_unknown_route_and_ids(api: Any) -> None:
    client, _ = api
    assert client.get("/v1/recordings/nope").json()["error"]["code"] == "not_found"
    assert client.get("/v1/transcriptions/tr_nope").status_code == 404
    assert client.get("/v1/nothing-here").status_code == 404


@pytest.mark.parametrize(
    "speakers",
    [
        {"mode": "diarize", "min_speakers": 3, "max_speakers": 2},
        {"mode": "diarize", "num_speakers": 5, "max_speakers": 4},
        {"mode": "diarize", "num_speakers": 2, "min_speakers": 3},
    ],
)
def test_contradictory_speaker_counts_are_422_at_once(
    api: Any, wav: bytes, speakers: dict[str, Any]
) -> None:
    client, _ = api
    rec = upload(client, wav).json()
    r = client.post(f"/v1/recordings/{rec['id']}/transcribe", json={"speakers": speakers})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "speakers"
    ok = {"mode": "diarize", "min_speakers": 2, "max_speakers": 3, "num_speakers": 2}
    r = client.post(f"/v1/recordings/{rec['id']}/transcribe", json={"speakers": ok})
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("bad", ["call-1\n", "call 1", "-call", "a" * 129])
def test_a_client_id_must_match_whole(api: Any, wav: bytes, bad: str) -> None:
    client, _ = api
    r = upload(client, wav, id=bad)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "id"


def test_a_body_that_is_not_json_says_so(api: Any, wav: bytes) -> None:
    client, _ = api
    rec = upload(client, wav).json()
    r = client.post(
        f"/v1/recordings/{rec['id']}/transcribe",
        content=b'{"language": ',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "body" and "not valid JSON" in error["message"], error


def test_a_locked_sqlite_database_answers_503_and_keeps_nothing(data_dir: Path, wav: bytes) -> None:
    """A write that cannot get SQLite's lock in POSTCALL_SQLITE_BUSY_TIMEOUT_S (another
    process holds it) is a retryable 503, not a 500; the refused upload leaves no file,
    and the same request succeeds once the lock is let go."""
    import sqlite3

    client, comps = make_client(data_dir, sqlite_busy_timeout_s=0.2)
    try:
        assert upload(client, wav).status_code == 201
        blobs = data_dir / "blobs"
        files_before = sorted(p for p in blobs.rglob("*") if p.is_file())
        other = sqlite3.connect(data_dir / "postcall.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            r = upload(client, wav, id="while-locked")
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["code"] == "store_unavailable" and error["retryable"] is True
            assert int(r.headers["retry-after"]) > 0
            assert client.get("/v1/recordings").status_code == 200  # reads go on (WAL)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert sorted(p for p in blobs.rglob("*") if p.is_file()) == files_before
        assert upload(client, wav, id="while-locked").status_code == 201
    finally:
        comps.store.close()
