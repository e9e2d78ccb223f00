"""Queue benchmark: queue throughput across worker processes, on SQLite and on Redis.

Run from the repository root: ``.venv/bin/python bench/queueing.py`` (part of ``make bench``).

1, 2, 4 and 8 ``postcall worker`` processes run a fixed-duration test engine (each job
"computes" for ``--job-s`` seconds): jobs per second against the linear ideal
``workers / job_s``. The queue adds no bottleneck when the efficiency stays near 100 %.
Jobs are spread over several recordings (a recording takes at most 10 transcriptions).
The API's own figures (job creation, polling, uploads, webhooks) are ``bench/load.py``'s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import media  # noqa: E402
from tests.contract.redis_server import running_redis_server  # noqa: E402
from tests.e2e.workers import WorkerProcess, wait_ready  # noqa: E402

from postcall.blobs.local import LocalBlobStore  # noqa: E402
from postcall.domain import TranscriptionStatus  # noqa: E402
from postcall.service import Service  # noqa: E402
from postcall.settings import Settings  # noqa: E402
from postcall.wiring import build_store  # noqa: E402

PER_RECORDING = 10  # the most transcriptions one recording takes


@contextmanager
def store_urls(workdir: Path) -> Iterator[dict[str, str]]:
    redis_dir = workdir / "redis"
    redis_dir.mkdir()
    with running_redis_server(redis_dir) as redis:
        yield {"sqlite": f"sqlite:///{workdir / 'bench.db'}", "redis": redis.fresh_url()}


def tone_wav(path: Path, seconds: float = 1.0) -> Path:
    t = np.arange(int(seconds * 16000)) / 16000
    return media.write_audio(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


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
    wav = tone_wav(run_dir / "tone.wav")
    recordings = []
    for _ in range(-(-(workers * (jobs_per_worker + 1)) // PER_RECORDING)):
        with wav.open("rb") as fh:
            rec = service.create_recording("bench", fh, filename="t.wav", content_type="audio/wav")
        recordings.append(rec.id)
    jobs = itertools.count()
    procs = [WorkerProcess(env, run_dir / f"w{i}.log") for i in range(workers)]
    tick = threading.Event()
    try:
        wait_ready(procs)
        total = workers * jobs_per_worker

        def drain(count: int) -> float:
            started = time.perf_counter()
            ids = [
                service.request_transcription("bench", recordings[next(jobs) // PER_RECORDING]).id
                for _ in range(count)
            ]
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
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--jobs-per-worker", type=int, default=25)
    parser.add_argument("--job-s", type=float, default=0.25)
    parser.add_argument("--tiny", action="store_true", help="a few seconds: 1-2 workers")
    args = parser.parse_args()
    if args.tiny:
        args.workers, args.jobs_per_worker, args.job_s = "1,2", 4, 0.1
    results: dict[str, list[dict]] = {"throughput": []}
    with tempfile.TemporaryDirectory(prefix="postcall-bench-") as tmp:
        workdir = Path(tmp)
        with store_urls(workdir) as urls:
            print(f"queue throughput: fixed-duration engine, {args.job_s} s per job", flush=True)
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
    (out / ("queue-tiny.json" if args.tiny else "queue.json")).write_text(
        json.dumps(results, indent=2)
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
