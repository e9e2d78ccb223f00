"""Import from a URL: a recording fetched over HTTP(S), read as a stream.

The request goes through the same outbound guard as webhooks (``postcall.outbound``):
only http and https, no credentials in the URL, a host whose every address is public
(or in ``POSTCALL_ALLOWED_NETWORKS``), and the connection made to the checked address.
Redirects are followed here, one hop at a time, each hop's URL checked the same way,
at most ``MAX_REDIRECTS``. The body is handed out as a reader (``RemoteFile.read``), so
the caller (``Service.store_upload``) writes it once, where it is kept; it stops at the
upload limit whatever ``Content-Length`` says or whether there is one. One deadline
bounds the whole fetch (every hop, the headers and the body): a server that trickles
bytes runs into it like one that stalls. At the deadline a watchdog shuts the
connection's socket, so a read waiting for a stalled server ends then too.
"""

from __future__ import annotations

import contextlib
import mimetypes
import posixpath
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx

from postcall.errors import (
    FetchFailed,
    FetchTimeout,
    ImportUrlNotAllowed,
    PayloadTooLarge,
    UrlNotAllowed,
    UrlUnresolvable,
)
from postcall.outbound import OutboundPolicy, guarded_client

MAX_REDIRECTS = 5
MAX_URL_LENGTH = 4096
USER_AGENT = "postcall-url-import"
_REDIRECTS = (301, 302, 303, 307, 308)


def check_url_shape(url: str) -> None:
    """The checks that need no network: http(s), a host, no credentials, a sane length.

    ``ImportUrlNotAllowed`` (field ``url``) otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise ImportUrlNotAllowed(
            f"the URL is longer than {MAX_URL_LENGTH} characters", field="url"
        )
    try:
        parts = urlsplit(url)
        httpx.URL(url)
        parts.port  # noqa: B018  # a bad port raises here
    except (ValueError, httpx.InvalidURL) as exc:
        raise ImportUrlNotAllowed(f"the URL is not valid: {exc}", field="url") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ImportUrlNotAllowed("the URL must be http:// or https:// with a host", field="url")
    if parts.username is not None or parts.password is not None:
        raise ImportUrlNotAllowed(
            "the URL must not carry credentials (user:password@); give a URL that needs "
            "none, such as a pre-signed link",
            field="url",
        )


def _filename(url: str) -> str:
    name = posixpath.basename(unquote(urlsplit(url).path))
    name = "".join(c for c in name if c.isprintable() and c not in "/\\")
    return name[:255] or "recording"


def _content_type(header: str | None, filename: str) -> str:
    declared = (header or "").split(";", 1)[0].strip().lower()
    if declared and declared != "application/octet-stream":
        return declared[:255]
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


@dataclass
class RemoteFile:
    """A fetched recording's body as a reader, with what its URL and headers say."""

    url: str
    filename: str
    content_type: str
    _pieces: Iterator[bytes]
    _deadline: float
    _max_bytes: int
    _timeout_s: float
    _expired: threading.Event
    _buffer: bytes = b""
    count: int = 0

    def _late(self) -> bool:
        return self._expired.is_set() or time.monotonic() > self._deadline

    def read(self, size: int = -1) -> bytes:
        while not self._buffer:
            try:
                piece = next(self._pieces, None)
            except httpx.TimeoutException:
                raise self._timed_out() from None
            except httpx.HTTPError as exc:
                if self._late():  # the watchdog shut the connection
                    raise self._timed_out() from None
                raise FetchFailed(
                    f"the download from the URL broke off: {exc}", retryable=True
                ) from None
            if self._late():  # an end of data after the watchdog is no end of the file
                raise self._timed_out()
            if piece is None:
                return b""
            self.count += len(piece)
            if self.count > self._max_bytes:
                raise PayloadTooLarge(
                    f"the file at the URL is larger than the limit of {self._max_bytes} bytes "
                    "(POSTCALL_MAX_UPLOAD_BYTES)"
                )
            self._buffer = piece
        if size < 0 or size >= len(self._buffer):
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def _timed_out(self) -> FetchTimeout:
        return FetchTimeout(
            f"the URL did not deliver the file within {self._timeout_s:g} s "
            "(POSTCALL_URL_IMPORT_TIMEOUT_S)"
        )


def _shut(response: httpx.Response, expired: threading.Event) -> None:
    """The deadline passed: shut the connection's socket, which ends a read waiting in
    another thread (closing it would not wake that read)."""
    expired.set()
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            # The plain socket's shutdown, also under TLS: SSLSocket's own would drop
            # its TLS state under the reading thread's feet.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class UrlFetcher:
    """Opens recordings at URLs under the outbound guard, a size cap and a deadline."""

    def __init__(self, policy: OutboundPolicy, *, timeout_s: float, max_bytes: int) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes

    @contextmanager
    def open(self, url: str) -> Iterator[RemoteFile]:
        """The body at ``url`` as a ``RemoteFile``, after following redirects; the
        connection is closed when the block ends.

        Raises ``ImportUrlNotAllowed`` (a hop's URL is refused: nothing connects there),
        ``FetchFailed`` (an error status, a network error, too many redirects),
        ``FetchTimeout`` and ``PayloadTooLarge`` (a declared length over the cap)."""
        deadline = time.monotonic() + self.timeout_s
        with guarded_client(self.policy, timeout_s=self.timeout_s, max_connections=4) as client:
            response, final = self._follow(client, url, deadline)
            expired = threading.Event()
            watchdog = threading.Timer(
                max(0.0, deadline - time.monotonic()), _shut, (response, expired)
            )
            watchdog.daemon = True
            watchdog.start()
            try:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise PayloadTooLarge(
                        f"the file at the URL is {int(declared)} bytes, over the limit of "
                        f"{self.max_bytes} bytes (POSTCALL_MAX_UPLOAD_BYTES)"
                    )
                name = _filename(final)
                yield RemoteFile(
                    url=final,
                    filename=name,
                    content_type=_content_type(response.headers.get("content-type"), name),
                    _pieces=response.iter_bytes(),  # as they arrive: each meets the deadline
                    _deadline=deadline,
                    _max_bytes=self.max_bytes,
                    _timeout_s=self.timeout_s,
                    _expired=expired,
                )
            finally:
                watchdog.cancel()
                response.close()

    def _follow(
        self, client: httpx.Client, url: str, deadline: float
    ) -> tuple[httpx.Response, str]:
        """The first answer that is not a redirect, with the URL it came from."""
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            check_url_shape(current)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout()
            request = client.build_request(
                "GET",
                current,
                headers={"user-agent": USER_AGENT, "accept-encoding": "identity"},
                timeout=httpx.Timeout(remaining),
            )
            try:
                response = client.send(request, stream=True)
            except UrlUnresolvable as exc:
                raise FetchFailed(exc.message, retryable=True) from None
            except UrlNotAllowed as exc:
                raise ImportUrlNotAllowed(exc.message, field="url") from None
            except httpx.TimeoutException:
                raise self._timeout() from None
            except httpx.HTTPError as exc:
                raise FetchFailed(
                    f"the URL could not be fetched: {type(exc).__name__}: {exc}",
                    retryable=True,
                ) from None
            location = response.headers.get("location")
            if response.status_code in _REDIRECTS and location:
                response.close()
                try:
                    # Joined to the URL as asked for (the transport swapped in the address).
                    current = str(httpx.URL(current).join(location))
                except (httpx.InvalidURL, ValueError) as exc:
                    raise ImportUrlNotAllowed(
                        f"the URL redirects to an invalid URL: {exc}", field="url"
                    ) from None
                continue
            if not 200 <= response.status_code < 300:
                response.close()
                raise FetchFailed(
                    f"the URL answered {response.status_code} {response.reason_phrase}".rstrip(),
                    retryable=response.status_code >= 500 or response.status_code == 429,
                )
            return response, current
        raise FetchFailed(f"the URL redirects more than {MAX_REDIRECTS} times")

    def _timeout(self) -> FetchTimeout:
        return FetchTimeout(
            f"the URL did not deliver the file within {self.timeout_s:g} s "
            "(POSTCALL_URL_IMPORT_TIMEOUT_S)"
        )
