"""Webhooks from real ``postcall serve`` processes to a real, verifying receiver: an
event survives SIGKILL of the sender mid-delivery; with the real tiny.en model,
``recording.done``, ``transcript.done`` and ``transcript.failed`` arrive signed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests import media
from tests.e2e.receiver import HOLD, Answer, Received, Receiver, running
from tests.e2e.server import Server, model_server
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

KEY = "webhook-e2e-key"
FAST_HOOKS = {
    "POSTCALL_ALLOWED_NETWORKS": "127.0.0.0/8",
    "POSTCALL_WEBHOOK_SCHEDULE": "0,0.2,0.2,0.2,0.2,0.2",
    "POSTCALL_WEBHOOK_POLL_S": "0.1",
    "POSTCALL_WEBHOOK_TIMEOUT_S": "3",
    "POSTCALL_WEBHOOK_LEASE_S": "4",
}


def client_for(server: Server) -> httpx.Client:
    return server.client(KEY)


def add_endpoint(client: httpx.Client, url: str, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/webhooks/endpoints", json={"url": url, **body})
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


def upload(client: httpx.Client, path: Path, **fields: str) -> str:
    with path.open("rb") as fh:
        r = client.post("/v1/recordings", files={"file": (path.name, fh)}, data=fields)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def tone(path: Path) -> Path:
    t = np.arange(16000) / 16000
    return media.write_audio(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


def test_a_sender_killed_mid_delivery_loses_nothing(tmp_path: Path) -> None:
    env = {
        "POSTCALL_DATA_DIR": str(tmp_path / "data"),
        "POSTCALL_API_KEYS": KEY,
        **FAST_HOOKS,
    }

    def respond(n: int, _r: Received) -> Answer:
        return HOLD if n == 1 else (200, {})

    with running(Receiver(respond=respond)) as rx:
        first = Server(env, tmp_path / "first.log", "--no-worker")
        try:
            with client_for(first) as c:
                rx.secrets = [add_endpoint(c, rx.url + "/hooks")["secret"]]
                rec_id = upload(c, tone(tmp_path / "tone.wav"))
            wait_for(lambda: rx.received, timeout=15, what="the first attempt")
            first.proc.kill()  # SIGKILL while the receiver holds the request open
            first.proc.wait(10)
        finally:
            first.stop()
        rx.release()
        second = Server(env, tmp_path / "second.log", "--no-worker")
        try:
            wait_for(lambda: len(rx.received) >= 2, timeout=20, what="the retried delivery")
            held, retried = rx.received[0], rx.received[1]
            assert held.verified and retried.verified
            assert retried.id == held.id and retried.body == held.body
            assert retried.json()["event"] == "recording.done"
            assert retried.json()["data"]["recording"]["id"] == rec_id
            with client_for(second) as c:

                def succeeded() -> dict[str, Any] | None:
                    r = c.get(f"/v1/webhooks/events/{held.id}/deliveries")
                    d: dict[str, Any] = r.json()["data"][0]
                    return d if d["status"] == "succeeded" else None

                delivery = wait_for(succeeded, timeout=10, what="the logged success")
            assert delivery["attempts"][-1]["responseCode"] == 200
        finally:
            second.stop()


@pytest.fixture(scope="module")
def receiver() -> Any:
    with running(Receiver()) as rx:
        yield rx


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, whisper_model_dir: str) -> Any:
    srv = model_server(tmp_path_factory.mktemp("hooks"), whisper_model_dir, KEY, **FAST_HOOKS)
    yield srv
    srv.stop()


def events_for(rx: Receiver, key: str, value: str) -> list[Received]:
    found = []
    for r in rx.delivered():
        data = r.json()["data"]
        if data.get(key, {}).get("id") == value:
            found.append(r)
    return found


def test_transcription_events_arrive_signed(
    server: Server, receiver: Receiver, testdata: Path, tmp_path: Path
) -> None:
    with client_for(server) as c:
        receiver.secrets = [add_endpoint(c, receiver.url + "/hooks")["secret"]]
        rec_id = upload(c, testdata / "jfk.flac", metadata='{"crm_id": "call-7"}')
        r = c.post(f"/v1/recordings/{rec_id}/transcribe", json={})
        assert r.status_code == 202, r.text
        tr_id = r.json()["transcriptionId"]
        quiet = media.write_audio(tmp_path / "quiet.wav", media.silence(6))
        silent_rec = upload(c, quiet)
        silent_tr = c.post(f"/v1/recordings/{silent_rec}/transcribe", json={}).json()[
            "transcriptionId"
        ]

    done = wait_for(
        lambda: events_for(receiver, "transcript", tr_id), timeout=180, what="transcript.done"
    )
    (recorded,) = [
        r
        for r in events_for(receiver, "recording", rec_id)
        if r.json()["event"] == "recording.done"
    ]
    assert all(r.verified for r in receiver.received)
    assert recorded.json() == {
        "event": "recording.done",
        "data": {
            "data": {
                "code": "done",
                "sub_code": None,
                "updated_at": recorded.json()["data"]["data"]["updated_at"],
            },
            "recording": {"id": rec_id, "metadata": {"crm_id": "call-7"}},
            "bot": None,
        },
    }
    (finished,) = done
    body = finished.json()
    assert body["event"] == "transcript.done"
    assert body["data"]["data"]["code"] == "done" and body["data"]["data"]["sub_code"] is None
    assert body["data"]["transcript"] == {"id": tr_id, "metadata": {}}
    assert body["data"]["recording"] == {"id": rec_id, "metadata": {"crm_id": "call-7"}}
    assert body["data"]["bot"] is None

    (failed,) = wait_for(
        lambda: events_for(receiver, "transcript", silent_tr), timeout=180, what="the failure"
    )
    body = failed.json()
    assert failed.verified and body["event"] == "transcript.failed"
    assert body["data"]["data"]["code"] == "failed"
    assert body["data"]["data"]["sub_code"] == "no_speech"
    assert body["data"]["transcript"]["id"] == silent_tr
    assert body["data"]["recording"]["id"] == silent_rec
