"""A real webhook receiver: uvicorn on a free port, verifying every request with the
``standardwebhooks`` package (the signature oracle).

``respond`` decides each answer: a status (with headers) or ``HOLD`` (the request is held
open until ``release()``). Every request is recorded with its verification result.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.e2e.server import free_port

HOLD = "hold"
Answer = tuple[int, dict[str, str]] | str


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool
    at: float
    path: str
    answered: int | None = None

    @property
    def id(self) -> str:
        return self.headers.get("webhook-id", "")

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class Receiver:
    """Records and verifies webhook requests; see the module docstring."""

    secrets: list[str] = field(default_factory=list)
    respond: Callable[[int, Received], Answer] = lambda n, r: (200, {})
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _released: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def verify(self, body: bytes, headers: dict[str, str]) -> bool:
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
                return True
            except WebhookVerificationError:
                continue
        return False

    def release(self) -> None:
        self._released.set()

    def delivered(self) -> list[Received]:
        """Requests answered 2xx."""
        with self._lock:
            return [r for r in self.received if r.answered is not None and r.answered < 300]

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        got = Received(
            headers, body, self.verify(body, headers), time.monotonic(), request.url.path
        )
        with self._lock:
            self.received.append(got)
            n = len(self.received)
        answer = self.respond(n, got)
        if answer == HOLD:
            while not self._released.is_set():
                await asyncio.sleep(0.05)
            answer = (200, {})
        assert not isinstance(answer, str)
        status, extra = answer
        got.answered = status
        return Response(status_code=status, headers=extra)


@contextmanager
def running(receiver: Receiver) -> Iterator[Receiver]:
    """Serve ``receiver`` on 127.0.0.1 until the block ends."""
    app = Starlette(routes=[Route("/{path:path}", receiver._handle, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the receiver did not start")
        time.sleep(0.02)
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        receiver.release()
        server.should_exit = True
        thread.join(10)


class Tripwire:
    """A listening socket that counts the connections it gets (proof that none came)."""

    def __init__(self, host: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.05)
        self.port = int(self._sock.getsockname()[1])
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def __enter__(self) -> Tripwire:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
