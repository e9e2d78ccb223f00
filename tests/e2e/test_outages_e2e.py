"""Redis or S3 going away under a running service, and coming back on the same port.

A real ``postcall serve`` (and real ``postcall worker`` processes) with the fake timed
engine, a real redis-server (append-only file, fsync'd before every reply: whatever a
client was answered for survives a SIGKILL) and the real S3 test server behind a port
that is unplugged and plugged in again (``tests.contract.unpluggable``).
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from postcall.domain import TranscriptionStatus
from postcall.store.redis import RedisStore
from tests import media
from tests.conftest import ROOT
from tests.contract.redis_server import RedisProcess, redis_process_fixture  # noqa: F401
from tests.contract.s3_server import S3Server, s3_server_fixture  # noqa: F401
from tests.contract.unpluggable import Unpluggable
from tests.e2e.server import Server
from tests.e2e.workers import WorkerProcess, wait_ready
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

KEY = "outage-key"
TENANT = "default"  # the tenant of POSTCALL_API_KEYS
WAITING = "waiting for it to come back"


def base_env(redis: RedisProcess) -> dict[str, str]:
    return {
        "POSTCALL_STORE_URL": redis.url,
        "POSTCALL_API_KEYS": KEY,
        "POSTCALL_ENGINE_FACTORY": "tests.fakes:timed_engine",
        "POSTCALL_TEST_ENGINE_SECONDS": "0.02",
        "POSTCALL_WORKER_POLL_S": "0.05",
        "POSTCALL_WEBHOOK_POLL_S": "0.2",
        # The fake engine lives in tests/; this tree's src first.
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }


def tone(path: Path, seconds: float = 2.0) -> Path:
    t = np.arange(int(seconds * 16000)) / 16000
    return media.write_audio(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


def upload(client: httpx.Client, path: Path) -> httpx.Response:
    with path.open("rb") as fh:
        return client.post("/v1/recordings", files={"file": (path.name, fh, "audio/wav")})


def assert_unavailable(r: httpx.Response, code: str) -> None:
    assert r.status_code == 503, (r.request.method, r.request.url, r.status_code, r.text)
    error = r.json()["error"]
    assert error["code"] == code and error["retryable"] is True, error
    assert int(r.headers["retry-after"]) > 0


def completed(client: httpx.Client, tr_id: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        r = client.get(f"/v1/transcriptions/{tr_id}")
        body: dict[str, Any] = r.json() if r.status_code == 200 else {}
        assert body.get("status") != "failed", body
        return body if body.get("status") == "completed" else None

    return wait_for(done, timeout=timeout, what=f"transcription {tr_id} to complete")


def test_requests_answer_503_while_redis_or_s3_is_down_and_work_resumes_after(
    redis_process: RedisProcess,
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    host, port = s3_server.endpoint_url.removeprefix("http://").split(":")
    plug = Unpluggable((host, int(port)))
    prefix = f"outage-{secrets.token_hex(4)}"
    env = {
        **base_env(redis_process),
        "POSTCALL_BLOB_URL": f"s3://{s3_server.bucket}/{prefix}",
        "AWS_ENDPOINT_URL": plug.url,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_REGION": s3_server.region,
    }
    api = Server(env, tmp_path / "api.log")  # with its in-process worker and dispatcher

    def media_objects() -> int:
        listed = s3_server.client().list_objects_v2(
            Bucket=s3_server.bucket, Prefix=f"{prefix}/media/"
        )
        return int(listed["KeyCount"])

    wav = tone(tmp_path / "tone.wav")
    try:
        with api.client(KEY, timeout=60) as c:
            r = upload(c, wav)
            assert r.status_code == 201, r.text
            rec = r.json()["id"]
            first = c.post(f"/v1/recordings/{rec}/transcribe", json={}).json()["transcriptionId"]
            completed(c, first)

            # --- Redis goes away ------------------------------------------------------
            redis_process.stop()
            for r in (
                c.get(f"/v1/recordings/{rec}"),
                c.get("/v1/recordings"),
                c.get(f"/v1/transcriptions/{first}"),
                c.post(f"/v1/recordings/{rec}/transcribe", json={}),
                upload(c, wav),
                c.delete(f"/v1/recordings/{rec}"),
                c.get(f"/api/v1/transcript/{first}/"),
                c.get("/v1/webhooks/endpoints"),
            ):
                assert_unavailable(r, "store_unavailable")
            assert media_objects() == 1  # the refused upload left no media behind
            assert c.get("/metrics").status_code == 200  # the process's own still answer

            redis_process.start()  # the same port
            wait_for(
                lambda: c.get(f"/v1/recordings/{rec}").status_code == 200,
                timeout=30,
                what="requests to succeed again",
            )
            second = c.post(f"/v1/recordings/{rec}/transcribe", json={})
            assert second.status_code == 202, second.text
            completed(c, second.json()["transcriptionId"])  # the worker resumed
            listed = c.get("/v1/recordings").json()["data"]
            assert [x["id"] for x in listed] == [rec]  # nothing half-stored

            # --- S3 goes away ---------------------------------------------------------
            waits = api.log().count(WAITING)
            plug.unplug()
            assert_unavailable(upload(c, wav), "blobs_unavailable")
            assert_unavailable(c.get(f"/v1/transcriptions/{first}"), "blobs_unavailable")
            assert_unavailable(c.delete(f"/v1/recordings/{rec}"), "blobs_unavailable")
            assert c.get(f"/v1/recordings/{rec}").status_code == 200  # nothing was deleted
            # The store answers: a transcription is queued, and waits for its media.
            third = c.post(f"/v1/recordings/{rec}/transcribe", json={})
            assert third.status_code == 202, third.text
            third_id = third.json()["transcriptionId"]
            wait_for(
                lambda: api.log().count(WAITING) > waits,
                timeout=30,
                what="the worker to wait for the blob store",
            )
            assert c.get(f"/v1/transcriptions/{third_id}").json()["status"] == "queued"

            plug.plug()
            done = completed(c, third_id)
            assert done["status"] == "completed"
            listed = c.get("/v1/recordings").json()["data"]
            assert [x["id"] for x in listed] == [rec]
            assert media_objects() == 1
    finally:
        api.stop()
        plug.unplug()
    log = api.log()
    assert "Traceback" not in log, log
    # Each outage logged once, not once per try: Redis by the in-process worker and the
    # dispatcher, S3 by the worker; and their ends.
    assert log.count(WAITING) == 3, log
    assert log.count("answer again") == 3, log


def test_redis_killed_and_restarted_under_load_loses_no_accepted_job(
    redis_process: RedisProcess, tmp_path: Path
) -> None:
    env = {
        **base_env(redis_process),
        "POSTCALL_BLOB_URL": f"file://{tmp_path / 'blobs'}",
        "POSTCALL_LEASE_S": "4",
        "POSTCALL_MAX_TRANSCRIPTS_PER_RECORDING": "100000",
    }
    api = Server(env, tmp_path / "api.log", "--no-worker")
    workers = [WorkerProcess(env, tmp_path / f"w{i}.log") for i in range(2)]
    accepted: list[str] = []
    refused: list[int] = []
    unexpected: list[str] = []
    stop = threading.Event()
    try:
        wait_ready(workers)
        with api.client(KEY) as c:
            r = upload(c, tone(tmp_path / "tone.wav", seconds=1.0))
            assert r.status_code == 201, r.text
            rec = r.json()["id"]

        def create_jobs() -> None:
            with api.client(KEY, timeout=30) as client:
                while not stop.is_set():
                    try:
                        r = client.post(f"/v1/recordings/{rec}/transcribe", json={})
                    except httpx.HTTPError as exc:
                        unexpected.append(f"{type(exc).__name__}: {exc}")
                        continue
                    if r.status_code == 202:
                        accepted.append(r.json()["transcriptionId"])
                    elif r.status_code == 503 and r.json()["error"]["retryable"] is True:
                        refused.append(r.status_code)
                    else:
                        unexpected.append(f"{r.status_code} {r.text}")

        clients = [threading.Thread(target=create_jobs, daemon=True) for _ in range(3)]
        for t in clients:
            t.start()
        wait_for(lambda: len(accepted) >= 20, timeout=60, what="jobs before the restart")
        redis_process.stop(kill=True)
        wait_for(lambda: len(refused) >= 5, timeout=30, what="503s while Redis is down")
        before = len(accepted)
        redis_process.start()
        wait_for(lambda: len(accepted) >= before + 20, timeout=60, what="jobs after it")
        stop.set()
        for t in clients:
            t.join(timeout=60)
        assert unexpected == []

        store = RedisStore.from_url(redis_process.url)
        try:

            def statuses() -> dict[str, TranscriptionStatus]:
                out: dict[str, TranscriptionStatus] = {}
                cursor = None
                while True:
                    page = store.list_transcriptions(
                        TENANT, recording_id=rec, limit=500, cursor=cursor
                    )
                    out.update({t.id: t.status for t in page.items})
                    if page.next_cursor is None:
                        return out
                    cursor = page.next_cursor

            def all_done() -> dict[str, TranscriptionStatus] | None:
                now = statuses()
                done = all(s is TranscriptionStatus.COMPLETED for s in now.values())
                return now if done and set(accepted) <= set(now) else None

            final = wait_for(all_done, timeout=180, interval=0.5, what="every job to complete")
        finally:
            store.close()
        # Every job a client was told of (202) is there and completed; so is any other
        # (a write Redis kept while its answer was lost), none stuck in the queue.
        assert set(accepted) <= set(final)
        assert all(w.alive() for w in workers)
    finally:
        stop.set()
        for w in workers:
            w.kill()
        api.stop()
    for w in workers:
        assert "Traceback" not in w.log(), w.log()
    assert any(WAITING in w.log() for w in workers)
