"""Real `postcall worker` processes for crash-recovery tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.helpers import wait_for


class WorkerProcess:
    """One `postcall worker` process; its output is appended to ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        # This tree's src first: a virtualenv may hold another checkout's editable install.
        path = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
        self.env = {**os.environ, "PYTHONPATH": path, **env}
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "postcall.cli", "worker", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        if self.alive():
            self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait()

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_ready(procs: list[WorkerProcess], timeout: float = 60) -> None:
    """Wait until every worker has logged that it is ready to take work."""
    wait_for(
        lambda: all(" ready" in p.log() for p in procs), timeout=timeout, what="workers to start"
    )
