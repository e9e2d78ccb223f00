"""A real HTTP origin for URL imports: the stdlib's threading server on 127.0.0.1.

Each path answers as its ``Route`` says: a body with or without ``Content-Length`` (or a
lying one), a redirect, an error status, or bytes trickled until the client gives up.
Every request is counted per path, so a test can show that nothing was fetched.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Route:
    """How one path answers. ``length``: the Content-Length sent (None: none, the body
    ends when the connection closes); ``trickle_s``: send one byte per this many
    seconds instead of ``body`` (with ``length`` if it is a number), for ever or, with
    ``trickle_for_s``, for that long, then nothing, the connection held open."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    length: int | str | None = "auto"
    location: str | None = None
    trickle_s: float | None = None
    trickle_for_s: float | None = None


@dataclass
class Origin:
    routes: dict[str, Route] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    url: str = ""
    stopping: threading.Event = field(default_factory=threading.Event)

    def add(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.url + path


def _handler(origin: Origin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            origin.hits[path] += 1
            route = origin.routes.get(path, Route(b"not here", status=404, length="auto"))
            self.send_response(route.status)
            self.send_header("Content-Type", route.content_type)
            if route.location is not None:
                self.send_header("Location", route.location)
            if route.trickle_s is not None:
                if isinstance(route.length, int):
                    self.send_header("Content-Length", str(route.length))
                self.send_header("Connection", "close")
                self.end_headers()
                self._trickle(route.trickle_s, route.trickle_for_s)
                return
            if route.length == "auto":
                self.send_header("Content-Length", str(len(route.body)))
            elif route.length is None:
                self.send_header("Connection", "close")
                self.close_connection = True
            else:  # a chosen (maybe lying) length: the connection ends with the body
                self.send_header("Content-Length", str(route.length))
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            try:
                view = memoryview(route.body)
                for start in range(0, len(view), 64 * 1024):
                    self.wfile.write(view[start : start + 64 * 1024])
            except OSError:  # the client stopped reading (over its limit): expected
                self.close_connection = True

        def _trickle(self, every_s: float, for_s: float | None) -> None:
            self.close_connection = True
            until = None if for_s is None else time.monotonic() + for_s
            # Paced by the stop event, so the server still shuts down at once.
            while not origin.stopping.wait(every_s):
                if until is not None and time.monotonic() > until:
                    origin.stopping.wait()  # silent from now on, the connection open
                    return
                try:
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                except OSError:
                    return

    return Handler


@contextmanager
def serving(host: str = "127.0.0.1") -> Iterator[Origin]:
    """An ``Origin`` listening on a free port of ``host`` until the block ends."""
    origin = Origin()
    server = ThreadingHTTPServer((host, 0), _handler(origin))
    server.daemon_threads = True
    origin.url = f"http://{host}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield origin
    finally:
        origin.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
