"""Run every benchmark, one after the other, each in its own process (``make bench``).

Each prints its own tables as it goes. A benchmark that fails does not stop the others;
at the end a summary lists each one with its exit status and time, and the exit status
is 1 when any failed (their names are printed last). ``--tiny`` runs each in its tiny
mode (seconds, for ``make test``); ``--only`` picks some by name.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# In the order they run: the transcript's quality first, then speed, then the service.
BENCHMARKS = (
    "meeting",
    "calls",
    "pipeline",
    "long",
    "split",
    "speakers",
    "diarize",
    "voiceprints",
    "queueing",
    "load",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="each benchmark in its tiny mode")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated names")
    parser.add_argument("--dir", type=Path, default=HERE, help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if not (args.dir / f"{n}.py").is_file()]
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)}")
    results: list[tuple[str, int, float]] = []
    for name in names:
        command = [sys.executable, str(args.dir / f"{name}.py"), *(["--tiny"] if args.tiny else [])]
        print(f"\n=== bench/{name}.py {' '.join(command[2:])}".rstrip(), flush=True)
        started = time.perf_counter()
        code = subprocess.run(command, check=False).returncode
        results.append((name, code, time.perf_counter() - started))
    print("\n=== summary")
    for name, code, took in results:
        outcome = "ok" if code == 0 else f"FAILED (exit status {code})"
        print(f"{name:10} {took:8.1f} s  {outcome}")
    failed = [name for name, code, _ in results if code != 0]
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
