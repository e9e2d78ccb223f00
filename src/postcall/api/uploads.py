"""Multipart uploads streamed straight into the blob store.

A file part is handed, as its bytes arrive, to ``Service.store_upload`` running in a
worker thread, through a small bounded pipe: the upload is written once, where it is
kept (no spooled temporary copy first), memory per upload stays at a few pieces of the
body, and a slow blob store slows the client down instead of filling memory. Text
fields (``metadata``, ``tracks``, ``id``) are kept in memory, at most ``MAX_FIELD_BYTES``
each. When anything fails (a refused file, a malformed body, the client going away)
every file stored so far is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import mimetypes
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from postcall.errors import InvalidInput, PayloadTooLarge
from postcall.service import Service, StoredUpload

MAX_FIELD_BYTES = 1024 * 1024
T = TypeVar("T")
PIPE_PIECES = 16
"""Pieces of the body (about 64 kB each) waiting between the request and the writer."""


class _Closed(Exception):
    """The writing side stopped (it failed or finished early): stop feeding."""


class Pipe:
    """A file-like reader for a writer thread, fed from the event loop one piece at a
    time, with back-pressure: ``put`` waits (without blocking the loop) while
    ``PIPE_PIECES`` pieces wait. ``end`` marks the end of the data, or makes the reader
    raise the given error. The writer calls ``close`` when it stops, which makes a
    waiting ``put`` give up with ``_Closed``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pieces: queue.Queue[bytes | BaseException | None] = queue.Queue(PIPE_PIECES)
        self._space = asyncio.Event()
        self._buffer = b""
        self._ended = False
        self._closed = threading.Event()

    # the event loop's side
    async def put(self, piece: bytes | BaseException | None) -> None:
        while True:
            if self._closed.is_set():
                raise _Closed
            try:
                self._pieces.put_nowait(piece)
                return
            except queue.Full:
                self._space.clear()
                if self._pieces.full() and not self._closed.is_set():
                    await self._space.wait()

    async def end(self, error: BaseException | None = None) -> None:
        await self.put(error)

    # the writer thread's side
    def _took(self) -> None:
        self._loop.call_soon_threadsafe(self._space.set)

    def read(self, size: int = -1) -> bytes:
        while not self._buffer and not self._ended:
            piece = self._pieces.get()
            self._took()
            if piece is None:
                self._ended = True
            elif isinstance(piece, BaseException):
                self._ended = True
                raise piece
            else:
                self._buffer = piece
        if size < 0 or size >= len(self._buffer):
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def close(self) -> None:
        self._closed.set()
        self._took()


def in_thread(
    loop: asyncio.AbstractEventLoop, work: Callable[[], T], *, name: str = "postcall-upload"
) -> asyncio.Future[T]:
    """Run ``work`` in a thread of its own (an upload or a URL import can take minutes:
    it must not hold a place in the shared pool that the quick endpoints, or its own
    feeding, need); its outcome as a future."""
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]  # set when error is None

    def run() -> None:
        try:
            result = work()
        except BaseException as exc:  # handed to the loop, raised there
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name=name, daemon=True).start()
    return done


class _ClientGone(Exception):
    """The client went away before the body ended."""


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    content_type: str = ""
    data: bytearray = field(default_factory=bytearray)
    pipe: Pipe | None = None
    stored: asyncio.Future[StoredUpload] | None = None


@dataclass
class UploadForm:
    """What a multipart upload held: its files (stored) and its text fields."""

    files: list[StoredUpload] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


def _content_type(declared: str, filename: str) -> str:
    if declared and declared != "application/octet-stream":
        return declared
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


async def receive_upload(
    request: Request, svc: Service, *, max_files: int, max_fields: int
) -> UploadForm:
    """Read a ``multipart/form-data`` body, storing every file part as it arrives.

    Only parts named ``file`` may carry files; other file parts are refused. The caller
    owns the stored files: on success it makes a recording of them or discards them."""
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidInput("the multipart body has no boundary", field="file")
    loop = asyncio.get_running_loop()
    form = UploadForm()
    events: list[tuple[str, bytes]] = []
    header_name = bytearray()
    header_value = bytearray()

    def on_header_end() -> None:
        events.append(("header", bytes(header_name) + b"\0" + bytes(header_value)))
        header_name.clear()
        header_value.clear()

    callbacks: dict[str, Callable[..., None]] = {
        "on_part_begin": lambda: events.append(("begin", b"")),
        "on_part_data": lambda d, s, e: events.append(("data", bytes(d[s:e]))),
        "on_part_end": lambda: events.append(("end", b"")),
        "on_header_field": lambda d, s, e: header_name.extend(d[s:e]),
        "on_header_value": lambda d, s, e: header_value.extend(d[s:e]),
        "on_header_end": on_header_end,
        "on_headers_finished": lambda: events.append(("headers", b"")),
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    part = _Part()
    files = fields = 0

    def store(pipe: Pipe, filename: str, content_type: str) -> StoredUpload:
        try:
            return svc.store_upload(
                pipe,  # type: ignore[arg-type]  # a reader: all store_upload needs
                filename=filename,
                content_type=content_type,
            )
        finally:
            pipe.close()

    async def finish_file(p: _Part) -> None:
        assert p.pipe is not None and p.stored is not None
        with contextlib.suppress(_Closed):  # the writer stopped early: its outcome says why
            await p.pipe.end()
        form.files.append(await p.stored)

    try:
        try:
            async for chunk in request.stream():
                try:
                    parser.write(chunk)
                except Exception as exc:  # python-multipart's errors carry no common base
                    raise InvalidInput(
                        f"the multipart body is malformed: {exc}", field="file"
                    ) from None
                for kind, data in events:
                    if kind == "begin":
                        part = _Part()
                    elif kind == "header":
                        name, _, value = data.partition(b"\0")
                        part.headers[name.lower()] = value
                    elif kind == "headers":
                        _, options = parse_options_header(
                            part.headers.get(b"content-disposition", b"")
                        )
                        part.name = options.get(b"name", b"").decode("utf-8", "replace")
                        if b"filename" in options:
                            files += 1
                            if part.name != "file":
                                raise InvalidInput(
                                    f"only the 'file' field takes files, not {part.name!r}",
                                    field=part.name or "file",
                                )
                            if files > max_files:
                                raise InvalidInput(
                                    f"at most {max_files} files in one recording", field="file"
                                )
                            part.filename = options[b"filename"].decode("utf-8", "replace")
                            declared = part.headers.get(b"content-type", b"").decode("latin-1")
                            part.content_type = _content_type(declared, part.filename)
                            part.pipe = Pipe(loop)
                            part.stored = in_thread(
                                loop,
                                functools.partial(
                                    store,
                                    part.pipe,
                                    part.filename or "recording",
                                    part.content_type,
                                ),
                            )
                        else:
                            fields += 1
                            if fields > max_fields:
                                raise InvalidInput(
                                    f"at most {max_fields} form fields", field=part.name
                                )
                    elif kind == "data":
                        if part.pipe is not None:
                            try:
                                await part.pipe.put(data)
                            except _Closed:
                                assert part.stored is not None
                                await part.stored  # raises the writer's error
                                raise
                        else:
                            if len(part.data) + len(data) > MAX_FIELD_BYTES:
                                raise PayloadTooLarge(
                                    f"the form field {part.name!r} is larger than "
                                    f"{MAX_FIELD_BYTES} bytes"
                                )
                            part.data += data
                    elif kind == "end":
                        if part.pipe is not None:
                            await finish_file(part)
                        else:
                            form.fields[part.name] = part.data.decode("utf-8", "replace")
                        part = _Part()
                events.clear()
        except ClientDisconnect:
            raise _ClientGone from None
        parser.finalize()
        if part.pipe is not None:  # the body ended inside a file part
            raise InvalidInput("the multipart body ended inside a file", field="file")
    except BaseException as exc:
        if part.pipe is not None and part.stored is not None and not part.stored.done():
            with contextlib.suppress(BaseException):  # the writer cleans up after itself
                await part.pipe.end(InvalidInput("the upload did not complete", field="file"))
                form.files.append(await part.stored)
        await loop.run_in_executor(None, svc.discard_uploads, form.files)
        if isinstance(exc, _ClientGone):
            raise InvalidInput(
                "the client closed the connection mid-upload", field="file"
            ) from None
        raise
    return form
