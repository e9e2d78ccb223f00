"""The Recall-style API in-process: real SQLite store and local blobs, a scripted engine."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from postcall import wiring
from postcall.domain import SpeakerMode
from postcall.signing import LinkSigner
from postcall.transcripts import LINK_KIND, SECRET_NAME
from tests.fakes import ScriptedEngine
from tests.media import write_audio
from tests.unit.test_api import make_client, tone, upload

STARTED = "2026-03-01T10:00:00+00:00"
META = {
    "started_at": STARTED,
    "participants": [{"id": "7", "name": "Ada", "is_host": True, "platform": "zoom"}],
}


@pytest.fixture
def wav(tmp_path: Path) -> bytes:
    return write_audio(tmp_path / "tone.wav", tone(3)).read_bytes()


@pytest.fixture
def api(data_dir: Path) -> Iterator[tuple[TestClient, wiring.Components]]:
    client, comps = make_client(data_dir)
    yield client, comps
    comps.store.close()


def create(client: TestClient, rec_id: str, **body: Any) -> Any:
    return client.post(f"/api/v1/recording/{rec_id}/create_transcript/", json=body)


def engine(comps: wiring.Components) -> ScriptedEngine:
    assert comps.workers is not None
    e = comps.workers.workers[0].engine
    assert isinstance(e, ScriptedEngine)
    return e


def run_worker(comps: wiring.Components) -> int:
    assert comps.workers is not None
    return comps.workers.workers[0].run(burst=True)


def test_create_poll_and_download(api: Any, wav: bytes) -> None:
    client, comps = api
    rec = upload(client, wav, metadata=json.dumps(META)).json()
    body = {
        "provider": {"postcall": {"language": "en", "prompt": "Ada, Lovelace"}},
        "diarization": {"use_separate_streams_when_available": True},
        "metadata": {"crm_id": "42"},
    }
    r = create(client, rec["id"], **body)
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["id"].startswith("tr_")
    assert t["status"]["code"] == "processing" and t["status"]["sub_code"] is None
    assert t["status"]["queue_position"] == 1  # postcall's addition: where it waits
    assert t["status"]["eta_seconds"] is None  # no job has run yet: unknown
    assert t["recording"] == {"id": rec["id"], "metadata": META}
    assert t["metadata"] == {"crm_id": "42"}
    assert t["provider"] == body["provider"] and t["diarization"] == body["diarization"]
    assert t["expires_at"] is None and t["data"]["download_url"] is None

    assert run_worker(comps) == 1
    assert engine(comps).seen_options[0].prompt == "Ada, Lovelace"
    done = client.get(f"/api/v1/transcript/{t['id']}/").json()
    assert done["status"]["code"] == "done"
    assert {k: done[k] for k in ("id", "metadata", "provider", "created_at")} == {
        k: t[k] for k in ("id", "metadata", "provider", "created_at")
    }
    url = done["data"]["download_url"]
    assert url.startswith("http://testserver/api/v1/transcript/")
    # The link is the credential: no API key needed.
    got = client.get(url, headers={"Authorization": ""})
    assert got.status_code == 200, got.text
    blocks = got.json()
    assert len(blocks) == 1
    assert blocks[0]["participant"] == {
        "id": "7",
        "name": "Ada",
        "is_host": True,
        "platform": "zoom",
        "extra_data": {},
    }
    words = blocks[0]["words"]
    assert [w["text"] for w in words] == ["w0", "w1", "w2"]
    first = words[0]
    assert first["start_timestamp"]["relative"] == pytest.approx(0.1)
    assert first["end_timestamp"]["relative"] == pytest.approx(0.9)
    assert first["start_timestamp"]["absolute"].startswith("2026-03-01T10:00:00.1")


def test_absolute_times_are_null_without_a_start_time(api: Any, wav: bytes) -> None:
    client, comps = api
    rec = upload(client, wav).json()
    t = create(client, rec["id"]).json()
    run_worker(comps)
    url = client.get(f"/api/v1/transcript/{t['id']}/").json()["data"]["download_url"]
    words = client.get(url).json()[0]["words"]
    assert all(w["start_timestamp"]["absolute"] is None for w in words)
    assert client.get(url).json()[0]["participant"]["name"] == "Speaker 1"


def test_signed_links_refuse_tampering_expiry_and_other_objects(api: Any, wav: bytes) -> None:
    client, comps = api
    rec = upload(client, wav).json()
    ids = [create(client, rec["id"]).json()["id"] for _ in range(2)]
    run_worker(comps)
    run_worker(comps)
    url = client.get(f"/api/v1/transcript/{ids[0]}/").json()["data"]["download_url"]
    assert client.get(url).status_code == 200
    base, token = url.split("?token=")
    for bad in (
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # signature changed
        "x" + token[1:],  # payload changed
        token.split(".")[0],  # no signature
        "",
    ):
        r = client.get(f"{base}?token={bad}")
        assert r.status_code == 403, bad
        assert r.json()["error"]["code"] == "forbidden"
    # A valid token for one transcript does not open another.
    other = url.replace(ids[0], ids[1])
    assert client.get(other).status_code == 404
    # Expired: the same server secret, signed an hour ago with a one-minute lifetime.
    secret = comps.store.server_secret(SECRET_NAME, "unused")
    old = LinkSigner(lambda: secret, clock=lambda: time.time() - 3600)
    expired = old.sign(LINK_KIND, "default", ids[0], ttl_s=60)
    r = client.get(f"{base}?token={expired}")
    assert r.status_code == 403 and "expired" in r.json()["error"]["message"]
    fresh = old.sign(LINK_KIND, "default", ids[0], ttl_s=7200)
    assert client.get(f"{base}?token={fresh}").status_code == 200
    # Deleted: the link dies with the transcript.
    assert client.delete(f"/api/v1/transcript/{ids[0]}/").status_code == 204
    assert client.get(url).status_code == 404


def test_configured_secret_key_signs_links(data_dir: Path, wav: bytes) -> None:
    client, comps = make_client(data_dir, secret_key="s3cret-for-all-api-processes")
    rec = upload(client, wav).json()
    t = create(client, rec["id"]).json()
    run_worker(comps)
    url = client.get(f"/api/v1/transcript/{t['id']}/").json()["data"]["download_url"]
    mine = LinkSigner(lambda: "s3cret-for-all-api-processes")
    token = mine.sign(LINK_KIND, "default", t["id"], ttl_s=60)
    assert client.get(url.split("?")[0] + f"?token={token}").status_code == 200
    other = LinkSigner(lambda: "another-secret").sign(LINK_KIND, "default", t["id"], ttl_s=60)
    assert client.get(url.split("?")[0] + f"?token={other}").status_code == 403
    comps.store.close()


@pytest.mark.parametrize(
    ("provider", "code", "says"),
    [
        ({"assembly_ai_async": {}}, "unsupported_provider", "'postcall'"),
        ({"postcall": {}, "deepgram": {}}, "unsupported_provider", "'postcall'"),
        ({}, "unsupported_provider", "'postcall'"),
        ({"postcall": {"speaker_labels": True}}, "unsupported_option", "language, model, prompt"),
        ({"postcall": {"model": "large-v3"}}, "unsupported_model", "this server runs 'base'"),
        ({"postcall": {"language": "klingon"}}, "unsupported_language", "'auto'"),
        ({"postcall": {"language": 5}}, "unsupported_option", "must be a string"),
        ({"postcall": "en"}, "unsupported_option", "language, model, prompt"),
    ],
)
def test_provider_block_errors_list_what_is_supported(
    api: Any, wav: bytes, provider: dict[str, Any], code: str, says: str
) -> None:
    client, _ = api
    rec = upload(client, wav).json()
    r = create(client, rec["id"], provider=provider)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == code and says in error["message"], error


def test_a_body_that_is_not_json_is_invalid_input(api: Any, wav: bytes) -> None:
    client, _ = api
    rec = upload(client, wav).json()
    for url in (
        f"/api/v1/recording/{rec['id']}/create_transcript/",
        f"/v1/recordings/{rec['id']}/transcribe",
    ):
        r = client.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "invalid_input"


def test_configured_model_and_auto_language_are_accepted(data_dir: Path, wav: bytes) -> None:
    client, comps = make_client(data_dir, whisper_model="/models/faster-whisper-tiny.en")
    rec = upload(client, wav).json()
    for model in ("faster-whisper-tiny.en", "/models/faster-whisper-tiny.en"):
        r = create(client, rec["id"], provider={"postcall": {"model": model, "language": "auto"}})
        assert r.status_code == 200, r.text
        t = comps.service.get_transcription("default", r.json()["id"])
        assert t.options.language == "en"  # auto on an English-only model is English
    r = create(client, rec["id"], provider={"postcall": {"model": "tiny"}})
    assert "faster-whisper-tiny.en" in r.json()["error"]["message"]
    assert "/models" not in r.json()["error"]["message"]
    comps.store.close()


def test_separate_streams_flag_picks_the_speaker_mode(api: Any, tmp_path: Path) -> None:
    client, comps = api
    a = write_audio(tmp_path / "a.wav", tone(2)).read_bytes()
    tracks = json.dumps([{"participant_id": "u1"}, {"participant_id": "u2", "offset": 1}])
    multi = client.post(
        "/v1/recordings",
        files=[("file", ("a.wav", io.BytesIO(a))), ("file", ("b.wav", io.BytesIO(a)))],
        data={"tracks": tracks},
    ).json()
    single = upload(client, a).json()
    timeline = {"speaker_timeline": [{"participant_id": "u1", "start": 0, "end": 2}]}
    timed = upload(client, a, metadata=json.dumps(timeline)).json()

    def mode(rec_id: str, flag: bool) -> SpeakerMode:
        r = create(client, rec_id, diarization={"use_separate_streams_when_available": flag})
        assert r.status_code == 200, r.text
        return comps.service.get_transcription("default", r.json()["id"]).options.speakers

    assert mode(multi["id"], True) is SpeakerMode.SEPARATE_STREAMS
    assert mode(multi["id"], False) is SpeakerMode.SEPARATE_STREAMS  # no mixed audio
    assert mode(single["id"], True) is SpeakerMode.NONE
    assert mode(single["id"], False) is SpeakerMode.NONE
    assert mode(timed["id"], False) is SpeakerMode.TIMELINE
    assert mode(timed["id"], True) is SpeakerMode.TIMELINE


def test_ten_transcripts_per_recording_and_delete_frees_a_place(api: Any, wav: bytes) -> None:
    client, _ = api
    rec = upload(client, wav).json()
    ids = []
    for _ in range(10):
        r = create(client, rec["id"])
        assert r.status_code == 200
        ids.append(r.json()["id"])
    r = create(client, rec["id"])
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "transcript_limit" and "delete one" in error["message"]
    # The native API shares the limit.
    r = client.post(f"/v1/recordings/{rec['id']}/transcribe")
    assert r.status_code == 409 and r.json()["error"]["code"] == "transcript_limit"
    assert client.delete(f"/api/v1/transcript/{ids[3]}/").status_code == 204
    assert client.get(f"/api/v1/transcript/{ids[3]}/").status_code == 404
    assert create(client, rec["id"]).status_code == 200
    assert create(client, rec["id"]).status_code == 409
    other = upload(client, wav).json()
    assert create(client, other["id"]).status_code == 200


def test_limit_is_configurable(data_dir: Path, wav: bytes) -> None:
    client, comps = make_client(data_dir, max_transcripts_per_recording=2)
    rec = upload(client, wav).json()
    assert client.post(f"/v1/recordings/{rec['id']}/transcribe").status_code == 202
    assert create(client, rec["id"]).status_code == 200
    assert client.post(f"/v1/recordings/{rec['id']}/transcribe").status_code == 409
    comps.store.close()


def test_list_paginates_and_filters(api: Any, wav: bytes) -> None:
    client, comps = api
    first = upload(client, wav).json()
    second = upload(client, wav).json()
    mine = [create(client, first["id"]).json()["id"] for _ in range(2)]
    theirs = [create(client, second["id"]).json()["id"] for _ in range(2)]
    run_worker(comps)  # all four are done
    mine.append(create(client, first["id"]).json()["id"])  # still processing

    def collect(url: str) -> list[str]:
        seen: list[str] = []
        pages = 0
        next_url: str | None = url
        while next_url:
            page = client.get(next_url).json()
            assert page["previous"] is None
            seen += [t["id"] for t in page["results"]]
            next_url = page["next"]
            pages += 1
        assert pages < 10
        return seen

    everything = collect("/api/v1/transcript/?limit=2")
    assert everything == [mine[2], *reversed(theirs), mine[1], mine[0]]
    assert collect(f"/api/v1/transcript/?limit=2&recording_id={first['id']}") == mine[::-1]
    done = collect("/api/v1/transcript/?limit=1&status_code=done")
    assert done == [*reversed(theirs), mine[1], mine[0]]
    assert collect("/api/v1/transcript/?limit=3&status_code=processing") == [mine[2]]
    assert collect(f"/api/v1/transcript/?recording_id={second['id']}&status_code=processing") == []
    assert collect("/api/v1/transcript/?status_code=deleted") == []
    assert collect("/api/v1/transcript/?recording_id=rec_missing") == []
    page = client.get("/api/v1/transcript/?status_code=done").json()
    assert page["results"][0]["data"]["download_url"].startswith("http://testserver/")
    assert client.get("/api/v1/transcript/?status_code=lost").status_code == 422


def test_failed_transcript_has_a_sub_code(api: Any, tmp_path: Path) -> None:
    client, comps = api
    silent = write_audio(tmp_path / "silence.wav", 0 * tone(2)).read_bytes()
    rec = upload(client, silent).json()
    t = create(client, rec["id"]).json()
    run_worker(comps)
    status = client.get(f"/api/v1/transcript/{t['id']}/").json()["status"]
    assert status["code"] == "failed" and status["sub_code"] == "no_speech"


def test_idempotent_create_transcript(api: Any, wav: bytes) -> None:
    client, _ = api
    rec = upload(client, wav).json()
    key = {"Idempotency-Key": "create-1"}
    url = f"/api/v1/recording/{rec['id']}/create_transcript/"
    first = client.post(url, json={"metadata": {"a": 1}}, headers=key)
    again = client.post(url, json={"metadata": {"a": 1}}, headers=key)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    listed = client.get(f"/api/v1/transcript/?recording_id={rec['id']}").json()["results"]
    assert len(listed) == 1
    r = client.post(url, json={"metadata": {"a": 2}}, headers=key)
    assert r.status_code == 422 and r.json()["error"]["code"] == "idempotency_key_reused"
    # An error creates nothing and keeps nothing: the same key may be retried.
    bad = {"Idempotency-Key": "create-2"}
    assert client.post(url, json={"provider": {"x": {}}}, headers=bad).status_code == 400
    assert client.post(url, json={}, headers=bad).status_code == 200
    assert client.post(url, json={}, headers={"Idempotency-Key": ""}).status_code == 422


def test_idempotent_upload_survives_a_new_multipart_boundary(api: Any, wav: bytes) -> None:
    client, _ = api
    key = {"Idempotency-Key": "upload-1"}
    # httpx picks a new random boundary for every request.
    first = client.post("/v1/recordings", files={"file": ("a.wav", wav)}, headers=key)
    again = client.post("/v1/recordings", files={"file": ("a.wav", wav)}, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert len(client.get("/v1/recordings").json()["data"]) == 1
    changed = wav[:-1] + bytes([wav[-1] ^ 1])
    r = client.post("/v1/recordings", files={"file": ("a.wav", changed)}, headers=key)
    assert r.status_code == 422
    # Registration and the native transcribe take keys too; keys are per endpoint body.
    tr = f"/v1/recordings/{first.json()['id']}/transcribe"
    one = client.post(tr, json={"language": "en"}, headers={"Idempotency-Key": "tr-1"})
    two = client.post(tr, json={"language": "en"}, headers={"Idempotency-Key": "tr-1"})
    assert one.status_code == two.status_code == 202 and one.json() == two.json()


def test_a_request_still_running_gets_409(api: Any, wav: bytes) -> None:
    client, comps = api
    rec = upload(client, wav).json()
    entered, release = threading.Event(), threading.Event()
    real = comps.service.request_transcription

    def slow(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(10)
        return real(*args, **kwargs)

    comps.service.request_transcription = slow  # type: ignore[method-assign]
    url = f"/api/v1/recording/{rec['id']}/create_transcript/"
    key = {"Idempotency-Key": "slow-1"}
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(client.post(url, json={}, headers=key)))
    first.start()
    try:
        assert entered.wait(10)
        r = client.post(url, json={}, headers=key)
        assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_in_flight"
    finally:
        release.set()
        first.join(10)
    assert results[0].status_code == 200
    assert client.post(url, json={}, headers=key).json() == results[0].json()
