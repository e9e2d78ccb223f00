"""The API under the console: media with HTTP Range, metadata edits (renaming a
speaker in every format), retry of a failed transcription, queue position and ETA,
and the offline /docs and console pages."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import srt
from fastapi.testclient import TestClient

from postcall import audio, wiring
from postcall.api.app import create_app
from postcall.settings import Settings
from tests import media
from tests.contract.s3_server import S3Server, s3_server_fixture  # noqa: F401
from tests.fakes import ScriptedEngine
from tests.helpers import wait_for
from tests.unit.test_api import KEY, make_client, tone, upload


@pytest.fixture
def api(data_dir: Path) -> Iterator[tuple[TestClient, wiring.Components]]:
    client, comps = make_client(data_dir)
    yield client, comps
    comps.store.close()


@pytest.fixture
def wav(tmp_path: Path) -> bytes:
    return media.write_audio(tmp_path / "tone.wav", tone(3)).read_bytes()


@pytest.fixture
def flaky(data_dir: Path) -> Iterator[tuple[TestClient, wiring.Components]]:
    """An app whose engine fails its first call (and works after)."""
    comps = wiring.build(
        Settings(data_dir=data_dir, api_keys=KEY),
        with_worker=True,
        engine=ScriptedEngine(fail_on_call=1),
    )
    client = TestClient(create_app(comps))
    client.headers["Authorization"] = f"Bearer {KEY}"
    yield client, comps
    comps.store.close()


def run_jobs(comps: wiring.Components) -> int:
    assert comps.workers is not None
    return comps.workers.workers[0].run(burst=True)


def transcribed(client: TestClient, comps: wiring.Components, wav: bytes, **fields: str) -> Any:
    rec = upload(client, wav, **fields).json()
    tr = client.post(f"/v1/recordings/{rec['id']}/transcribe").json()
    assert run_jobs(comps) == 1
    return rec, tr["transcriptionId"]


# --- media ----------------------------------------------------------------------------


def test_media_is_served_whole_and_by_ranges(api: Any, wav: bytes) -> None:
    client, _ = api
    rec = upload(client, wav, id="call").json()
    whole = client.get("/v1/recordings/call/media")
    assert whole.status_code == 200 and whole.content == wav
    assert whole.headers["content-type"].startswith("audio/")
    assert whole.headers["accept-ranges"] == "bytes"
    size = len(wav)
    for header, expected, content_range in (
        ("bytes=0-99", wav[:100], f"bytes 0-99/{size}"),
        ("bytes=100-", wav[100:], f"bytes 100-{size - 1}/{size}"),
        ("bytes=-50", wav[-50:], f"bytes {size - 50}-{size - 1}/{size}"),
        (f"bytes={size - 10}-{size + 500}", wav[-10:], f"bytes {size - 10}-{size - 1}/{size}"),
    ):
        part = client.get("/v1/recordings/call/media", headers={"Range": header})
        assert part.status_code == 206, (header, part.text)
        assert part.content == expected, header
        assert part.headers["content-range"] == content_range
    several = client.get("/v1/recordings/call/media", headers={"Range": "bytes=0-9,20-29"})
    assert several.status_code == 206
    assert several.headers["content-type"].startswith("multipart/byteranges")
    assert wav[:10] in several.content and wav[20:30] in several.content
    past = client.get("/v1/recordings/call/media", headers={"Range": f"bytes={size}-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{size}"
    assert past.json()["error"]["code"] == "range_not_satisfiable"
    # A Range that cannot be parsed is ignored: the whole file (RFC 9110).
    for junk in ("bytes=abc", "pages=1-2", "bytes=9-3"):
        r = client.get("/v1/recordings/call/media", headers={"Range": junk})
        assert r.status_code in (200, 416), (junk, r.status_code)
        if r.status_code == 200:
            assert r.content == wav
    assert client.get("/v1/recordings/nope/media").status_code == 404
    assert rec["id"] == "call"


def test_a_media_link_opens_the_audio_without_a_key(api: Any, wav: bytes) -> None:
    client, _ = api
    upload(client, wav, id="call")
    upload(client, wav, id="other")
    link = client.get("/v1/recordings/call/media_link").json()
    assert link["url"].startswith("http") and "token=" in link["url"]
    anonymous = TestClient(client.app)
    played = anonymous.get(link["url"], headers={"Range": "bytes=0-9"})
    assert played.status_code == 206 and played.content == wav[:10]
    assert anonymous.get("/v1/recordings/call/media").status_code == 401
    token = link["url"].split("token=", 1)[1]
    elsewhere = anonymous.get("/v1/recordings/other/media", params={"token": token})
    assert elsewhere.status_code == 404
    tampered = anonymous.get("/v1/recordings/call/media", params={"token": token[:-2] + "xx"})
    assert tampered.status_code == 403


def test_a_multitrack_recording_plays_as_one_mix(api: Any, tmp_path: Path) -> None:
    client, comps = api
    a = media.write_audio(tmp_path / "a.wav", tone(2)).read_bytes()
    b = media.write_audio(tmp_path / "b.wav", tone(3)).read_bytes()
    tracks = [{"participant_id": "1", "offset": 0}, {"participant_id": "2", "offset": 1.5}]
    r = client.post(
        "/v1/recordings",
        files=[("file", ("a.wav", io.BytesIO(a))), ("file", ("b.wav", io.BytesIO(b)))],
        data={"tracks": json.dumps(tracks), "id": "multi"},
    )
    assert r.status_code == 201, r.text
    mixed = client.get("/v1/recordings/multi/media")
    assert mixed.status_code == 200 and mixed.headers["content-type"] == "audio/ogg"
    path = tmp_path / "mix.ogg"
    path.write_bytes(mixed.content)
    info = audio.probe(path)
    assert info.streams[0].codec == "opus" and abs(info.duration - 4.5) < 0.1
    # Kept: the second request is the same file, and a range of it works.
    assert client.get("/v1/recordings/multi/media").content == mixed.content
    assert client.get("/v1/recordings/multi/media", headers={"Range": "bytes=0-3"}).content == (
        b"OggS"
    )
    # Deleted with the recording.
    kept = list((comps.settings.data_dir).rglob("*.ogg"))
    assert kept
    assert client.delete("/v1/recordings/multi").status_code == 204
    assert not any(p.exists() for p in kept)


# --- metadata edits -----------------------------------------------------------------------


def test_renaming_a_participant_renames_every_format(api: Any, wav: bytes) -> None:
    client, comps = api
    meta = json.dumps({"participants": [{"id": "7", "name": "Ada"}], "title": "Standup"})
    rec, tr = transcribed(client, comps, wav, metadata=meta)
    r = client.patch(
        f"/v1/recordings/{rec['id']}",
        json={"metadata": {"participants": [{"id": "7", "name": "Ada Lovelace"}]}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["metadata"] == {
        "participants": [{"id": "7", "name": "Ada Lovelace"}],
        "title": "Standup",
    }
    base = f"/v1/transcriptions/{tr}/transcript"
    assert "Ada Lovelace: w0 w1 w2" in client.get(base, params={"format": "txt"}).text
    subtitles = list(srt.parse(client.get(base, params={"format": "srt"}).text))
    assert subtitles[0].content.startswith("Ada Lovelace:") or "Ada Lovelace" in (
        subtitles[0].content
    )
    assert "Ada Lovelace" in client.get(base, params={"format": "vtt"}).text
    doc = client.get(base, params={"format": "json"}).json()
    assert doc["speakers"] == ["Ada Lovelace"]
    assert doc["participants"][0]["name"] == "Ada Lovelace"
    assert "Ada Lovelace" in client.get(f"/v1/transcriptions/{tr}").json()["text"]
    recall = client.get(base, params={"format": "recall"}).json()
    assert recall[0]["participant"]["name"] == "Ada Lovelace"
    # null removes a key; keys not named stay.
    r = client.patch(f"/v1/recordings/{rec['id']}", json={"metadata": {"title": None}})
    assert "title" not in r.json()["metadata"] and r.json()["metadata"]["participants"]


def test_a_speaker_without_a_participant_is_named_by_its_label(api: Any, wav: bytes) -> None:
    client, comps = api
    rec, tr = transcribed(client, comps, wav)
    doc = client.get(f"/v1/transcriptions/{tr}/transcript?format=json").json()
    assert doc["speakers"] == ["Speaker 1"]
    named = {"participants": [{"id": "Speaker 1", "name": "Grace"}]}
    assert client.patch(f"/v1/recordings/{rec['id']}", json={"metadata": named}).status_code == 200
    text = client.get(f"/v1/transcriptions/{tr}/transcript?format=txt").text
    assert text == "[00:00:00] Grace: w0 w1 w2"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"metadata": {"participants": "Ada"}}, "metadata"),
        ({"metadata": {"channels": {"3": "u1"}}}, "metadata"),
        ({"metadata": {"speaker_timeline": [{"start": 5, "end": 1, "participant_id": "1"}]}}, None),
        ({"metadata": {"x": "a" * 70_000}}, None),
        ({"metadata": []}, "metadata"),
        ({}, "metadata"),
        ({"metadata": {}, "other": 1}, "other"),
    ],
)
def test_metadata_edits_are_validated_as_on_upload(
    api: Any, wav: bytes, body: dict[str, Any], field: str | None
) -> None:
    client, _ = api
    upload(client, wav, id="call")
    r = client.patch("/v1/recordings/call", json=body)
    assert r.status_code in (413, 422), r.text
    if field is not None:
        assert r.json()["error"]["field"] == field
    assert client.get("/v1/recordings/call").json()["metadata"] == {}


def test_editing_a_missing_recording_is_404(api: Any) -> None:
    client, _ = api
    assert client.patch("/v1/recordings/nope", json={"metadata": {}}).status_code == 404


# --- retry ---------------------------------------------------------------------------------


def test_a_failed_transcription_runs_again_under_its_id(flaky: Any, wav: bytes) -> None:
    client, comps = flaky
    rec = upload(client, wav).json()
    tr = client.post(f"/v1/recordings/{rec['id']}/transcribe").json()["transcriptionId"]
    assert run_jobs(comps) == 1
    failed = client.get(f"/v1/transcriptions/{tr}").json()
    assert failed["status"] == "failed"
    r = client.post(f"/v1/transcriptions/{tr}/retry")
    assert r.status_code == 202, r.text
    again = r.json()
    assert again["transcriptionId"] == tr and again["status"] == "queued"
    assert again["queuePosition"] == 1 and "error" not in again
    assert comps.store.get_transcription("default", tr).attempts == 0
    assert run_jobs(comps) == 1
    done = client.get(f"/v1/transcriptions/{tr}").json()
    assert done["status"] == "completed" and done["text"].endswith("w0 w1 w2")
    listed = client.get(f"/v1/recordings/{rec['id']}/transcriptions").json()["data"]
    assert [t["transcriptionId"] for t in listed] == [tr]
    again = client.post(f"/v1/transcriptions/{tr}/retry")
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_failed"
    assert client.post("/v1/transcriptions/tr_nope/retry").status_code == 404


def test_a_retry_does_not_take_another_place(data_dir: Path, wav: bytes) -> None:
    comps = wiring.build(
        Settings(data_dir=data_dir, api_keys=KEY, max_transcripts_per_recording=1),
        with_worker=True,
        engine=ScriptedEngine(fail_on_call=1),
    )
    client = TestClient(create_app(comps), headers={"Authorization": f"Bearer {KEY}"})
    rec = upload(client, wav).json()
    tr = client.post(f"/v1/recordings/{rec['id']}/transcribe").json()["transcriptionId"]
    run_jobs(comps)
    assert client.post(f"/v1/recordings/{rec['id']}/transcribe").status_code == 409
    assert client.post(f"/v1/transcriptions/{tr}/retry").status_code == 202
    comps.store.close()


# --- queue position and ETA ---------------------------------------------------------------


def test_queue_position_and_eta(api: Any, wav: bytes) -> None:
    client, comps = api
    rec = upload(client, wav).json()
    ids = [
        client.post(f"/v1/recordings/{rec['id']}/transcribe").json()["transcriptionId"]
        for _ in range(3)
    ]
    first = client.get(f"/v1/transcriptions/{ids[0]}").json()
    # No job has run yet: the position is known, the time is not (null, not made up).
    assert first["queuePosition"] == 1 and first["etaSeconds"] is None
    assert client.get(f"/v1/transcriptions/{ids[2]}").json()["queuePosition"] == 3
    comps.store.record_run(60.0, 6.0)  # a recent job: 0.1 s per second of audio

    def estimated() -> Any:  # the queue's pace is read again at most once a second
        got = client.get(f"/v1/transcriptions/{ids[2]}").json()
        return got if got["etaSeconds"] is not None else None

    third = wait_for(estimated, timeout=5, what="an estimate from the recent job")
    # two jobs ahead of 6 s each, then its own 3 s of audio at 0.1
    assert third["etaSeconds"] == pytest.approx(2 * 6.0 + 0.3, abs=0.05)
    listed = client.get(f"/v1/recordings/{rec['id']}/transcriptions").json()["data"]
    assert {t["transcriptionId"]: t["queuePosition"] for t in listed} == {
        ids[0]: 1,
        ids[1]: 2,
        ids[2]: 3,
    }
    assert run_jobs(comps) == 3
    done = client.get(f"/v1/transcriptions/{ids[0]}").json()
    assert "queuePosition" not in done and "etaSeconds" not in done
    assert len(comps.store.recent_runs(10)) == 4  # the worker timed its three jobs


# --- pages -----------------------------------------------------------------------------------


def test_docs_work_offline(api: Any) -> None:
    client, _ = api
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/docs/assets/swagger-ui-bundle.js" in page.text
    assert "http://" not in page.text.replace("http://www.w3.org", "")
    assert "https://" not in page.text
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs/assets/swagger-ui.css").status_code == 200


def test_the_console_is_served_from_the_package(api: Any) -> None:
    client, _ = api
    anonymous = TestClient(client.app)
    page = anonymous.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in ("app.js", "api.js", "list.js", "recording.js", "transcript.js", "ui.js"):
        r = anonymous.get(f"/console/{asset}")
        assert r.status_code == 200, asset
        assert "https://" not in r.text and "http://" not in r.text, asset
    assert anonymous.get("/console/style.css").status_code == 200
    assert anonymous.get("/console/../settings.py").status_code == 404


def test_s3_media_is_a_redirect_to_a_presigned_link(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wav: bytes
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    settings = Settings(
        data_dir=tmp_path / "data",
        api_keys=KEY,
        blob_url=f"s3://{s3_server.bucket}/console-{tmp_path.name}",
    )
    comps = wiring.build(settings, with_worker=False)
    client = TestClient(create_app(comps), headers={"Authorization": f"Bearer {KEY}"})
    assert upload(client, wav, id="call").status_code == 201
    r = client.get("/v1/recordings/call/media", follow_redirects=False)
    assert r.status_code == 307
    location = r.headers["location"]
    assert location.startswith(s3_server.endpoint_url) and "Signature" in location
    part = httpx.get(location, headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == wav[:10]
    comps.store.close()
