"""One recording shared by real worker processes, on both stores: a killed worker
loses only its own unit. A timed test engine stands in for Whisper."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from postcall.domain import TranscriptionStatus
from postcall.store.base import Store
from postcall.store.units import UnitStatus
from tests.contract.redis_server import redis_server  # noqa: F401
from tests.e2e.test_crash_recovery import env, queue_jobs, store, store_url  # noqa: F401
from tests.e2e.workers import WorkerProcess
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


def unit_runs(logs: list[str]) -> list[tuple[int, str, int]]:
    """(unit index, outcome, attempt) of every unit that ended, across the workers' logs."""
    return [
        (int(m.group(1)), m.group(2), int(m.group(3)))
        for log in logs
        for m in re.finditer(r"unit tr_\w+#(\d+) (\w+) in [\d.]+ s \(attempt (\d+)\)", log)
    ]


def test_a_killed_worker_loses_only_its_own_unit(
    store: Store,  # noqa: F811
    env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    env = {
        **env,
        "POSTCALL_SPLIT_MIN_S": "60",
        "POSTCALL_SPLIT_UNIT_S": "30",
        "POSTCALL_TEST_ENGINE_SECONDS": "1.5",
    }
    [job] = queue_jobs(store, env, tmp_path, 1, seconds=150)
    workers = [WorkerProcess(env, tmp_path / f"w{i}.log") for i in range(3)]
    try:

        def running_unit() -> tuple[int, str] | None:
            for u in store.list_units(job):
                if u.status is UnitStatus.RUNNING and u.lease_owner:
                    return u.index, u.lease_owner
            return None

        index, owner = wait_for(running_unit, timeout=60, what="a worker to run a unit")
        [victim] = [w for w in workers if f"-{w.pid}-" in owner]
        victim.kill()
        wait_for(
            lambda: store.get_transcription("t", job).status.terminal,
            timeout=90,
            what="the job to end",
        )
    finally:
        for w in workers:
            w.kill()
    done = store.get_transcription("t", job)
    assert done.status is TranscriptionStatus.COMPLETED, done.error
    assert done.result is not None and done.result.segment_count > 0
    runs = unit_runs([w.log() for w in workers])
    finished = sorted(i for i, outcome, _ in runs if outcome == "done")
    assert len(finished) == len(set(finished)) >= 5, runs  # each unit accepted once
    # Only the killed worker's unit ran twice; every other unit ran once.
    assert [(i, attempt) for i, outcome, attempt in runs if attempt > 1] == [(index, 2)]
    assert f"#{index} done" not in victim.log()
    assert f"job {job} completed" in "".join(w.log() for w in workers)
