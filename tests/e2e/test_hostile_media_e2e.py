"""Hostile media against a real `postcall serve`: refused with a code, never followed.

Every file is generated here: playlists and concat lists naming host files, other
tenants' blobs and a local listener; lying headers; impossible shapes; broken files.
Where the API probes (upload, registration, import from a URL) the answer is a
specific 4xx; where only the worker can tell (lengths that headers hide, an object
swapped after it was registered) the job fails with a code. Afterwards the worker
still takes the next job, the listener has seen no connection, and nothing was
written outside the data directory (the server's TMPDIR lies inside the test's
folder and is left empty).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import hostile_media as hostile
from tests import media
from tests.e2e.server import Server, model_server
from tests.helpers import wait_for
from tests.origin import Origin, Route, serving
from tests.unit.test_media_allowlist import Listener

pytestmark = pytest.mark.e2e

KEY = "hostile-media-key"
MAX_S = 60
ORIGIN_HOST = "127.0.0.3"


@dataclass
class World:
    server: Server
    root: Path  # the server's folder: data/, tmp/ and its log
    files: Path  # where the test makes its files (outside the server's folder)
    listener: Listener
    secret: Path  # a recording elsewhere on the host
    secret_bytes: bytes
    other_blob: str  # the blob key of another recording (another tenant's, say)
    origin: Origin  # serves files for imports from a URL, on the one allowed address

    def client(self) -> httpx.Client:
        return self.server.client(KEY)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, whisper_model_dir: str) -> Iterator[World]:
    root = tmp_path_factory.mktemp("hostile-server")
    files = tmp_path_factory.mktemp("hostile-files")
    (root / "tmp").mkdir()
    listener = Listener()
    stack = contextlib.ExitStack()
    origin = stack.enter_context(serving(ORIGIN_HOST))
    server = model_server(
        root,
        whisper_model_dir,
        KEY,
        POSTCALL_MAX_DURATION_S=str(MAX_S),
        POSTCALL_ALLOWED_NETWORKS=f"{ORIGIN_HOST}/32",  # not the listener's 127.0.0.1
        TMPDIR=str(root / "tmp"),
    )
    try:
        # MP3: FFmpeg's HLS reader, on its own, follows a playlist to an .mp3 (not to
        # a .wav), so these cases fail without postcall's allow-list.
        secret = media.write_audio(files / "secret.mp3", hostile.tone(2.0), codec="mp3")
        with server.client(KEY) as client:
            with secret.open("rb") as fh:
                r = client.post("/v1/recordings", files={"file": ("other.mp3", fh)})
            assert r.status_code == 201, r.text
        (other,) = (root / "data" / "blobs" / "media").iterdir()
        yield World(
            server,
            root,
            files,
            listener,
            secret,
            secret.read_bytes(),
            f"media/{other.name}",
            origin,
        )
    finally:
        server.stop()
        listener.close()
        stack.close()


# --- refused where the API probes: uploads ------------------------------------------

Make = Callable[[World, Path], Path]

UPLOADS: dict[str, tuple[Make, int, str]] = {
    "hls-file-url": (
        lambda w, d: hostile.hls_playlist(d / "call.m3u8", f"file://{w.secret}"),
        415,
        "unsupported_media",
    ),
    "hls-other-blob": (
        # Relative to the upload's own blob folder: another recording's blob.
        lambda w, d: hostile.hls_playlist(d / "call.m3u8", w.other_blob.split("/")[-1]),
        415,
        "unsupported_media",
    ),
    "hls-listener": (
        lambda w, d: hostile.hls_playlist(
            d / "call.m3u8", f"http://127.0.0.1:{w.listener.port}/seg0.ts"
        ),
        415,
        "unsupported_media",
    ),
    "ffconcat-other-blob": (
        lambda w, d: hostile.ffconcat(d / "call.wav", w.other_blob.split("/")[-1]),
        415,
        "unsupported_media",
    ),
    "ffconcat-etc-passwd": (
        lambda w, d: hostile.ffconcat(d / "call.wav", "/etc/passwd"),
        415,
        "unsupported_media",
    ),
    "ffconcat-listener": (
        lambda w, d: hostile.ffconcat(d / "call.flac", f"http://127.0.0.1:{w.listener.port}/"),
        415,
        "unsupported_media",
    ),
    "sdp-listener": (
        lambda w, d: hostile.sdp(d / "call.sdp", w.listener.port),
        415,
        "unsupported_media",
    ),
    "random-bytes": (lambda w, d: hostile.random_bytes(d / "call.wav"), 415, "unsupported_media"),
    "random-bytes-flac": (
        lambda w, d: hostile.random_bytes(d / "call.flac", seed=7),
        415,
        "unsupported_media",
    ),
    "wav-header-only": (lambda w, d: hostile.wav_header_only(d / "call.wav"), 422, "empty_audio"),
    "flac-truncated": (
        lambda w, d: hostile.truncated(
            d / "cut.flac",
            media.write_audio(d / "full.flac", hostile.tone(2.0), codec="flac"),
            60,
        ),
        415,
        "unsupported_media",
    ),
    "mp4-without-index": (
        lambda w, d: media.write_truncated_mp4(d / "cut.mp4"),
        415,
        "unsupported_media",
    ),
    "wav-40-channels": (
        lambda w, d: hostile.many_channels_wav(d / "call.wav", 40),
        415,
        "unsupported_media",
    ),
    "wav-20000-channels": (
        lambda w, d: hostile.many_channels_wav(d / "call.wav", 20000, seconds=0.01),
        422,
        "empty_audio",  # FFmpeg's WAV reader itself refuses to decode that many
    ),
    "wav-1-hz": (lambda w, d: hostile.absurd_rate_wav(d / "call.wav", 1), 415, "unsupported_media"),
    "wav-2-ghz": (
        lambda w, d: hostile.absurd_rate_wav(d / "call.wav", 2_000_000_000),
        415,
        "unsupported_media",
    ),
    "header-over-limit": (
        # An honest header over the limit is refused at once.
        lambda w, d: hostile.lying_flac(d / "call.flac", holds_s=2.0, claims_s=MAX_S * 2),
        422,
        "duration_exceeded",
    ),
}


@pytest.mark.parametrize("case", list(UPLOADS))
def test_hostile_upload_gets_a_specific_4xx(world: World, tmp_path: Path, case: str) -> None:
    make, status, code = UPLOADS[case]
    path = make(world, tmp_path)
    with world.client() as client:
        before = client.get("/v1/recordings?limit=500").json()["data"]
        with path.open("rb") as fh:
            r = client.post("/v1/recordings", files={"file": (path.name, fh)})
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
        assert r.json()["error"]["message"]
        assert client.get("/v1/recordings?limit=500").json()["data"] == before  # nothing kept


@pytest.mark.parametrize("case", list(UPLOADS))
def test_hostile_import_from_a_url_gets_the_same_4xx(
    world: World, tmp_path: Path, case: str
) -> None:
    """The same files served over HTTP and imported by URL: the same answers."""
    make, status, code = UPLOADS[case]
    path = make(world, tmp_path)
    url = world.origin.add(f"/{case}/{path.name}", Route(path.read_bytes()))
    with world.client() as client:
        before = client.get("/v1/recordings?limit=500").json()["data"]
        r = client.post("/v1/recordings", json={"url": url})
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
        assert client.get("/v1/recordings?limit=500").json()["data"] == before  # nothing kept
    assert world.origin.hits[f"/{case}/{path.name}"] == 1


# --- refused where the API probes: registered objects ------------------------------

REGISTERED: dict[str, Make] = {
    "hls-file-url.m3u8": lambda w, d: hostile.hls_playlist(d, f"file://{w.secret}"),
    "hls-listener.m3u8": lambda w, d: hostile.hls_playlist(
        d, f"http://127.0.0.1:{w.listener.port}/seg0.ts"
    ),
    # At the top of the blob folder, a relative name reaches another recording's blob.
    "list.ffconcat": lambda w, d: hostile.ffconcat(d, w.other_blob),
    "passwd.ffconcat": lambda w, d: hostile.ffconcat(d, "/etc/passwd"),
}


@pytest.mark.parametrize("key", list(REGISTERED))
def test_hostile_registered_object_is_refused(world: World, key: str) -> None:
    REGISTERED[key](world, world.root / "data" / "blobs" / key)
    with world.client() as client:
        r = client.post("/v1/recordings", json={"object_key": key})
    assert (r.status_code, r.json()["error"]["code"]) == (415, "unsupported_media"), r.text


# --- found by the worker: a failed job with a code ---------------------------------


def _cpu_seconds(pid: int) -> float:
    """CPU time of the server and of its children that ended (the decoding child)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _upload(client: httpx.Client, path: Path) -> str:
    with path.open("rb") as fh:
        r = client.post("/v1/recordings", files={"file": (path.name, fh)})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _transcribe(client: httpx.Client, rec_id: str) -> str:
    r = client.post(f"/v1/recordings/{rec_id}/transcribe", json={"language": "en"})
    assert r.status_code == 202, r.text
    return str(r.json()["transcriptionId"])


def _finished(client: httpx.Client, tr_id: str, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/v1/transcriptions/{tr_id}").json()
        return body if body["status"] in ("completed", "failed") else None

    return wait_for(done, timeout=timeout, interval=0.1, what=f"transcription {tr_id}")


LIARS: dict[str, Make] = {
    "flac-claims-11s-holds-220s": lambda w, d: hostile.lying_flac(
        d / "liar.flac", holds_s=220.0, claims_s=11.0
    ),
    "wav-claims-11s-holds-220s": lambda w, d: hostile.lying_wav(
        d / "liar.wav", holds_s=220.0, claims_s=11.0
    ),
    "silent-flac-claims-10s-holds-30min": lambda w, d: hostile.lying_flac(
        d / "quiet.flac", holds_s=1800.0, claims_s=10.0, silent=True
    ),
}


@pytest.mark.parametrize("case", list(LIARS))
def test_lying_header_fails_the_job_at_the_limit(world: World, tmp_path: Path, case: str) -> None:
    path = LIARS[case](world, tmp_path)
    with world.client() as client:
        rec_id = _upload(client, path)  # the header is under the limit: accepted
        cpu = _cpu_seconds(world.server.proc.pid)
        job = _finished(client, _transcribe(client, rec_id))
        spent = _cpu_seconds(world.server.proc.pid) - cpu
    assert job["status"] == "failed"
    assert job["error"]["code"] == "duration_exceeded", job
    assert f"{MAX_S} s" in job["error"]["message"]
    assert spent < 5.0, f"the job cost {spent:.1f} s of CPU: decoding went past the limit"


SWAPS: dict[str, Make] = {
    "hls-file-url": lambda w, d: hostile.hls_playlist(d, f"file://{w.secret}"),
    "ffconcat-other-blob": lambda w, d: hostile.ffconcat(d, w.other_blob),
    "random-bytes": lambda w, d: hostile.random_bytes(d),
}


@pytest.mark.parametrize("case", list(SWAPS))
def test_object_swapped_after_registration_fails_the_job(world: World, case: str) -> None:
    # A bot's bucket is written by others: what the worker opens is checked again.
    # The extension a playlist needs for FFmpeg to read it as one.
    key = f"swap-{case}.{'m3u8' if case.startswith('hls') else 'mp3'}"
    target = world.root / "data" / "blobs" / key
    shutil.copyfile(world.secret, target)
    with world.client() as client:
        r = client.post("/v1/recordings", json={"object_key": key})
        assert r.status_code == 201, r.text
        SWAPS[case](world, target)
        job = _finished(client, _transcribe(client, r.json()["id"]))
    assert job["status"] == "failed"
    assert job["error"]["code"] == "unsupported_media", job


# --- afterwards ------------------------------------------------------------------


def test_afterwards_the_worker_takes_the_next_job_and_nothing_leaked(
    world: World, testdata: Path
) -> None:
    with world.client() as client:
        job = _finished(client, _transcribe(client, _upload(client, testdata / "jfk.flac")))
        assert job["status"] == "completed", job
        assert "internal_error" not in world.server.log()
    assert world.listener.connections == 0
    assert world.secret.read_bytes() == world.secret_bytes
    # The server wrote only in its data directory: its TMPDIR is empty again, and its
    # folder holds nothing else.
    assert sorted(p.name for p in world.root.iterdir()) == ["data", "server.log", "tmp"]
    assert list((world.root / "tmp").iterdir()) == []
    assert '" 500' not in world.server.log()  # no request answered 500
