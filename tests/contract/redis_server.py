"""A real ``redis-server`` for the tests: one per session, on a free port, emptied per test.

Import the fixtures into a test module (``from tests.contract.redis_server import
redis_server, redis_url``) or request them lazily with ``request.getfixturevalue`` so
that tests which do not need Redis never start it. ``redis_url`` is an emptied
database's URL; ``redis_server`` is the session's ``RedisServer``. ``RedisProcess`` is
a server a test stops and starts again on the same port, its data kept on disk.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RedisServer:
    """The session's redis-server."""

    url: str  # redis://127.0.0.1:PORT, no database
    pid: int

    def fresh_url(self) -> str:
        """Empty the server and return its database 0's URL (one test at a time owns it)."""
        url = f"{self.url}/0"
        client = redis.Redis.from_url(url)
        try:
            client.flushall()
        finally:
            client.close()
        return url


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> bool:
    """Poll PING until our server answers (True), it exits or another answers (False).

    Fails the session when the deadline passes first.
    """
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            try:
                # The pid check: another server that got the port first must never be
                # used (the fixtures flush it).
                if client.ping():
                    return int(client.info("server")["process_id"]) == proc.pid
            except redis.ConnectionError:
                pass
            try:
                proc.wait(timeout=0.05)  # the pause between polls; ends early if it exited
            except subprocess.TimeoutExpired:
                continue
            return False
    finally:
        client.close()
    _stop(proc)
    log_text = log.read_text(errors="replace") if log.exists() else ""
    pytest.fail(f"redis-server did not answer PING within {START_TIMEOUT_S}s:\n{log_text}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


class RedisMissing(RuntimeError):
    pass


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisMissing(
            "redis-server is not installed; `make test` installs it "
            "(its system-deps step runs apt-get install redis-server)"
        )
    return binary


def _launch(
    binary: str, port: int, directory: Path, log: Path, *, persist: bool
) -> subprocess.Popen[bytes]:
    # persist: an append-only file fsync'd before each reply, so every write a client
    # was answered for survives even a SIGKILL of the server.
    durability = ["yes", "--appendfsync", "always"] if persist else ["no"]
    return subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            *durability,
            "--dir",
            str(directory),
            "--logfile",
            str(log),
        ],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class RedisProcess:
    """A redis-server a test can stop (or kill) and start again on the same port.

    Its data is kept in an append-only file fsync'd before every reply, so whatever a
    client was answered for is there again after a restart, even after ``kill=True``.
    """

    def __init__(self, directory: Path) -> None:
        self.binary = _binary()
        self.directory = directory
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = _launch(self.binary, self.port, self.directory, self.log, persist=True)
        if not _wait_ready(self.proc, self.port, self.log):
            _stop(self.proc)
            raise RuntimeError(f"port {self.port} was taken while redis-server was down")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM: it saves and exits; ``kill``: SIGKILL, at once)."""
        if self.proc is None:
            return
        if kill and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        _stop(self.proc)
        self.proc = None


@contextmanager
def running_redis_server(directory: Path) -> Iterator[RedisServer]:
    """Start a throwaway redis-server on a free port; stop it afterwards."""
    binary = _binary()
    for _ in range(3):  # another process may take the free port before the server binds it
        port = _free_port()
        log = directory / f"redis-{port}.log"
        proc = _launch(binary, port, directory, log, persist=False)
        if _wait_ready(proc, port, log):
            break
        _stop(proc)
    else:
        log_text = log.read_text(errors="replace") if log.exists() else ""
        raise RuntimeError(f"redis-server exited at start three times; last log:\n{log_text}")
    try:
        yield RedisServer(url=f"redis://127.0.0.1:{port}", pid=proc.pid)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server run for this session (stopped at its end)."""
    try:
        with running_redis_server(tmp_path_factory.mktemp("redis")) as server:
            yield server
    except RedisMissing as exc:
        pytest.fail(str(exc))


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's server, emptied for this test (database 0)."""
    return redis_server.fresh_url()


@pytest.fixture(name="redis_process")
def redis_process_fixture(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of its own that a test may stop, kill and start again."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisProcess(directory)
    server.start()
    yield server
    server.stop()
