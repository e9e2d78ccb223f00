"""A real ``postcall`` process on a free port, for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO

import httpx

from tests.helpers import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """Starts a ``postcall`` server command on a free port; stops it on ``stop()``.

    ``command`` is ``serve`` (health at ``/healthz``) or ``whisper-server`` (``/health``,
    which answers 200 once the model is loaded).
    """

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *args: str,
        command: str = "serve",
        health: str = "/healthz",
        timeout: float = 60,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.health = health
        self._log: IO[bytes] = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postcall.cli", command, "--port", str(self.port), *args],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(self._healthy, timeout=timeout, what=f"postcall {command} on {self.url}")
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"server did not start; log:\n{self.log()}") from None

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return httpx.get(f"{self.url}{self.health}", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, key: str, *, timeout: float = 30) -> httpx.Client:
        """An HTTP client for this server that sends ``key`` as a Bearer token."""
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def model_server(root: Path, model_dir: str, key: str, **env: str) -> Server:
    """``postcall serve`` with the real model, its own data folder and one API key."""
    return Server(
        {
            "WHISPER_MODEL": model_dir,
            "POSTCALL_DATA_DIR": str(root / "data"),
            "POSTCALL_API_KEYS": key,
            "POSTCALL_AUTH": "required",
            "POSTCALL_WORKER_POLL_S": "0.2",
            **env,
        },
        root / "server.log",
    )
