"""Queue benchmark: job creation through the API, and queue throughput across workers.

Run from the repository root: ``.venv/bin/python bench/queueing.py`` (part of ``make bench``).

1. ``POST /v1/recordings/{id}/transcribe`` against a real ``postcall serve --no-worker``
   process, on SQLite and on Redis: creations per second and p50/p99 latency, from a
   closed loop of concurrent clients on this machine.
2. Queue throughput with 1, 2, 4 and 8 ``postcall worker`` processes running a
   fixed-duration test engine (each job "computes" for ``--job-s`` seconds): jobs per
   second against the linear ideal ``workers / job_s``. The queue adds no bottleneck
   when the efficiency stays near 100 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import media  # noqa: E402
from tests.contract.redis_server import running_redis_server  # noqa: E402
from tests.e2e.server import Server  # noqa: E402
from tests.e2e.workers import WorkerProcess, wait_ready  # noqa: E402

from postcall.blobs.local import LocalBlobStore  # noqa: E402
from postcall.domain import TranscriptionStatus  # noqa: E402
from postcall.service import Service  # noqa: E402
from postcall.settings import Settings  # noqa: E402
from postcall.wiring import build_store  # noqa: E402

KEY = "bench-key"


@contextmanager
def store_urls(workdir: Path) -> Iterator[dict[str, str]]:
    redis_dir = workdir / "redis"
    redis_dir.mkdir()
    with running_redis_server(redis_dir) as redis:
        yield {"sqlite": f"sqlite:///{workdir / 'bench.db'}", "redis": redis.fresh_url()}


def tone_wav(path: Path, seconds: float = 1.0) -> Path:
    t = np.arange(int(seconds * 16000)) / 16000
    return media.write_audio(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


async def hammer(url: str, rec_id: str, total: int, concurrency: int) -> list[float]:
    """A closed loop of ``concurrency`` keep-alive HTTP/1.1 connections.

    Raw asyncio streams rather than an HTTP client library: on a 2-core machine the
    load generator shares the CPU with the server, so it must cost little per request.
    """
    host, port = url.removeprefix("http://").split(":")
    body = b"{}"
    request = (
        f"POST /v1/recordings/{rec_id}/transcribe HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    remaining = total

    async def one_connection() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if not head.startswith(b"HTTP/1.1 202"):
                    raise RuntimeError(f"unexpected answer: {head[:40]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return latencies


def bench_creation(name: str, store_url: str, workdir: Path, total: int, concurrency: int) -> dict:
    env = {
        "POSTCALL_STORE_URL": store_url,
        "POSTCALL_BLOB_URL": f"file://{workdir / f'blobs-{name}'}",
        "POSTCALL_API_KEYS": KEY,
        "POSTCALL_LOG_LEVEL": "WARNING",
    }
    server = Server(env, workdir / f"api-{name}.log", "--no-worker")
    try:
        wav = tone_wav(workdir / "tone.wav")
        auth = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=server.url, headers=auth) as c, wav.open("rb") as fh:
            rec = c.post("/v1/recordings", files={"file": ("t.wav", fh)}).json()
        asyncio.run(hammer(server.url, rec["id"], 100, concurrency))  # warm up
        started = time.perf_counter()
        latencies = asyncio.run(hammer(server.url, rec["id"], total, concurrency))
        wall = time.perf_counter() - started
    finally:
        server.stop()
    latencies.sort()
    return {
        "store": name,
        "requests": total,
        "concurrency": concurrency,
        "per_s": total / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
    }


def bench_workers(
    name: str, store_url: str, workdir: Path, workers: int, jobs_per_worker: int, job_s: float
) -> dict:
    run_dir = workdir / f"q-{name}-{workers}"
    run_dir.mkdir()
    blob_root = run_dir / "blobs"
    env = {
        "POSTCALL_STORE_URL": store_url,
        "POSTCALL_BLOB_URL": f"file://{blob_root}",
        "POSTCALL_ENGINE_FACTORY": "tests.fakes:timed_engine",
        "POSTCALL_TEST_ENGINE_SECONDS": str(job_s),
        "POSTCALL_WORKER_POLL_S": "0.02",
        "POSTCALL_LOG_LEVEL": "INFO",
    }
    store = build_store(Settings(store_url=store_url))
    service = Service(store, LocalBlobStore(blob_root))
    with tone_wav(run_dir / "tone.wav").open("rb") as fh:
        rec = service.create_recording("bench", fh, filename="t.wav", content_type="audio/wav")
    procs = [WorkerProcess(env, run_dir / f"w{i}.log") for i in range(workers)]
    tick = threading.Event()
    try:
        wait_ready(procs)
        total = workers * jobs_per_worker

        def drain(count: int) -> float:
            started = time.perf_counter()
            ids = [service.request_transcription("bench", rec.id).id for _ in range(count)]
            pending = set(ids)
            while pending:
                if time.perf_counter() - started > 300:
                    raise RuntimeError(f"{len(pending)} jobs never finished")
                tick.wait(0.02)
                pending = {
                    i
                    for i in pending
                    if store.get_transcription("bench", i).status
                    is not TranscriptionStatus.COMPLETED
                }
            return time.perf_counter() - started

        drain(workers)  # one job each first: first-job costs (imports, caches) not timed
        wall = drain(total)
    finally:
        for p in procs:
            p.kill()
        store.close()
    ideal = workers / job_s
    return {
        "store": name,
        "workers": workers,
        "jobs": total,
        "jobs_per_s": total / wall,
        "ideal_per_s": ideal,
        "efficiency": (total / wall) / ideal,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--jobs-per-worker", type=int, default=25)
    parser.add_argument("--job-s", type=float, default=0.25)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"creation": [], "throughput": []}
    with tempfile.TemporaryDirectory(prefix="postcall-bench-") as tmp:
        workdir = Path(tmp)
        with store_urls(workdir) as urls:
            print("job creation: POST /v1/recordings/{id}/transcribe", flush=True)
            print(f"{'store':8} {'req':>6} {'conc':>5} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8}")
            for name, url in urls.items():
                r = bench_creation(name, url, workdir, args.requests, args.concurrency)
                results["creation"].append(r)
                row = f"{name:8} {r['requests']:6d} {r['concurrency']:5d} {r['per_s']:8.0f} "
                print(row + f"{r['p50_ms']:8.1f} {r['p99_ms']:8.1f}", flush=True)
            print(f"\nqueue throughput: fixed-duration engine, {args.job_s} s per job", flush=True)
            print(f"{'store':8} {'workers':>7} {'jobs':>5} {'jobs/s':>8} {'ideal':>7} {'eff':>6}")
            for name, url in urls.items():
                for w in (int(x) for x in args.workers.split(",")):
                    r = bench_workers(name, url, workdir, w, args.jobs_per_worker, args.job_s)
                    results["throughput"].append(r)
                    row = f"{name:8} {w:7d} {r['jobs']:5d} {r['jobs_per_s']:8.2f} "
                    eff = 100 * r["efficiency"]
                    print(row + f"{r['ideal_per_s']:7.2f} {eff:5.1f}%", flush=True)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "queue.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
