"""Scaled mode end to end: API process + 2 worker processes + Redis + an S3 server.

The real tiny.en model and real speech; then the same through WHISPER_URL pointing at
a running `postcall whisper-server`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import clip
from tests.contract.redis_server import RedisServer, redis_server  # noqa: F401
from tests.contract.s3_server import S3Server, s3_server_fixture  # noqa: F401
from tests.e2e.server import Server
from tests.e2e.test_native_e2e import LINE, poll, transcribe, upload
from tests.e2e.workers import WorkerProcess
from tests.helpers import wer

pytestmark = pytest.mark.e2e

KEY = "scaled-key"
CLIPS = ["jfk.flac", "librispeech/1089-134686-0001.wav", "ljspeech/LJ001-0010.flac"]


def shared_env(redis: RedisServer, s3: S3Server, prefix: str) -> dict[str, str]:
    return {
        "POSTCALL_STORE_URL": redis.fresh_url(),
        "POSTCALL_BLOB_URL": f"s3://{s3.bucket}/{prefix}",
        "AWS_ENDPOINT_URL": s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_REGION": s3.region,
        "POSTCALL_API_KEYS": KEY,
        "POSTCALL_WORKER_POLL_S": "0.2",
    }


@pytest.fixture
def stack(
    redis_server: RedisServer,  # noqa: F811
    s3_server: S3Server,
    tmp_path: Path,
) -> Iterator[tuple[dict[str, str], Server]]:
    env = shared_env(redis_server, s3_server, f"e2e-{secrets.token_hex(4)}")
    api = Server(env, tmp_path / "api.log", "--no-worker")
    yield env, api
    api.stop()


def client_for(api: Server) -> httpx.Client:
    return api.client(KEY)


def spoken(result: dict[str, object]) -> str:
    lines = str(result["text"]).split("\n")
    return " ".join(LINE.match(line).group(5) for line in lines)  # type: ignore[union-attr]


def transcribe_all(client: httpx.Client, testdata: Path) -> None:
    jobs = {n: transcribe(client, upload(client, testdata / n).json()["id"]) for n in CLIPS}
    refs, hyps = [], []
    for name, tr_id in jobs.items():
        result = poll(client, tr_id)
        assert result["status"] == "completed", result
        refs.append(clip(name)["text"])
        hyps.append(spoken(result))
    assert wer(" ".join(refs), " ".join(hyps)) <= 0.15


def test_api_and_two_workers_over_redis_and_s3(
    stack: tuple[dict[str, str], Server],
    s3_server: S3Server,
    testdata: Path,
    tmp_path: Path,
    whisper_model_dir: str,
) -> None:
    env, api = stack
    workers = [
        WorkerProcess({**env, "WHISPER_MODEL": whisper_model_dir}, tmp_path / f"w{i}.log")
        for i in range(2)
    ]
    try:
        with client_for(api) as client:
            transcribe_all(client, testdata)

            # A meeting bot that writes into the bucket registers its object by key.
            prefix = env["POSTCALL_BLOB_URL"].split("/", 3)[3]
            s3_server.client().put_object(
                Bucket=s3_server.bucket,
                Key=f"{prefix}/bot-7/meeting.flac",
                Body=(testdata / "jfk.flac").read_bytes(),
            )
            r = client.post("/v1/recordings", json={"object_key": "bot-7/meeting.flac"})
            assert r.status_code == 201, r.text
            assert r.json()["duration"] == "11.0"
            result = poll(client, transcribe(client, r.json()["id"]))
            assert wer(clip("jfk.flac")["text"], spoken(result)) <= 0.15
            for bad in ("../outside.flac", "/etc/passwd", "bot-7//meeting.flac"):
                r = client.post("/v1/recordings", json={"object_key": bad})
                assert r.status_code == 422 and r.json()["error"]["field"] == "object_key"
            r = client.post("/v1/recordings", json={"object_key": "bot-7/missing.flac"})
            assert r.status_code == 404
    finally:
        for w in workers:
            w.kill()
    # The API process never loaded a model; the workers did the work.
    assert "loading Whisper model" not in api.log()
    assert all("ready" in w.log() for w in workers)
    done = sum(w.log().count(" completed in ") for w in workers)
    assert done == len(CLIPS) + 1


def test_workers_through_a_remote_whisper_server(
    stack: tuple[dict[str, str], Server],
    testdata: Path,
    tmp_path: Path,
    whisper_model_dir: str,
) -> None:
    env, api = stack
    whisper = Server(
        {"WHISPER_MODEL": whisper_model_dir},
        tmp_path / "whisper.log",
        command="whisper-server",
        health="/health",
        timeout=120,
    )
    workers: list[WorkerProcess] = []
    try:
        workers = [
            WorkerProcess({**env, "WHISPER_URL": whisper.url}, tmp_path / f"rw{i}.log")
            for i in range(2)
        ]
        with client_for(api) as client:
            transcribe_all(client, testdata)
    finally:
        for w in workers:
            w.kill()
        whisper.stop()
    assert not any("loading Whisper model" in w.log() for w in workers)
    assert "POST /v1/audio/transcriptions" in (tmp_path / "whisper.log").read_text()
