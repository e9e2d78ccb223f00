"""Split benchmark: one long recording shared by 1, 2 and 4 worker processes.

Run from the repository root: ``.venv/bin/python bench/split.py`` (part of ``make bench``).

Real ``postcall worker`` processes run a fixed-duration test engine (each chunk
"computes" for ``--chunk-s`` seconds, whatever its content), so the wall time shows
what the queue and the split add, not the model. One recording of ``--minutes`` of
tone with pauses is transcribed with the default split settings (units of about
300 s, one chunk each). Printed per worker count: the long job's wall time, the
ratio to one worker (target for 4 workers: under 0.30) and the workers' CPU seconds
during the job; then, from a second run with a short recording submitted
``--short-after`` s after the long one, the short job's time from submission to
completion and the long job's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import wave
from contextlib import ExitStack
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.contract.redis_server import running_redis_server  # noqa: E402
from tests.e2e.workers import WorkerProcess, wait_ready  # noqa: E402

from postcall.blobs.local import LocalBlobStore  # noqa: E402
from postcall.domain import TranscriptionStatus  # noqa: E402
from postcall.service import Service  # noqa: E402
from postcall.settings import Settings  # noqa: E402
from postcall.store.base import Store  # noqa: E402
from postcall.wiring import build_store  # noqa: E402

RATE = 16000


def tone_wav(path: Path, seconds: float) -> Path:
    """Tone bursts with a 1 s pause every 7 s, written a minute at a time."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        for start in range(0, int(seconds), 60):
            t = np.arange(start * RATE, int(min(start + 60, seconds) * RATE)) / RATE
            samples = 0.3 * np.sin(2 * np.pi * 220 * t)
            samples[(t % 7) > 6] = 0
            out.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_terminal(store: Store, ids: list[str], timeout: float) -> dict[str, float]:
    """When (perf_counter) each job ended; raises if one failed or time ran out."""
    ended: dict[str, float] = {}
    tick = threading.Event()
    deadline = time.perf_counter() + timeout
    while len(ended) < len(ids):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"jobs {set(ids) - set(ended)} did not finish in {timeout} s")
        for i in ids:
            if i in ended:
                continue
            t = store.get_transcription("bench", i)
            if t.status is TranscriptionStatus.FAILED:
                raise RuntimeError(f"job {i} failed: {t.error}")
            if t.status is TranscriptionStatus.COMPLETED:
                ended[i] = time.perf_counter()
        tick.wait(0.02)
    return ended


def run(
    workers: int, store_url: str, workdir: Path, long_wav: Path, short_wav: Path, args: object
) -> dict[str, float]:
    a = vars(args)
    run_dir = workdir / f"w{workers}"
    run_dir.mkdir()
    blob_root = run_dir / "blobs"
    env = {
        "POSTCALL_STORE_URL": store_url,
        "POSTCALL_BLOB_URL": f"file://{blob_root}",
        "POSTCALL_ENGINE_FACTORY": "tests.fakes:timed_engine",
        "POSTCALL_TEST_ENGINE_SECONDS": str(a["chunk_s"]),
        "POSTCALL_CHUNK_MAX_S": "300",
        "POSTCALL_WORKER_POLL_S": "0.05",
        "POSTCALL_LOG_LEVEL": "INFO",
    }
    store = build_store(Settings(store_url=store_url))
    service = Service(store, LocalBlobStore(blob_root))
    recs = {}
    for name, path in (("long", long_wav), ("short", short_wav)):
        with path.open("rb") as fh:
            recs[name] = service.create_recording(
                "bench", fh, filename=path.name, content_type="audio/wav"
            )
    procs = [WorkerProcess(env, run_dir / f"w{i}.log") for i in range(workers)]
    tick = threading.Event()
    try:
        wait_ready(procs)
        # One short job per worker first: first-job costs (imports, caches) not timed.
        warm = [service.request_transcription("bench", recs["short"].id).id for _ in procs]
        wait_terminal(store, warm, 120)
        # 1. The long recording alone: wall time and the workers' CPU time.
        cpu_before = sum(cpu_seconds(p.pid) for p in procs)
        started = time.perf_counter()
        long_id = service.request_transcription("bench", recs["long"].id).id
        long_s = wait_terminal(store, [long_id], 1800)[long_id] - started
        cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu_before
        # 2. Again, with a short recording submitted soon after it.
        started = time.perf_counter()
        long_id = service.request_transcription("bench", recs["long"].id).id
        tick.wait(a["short_after"])
        short_at = time.perf_counter()
        short_id = service.request_transcription("bench", recs["short"].id).id
        ended = wait_terminal(store, [long_id, short_id], 1800)
    finally:
        for p in procs:
            p.kill()
        store.close()
    return {
        "workers": workers,
        "long_s": long_s,
        "cpu_s": cpu,
        "short_s": ended[short_id] - short_at,
        "long_with_short_s": ended[long_id] - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--chunk-s", type=float, default=4.0, help="engine time per chunk")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--short-s", type=float, default=20.0, help="the short recording")
    parser.add_argument("--short-after", type=float, default=1.0)
    parser.add_argument("--store", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--keep", type=Path, help="keep the logs and files in this new folder")
    parser.add_argument("--tiny", action="store_true", help="a few seconds: 6 minutes, 1-2 workers")
    args = parser.parse_args()
    if args.tiny:
        args.minutes, args.chunk_s, args.workers = 6.0, 0.2, "1,2"
        args.short_s, args.short_after = 2.0, 0.1
    results = []
    with ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True)
            workdir = args.keep
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="postcall-")))
        long_wav = tone_wav(workdir / "long.wav", args.minutes * 60)
        short_wav = tone_wav(workdir / "short.wav", args.short_s)
        if args.store == "redis":
            (workdir / "redis").mkdir()
            redis = stack.enter_context(running_redis_server(workdir / "redis"))
        print(
            f"one {args.minutes:.0f}-minute recording, {args.chunk_s} s per 300 s chunk "
            f"(fixed-duration engine), {args.store}; a {args.short_s:.0f} s recording "
            f"submitted {args.short_after:.0f} s after it",
            flush=True,
        )
        print(
            f"{'workers':>7} {'wall s':>8} {'vs 1':>6} {'CPU s':>7}"
            f" | {'short job s':>11} {'long job s':>10}"
        )
        for w in (int(x) for x in args.workers.split(",")):
            url = redis.fresh_url() if args.store == "redis" else f"sqlite:///{workdir}/w{w}.db"
            r = run(w, url, workdir, long_wav, short_wav, args)
            results.append(r)
            ratio = r["long_s"] / results[0]["long_s"]
            print(
                f"{w:7d} {r['long_s']:8.2f} {ratio:6.2f} {r['cpu_s']:7.2f}"
                f" | {r['short_s']:11.2f} {r['long_with_short_s']:10.2f}",
                flush=True,
            )
    by = {int(r["workers"]): r for r in results}
    if 1 in by and 4 in by:
        ratio = by[4]["long_s"] / by[1]["long_s"]
        verdict = "met" if ratio < 0.30 else "NOT met"
        print(f"4 workers / 1 worker: {ratio:.3f} (target < 0.30: {verdict})")
    if 1 in by and 2 in by:
        print(f"CPU seconds, 2 workers / 1 worker: {by[2]['cpu_s'] / by[1]['cpu_s']:.2f}")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / ("split-tiny.json" if args.tiny else "split.json")).write_text(
        json.dumps(results, indent=2)
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
