"""Uploads against a real ``postcall serve``: written to disk once, as they arrive, and
nothing left behind by a client that goes away mid-upload."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests import media
from tests.e2e.server import Server
from tests.helpers import wait_for
from tests.unit.test_api import tone

pytestmark = pytest.mark.e2e
KEY = "stream-key"


def written_bytes(pid: int) -> int:
    """Bytes the process passed to write(2) so far (files and sockets alike)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/PID/io")


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def head(port: int, length: int, boundary: str) -> bytes:
    return (
        f"POST /v1/recordings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_a_large_upload_is_written_once_and_a_dropped_one_leaves_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {
        "POSTCALL_DATA_DIR": str(data),
        "POSTCALL_API_KEYS": KEY,
        "TMPDIR": str(tmp),  # a spooled copy would show up here
    }
    wav = media.write_audio(tmp_path / "long.wav", tone(600))  # 19 MB
    server = Server(env, tmp_path / "serve.log", "--no-worker")
    try:
        before = written_bytes(server.proc.pid)
        with server.client(KEY) as c, wav.open("rb") as fh:
            r = c.post("/v1/recordings", files={"file": ("long.wav", fh)})
        assert r.status_code == 201, r.text
        size = wav.stat().st_size
        written = written_bytes(server.proc.pid) - before
        assert size <= written < 1.2 * size  # once; a spooled copy first would make it 2x
        assert files_under(tmp) == []

        # A client that sends half of its file and goes away.
        boundary = "cut"
        part = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b.wav"\r\n\r\n'
        ).encode()
        body = wav.read_bytes()
        stored = {p.name for p in files_under(data / "blobs")}
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(head(server.port, len(part) + len(body) + 50, boundary) + part)
            s.sendall(body[: len(body) // 2])

        def only_the_first_upload_is_kept() -> bool:
            return len(stored) == 1 and {p.name for p in files_under(data / "blobs")} == stored

        def no_partial_file() -> bool:
            return not [p for p in (data / "blobs").rglob(".upload-*")]

        wait_for(no_partial_file, timeout=10, what="the dropped upload's partial file removed")
        assert only_the_first_upload_is_kept()
        with server.client(KEY) as c:
            listed = c.get("/v1/recordings").json()["data"]
            assert [x["id"] for x in listed] == [r.json()["id"]]
            assert c.get("/healthz").status_code == 200
    finally:
        server.stop()
    assert "Traceback" not in server.log()
