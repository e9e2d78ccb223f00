"""Retention through the API in-process (real SQLite store and local blobs, a scripted
engine): ``expires_at`` on Recall objects, media deleted after transcription, webhook
secrets sealed with POSTCALL_SECRET_KEY."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from postcall.settings import Settings
from tests.media import write_audio
from tests.unit.test_api import make_client, tone, upload


@pytest.fixture
def wav(tmp_path: Path) -> bytes:
    return write_audio(tmp_path / "tone.wav", tone(3)).read_bytes()


def test_recall_objects_expire_with_their_recording(data_dir: Path, wav: bytes) -> None:
    client, comps = make_client(data_dir, retention_days=30)
    try:
        rec = upload(client, wav).json()
        made = datetime.fromisoformat(rec["createdAt"])
        r = client.post(f"/api/v1/recording/{rec['id']}/create_transcript/", json={})
        assert r.status_code == 200, r.text
        expires = r.json()["expires_at"]
        assert datetime.fromisoformat(expires) == made + timedelta(days=30)
        got = client.get(f"/api/v1/transcript/{r.json()['id']}/").json()
        assert got["expires_at"] == expires
        listed = client.get("/api/v1/transcript/").json()["results"]
        assert [t["expires_at"] for t in listed] == [expires]
    finally:
        comps.store.close()

    client, comps = make_client(data_dir / "kept")  # no retention: kept until deleted
    try:
        rec = upload(client, wav).json()
        r = client.post(f"/api/v1/recording/{rec['id']}/create_transcript/", json={})
        assert r.json()["expires_at"] is None
    finally:
        comps.store.close()


def test_media_is_deleted_after_transcription_and_the_transcript_stays(
    data_dir: Path, wav: bytes
) -> None:
    client, comps = make_client(data_dir, delete_media_after_transcription=True)
    assert comps.workers is not None
    try:
        rec = upload(client, wav).json()
        media = list((data_dir / "blobs" / "media").iterdir())
        assert len(media) == 1
        tr = client.post(f"/v1/recordings/{rec['id']}/transcribe", json={}).json()
        assert comps.workers.workers[0].run(burst=True) == 1
        done = client.get(f"/v1/transcriptions/{tr['transcriptionId']}").json()
        assert done["status"] == "completed" and done["text"]
        assert not media[0].exists()
        again = client.post(f"/v1/recordings/{rec['id']}/transcribe", json={})
        assert again.status_code == 409 and again.json()["error"]["code"] == "media_deleted"
        assert client.get(f"/v1/recordings/{rec['id']}").status_code == 200
    finally:
        comps.store.close()


def test_retention_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        Settings(retention_days=0)
    with pytest.raises(ValueError):
        Settings(webhook_retention_days=-1)


def test_with_a_secret_key_webhook_secrets_are_stored_sealed(data_dir: Path) -> None:
    client, comps = make_client(
        data_dir, secret_key="the-operators-key", allowed_networks="127.0.0.0/8"
    )
    try:
        r = client.post("/v1/webhooks/endpoints", json={"url": "http://127.0.0.1:9/hook"})
        assert r.status_code == 201, r.text
        made = r.json()
        rotated = client.post(f"/v1/webhooks/endpoints/{made['id']}/rotate_secret").json()
        endpoint = comps.store.get_endpoint("default", made["id"])
        assert endpoint.secret == rotated["secret"]  # the dispatcher signs with it
        assert endpoint.previous_secret == made["secret"]
        files = [data_dir / "postcall.db", data_dir / "postcall.db-wal"]
        raw = b"".join(f.read_bytes() for f in files if f.exists())
        for secret in (made["secret"], rotated["secret"]):
            assert secret.encode() not in raw
    finally:
        comps.store.close()
