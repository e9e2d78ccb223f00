"""Import from a URL against a real `postcall serve`: a real clip served over HTTP is
imported and transcribed; a redirect to a private address, oversized files (with and
without Content-Length), a trickling server and a missing file are each refused with
their code, and the refused private target sees no connection. (Playlists and concat
lists served over HTTP are in the hostile-media suite.)

The origin listens on 127.0.0.3, the one network the server may reach
(POSTCALL_ALLOWED_NETWORKS=127.0.0.3/32); 127.0.0.1 stays refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import clip
from tests.e2e.receiver import Tripwire
from tests.e2e.server import Server, model_server
from tests.helpers import wait_for, wer
from tests.origin import Origin, Route, serving

pytestmark = pytest.mark.e2e

KEY = "url-import-key"
CAP = 2 * 1024 * 1024
TIMEOUT_S = 3.0
ORIGIN_HOST = "127.0.0.3"


@dataclass
class World:
    server: Server
    origin: Origin

    def client(self) -> httpx.Client:
        return self.server.client(KEY)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, whisper_model_dir: str) -> Iterator[World]:
    with serving(ORIGIN_HOST) as origin:
        server = model_server(
            tmp_path_factory.mktemp("url-import"),
            whisper_model_dir,
            KEY,
            POSTCALL_ALLOWED_NETWORKS=f"{ORIGIN_HOST}/32",
            POSTCALL_MAX_UPLOAD_BYTES=str(CAP),
            POSTCALL_URL_IMPORT_TIMEOUT_S=str(TIMEOUT_S),
        )
        try:
            yield World(server, origin)
        finally:
            server.stop()


def imported(client: httpx.Client, url: str, **body: Any) -> httpx.Response:
    return client.post("/v1/recordings", json={"url": url, **body})


def code(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, str(r.json()["error"]["code"])


def test_a_real_clip_is_imported_and_transcribed(world: World, testdata: Path) -> None:
    ref = clip("jfk.flac")
    data = (testdata / "jfk.flac").read_bytes()
    url = world.origin.add("/bucket/jfk.flac", Route(data, content_type="audio/flac"))
    url += "?X-Amz-Signature=pre-signed-secret"  # a pre-signed link: kept out of the log
    with world.client() as client:
        r = imported(client, url, metadata={"participants": [{"id": "1", "name": "JFK"}]})
        assert r.status_code == 201, r.text
        rec = r.json()
        assert rec["size"] == len(data) and rec["filename"] == "jfk.flac"
        assert abs(float(rec["duration"]) - ref["duration_s"]) < 0.2
        t = client.post(f"/v1/recordings/{rec['id']}/transcribe", json={"language": "en"})
        assert t.status_code == 202, t.text
        tr_id = t.json()["transcriptionId"]

        def finished() -> dict[str, Any] | None:
            body: dict[str, Any] = client.get(f"/v1/transcriptions/{tr_id}").json()
            return body if body["status"] in ("completed", "failed") else None

        done = wait_for(finished, timeout=180, interval=0.25, what="the imported clip's job")
    assert done["status"] == "completed", done
    spoken = " ".join(line.split(": ", 1)[1] for line in done["text"].split("\n"))
    assert wer(ref["text"], spoken) <= 0.2, spoken
    assert all("] JFK: " in line for line in done["text"].split("\n"))
    assert "pre-signed-secret" not in world.server.log()
    assert world.origin.hits["/bucket/jfk.flac"] == 1


def test_a_redirect_to_a_private_address_is_refused_and_never_connects(world: World) -> None:
    with Tripwire("127.0.0.1") as wire, world.client() as client:
        url = world.origin.add(
            "/moved.wav", Route(status=302, location=f"http://127.0.0.1:{wire.port}/a.wav")
        )
        r = imported(client, url)
        assert code(r) == (422, "url_not_allowed"), r.text
        assert "127.0.0.1" in r.json()["error"]["message"]
        direct = imported(client, f"http://localhost:{wire.port}/a.wav")
        assert code(direct) == (422, "url_not_allowed"), direct.text
    assert wire.connections == 0
    assert world.origin.hits["/moved.wav"] == 1


@pytest.mark.parametrize("length", ["auto", None], ids=["content-length", "no-content-length"])
def test_oversize_is_refused(world: World, length: str | None) -> None:
    path = f"/big-{length}.wav"
    url = world.origin.add(path, Route(b"\0" * (3 * CAP), length=length))
    with world.client() as client:
        before = client.get("/v1/recordings").json()["data"]
        r = imported(client, url)
        assert code(r) == (413, "payload_too_large"), r.text
        assert client.get("/v1/recordings").json()["data"] == before


def test_a_trickling_server_hits_the_timeout(world: World) -> None:
    url = world.origin.add("/slow.wav", Route(trickle_s=0.1))
    started = time.monotonic()
    with world.client() as client:
        r = imported(client, url)
        elapsed = time.monotonic() - started
        assert code(r) == (422, "fetch_timeout"), r.text
        assert "POSTCALL_URL_IMPORT_TIMEOUT_S" in r.json()["error"]["message"]
        # The server answered other requests meanwhile, and still does.
        assert client.get("/v1/recordings").status_code == 200
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 10


def test_a_missing_file_is_fetch_failed(world: World) -> None:
    with world.client() as client:
        r = imported(client, world.origin.url + "/nothing-here.wav")
    assert code(r) == (422, "fetch_failed"), r.text
    assert "404" in r.json()["error"]["message"]


def test_no_request_answered_500(world: World) -> None:
    assert '" 500' not in world.server.log()
    assert "Traceback" not in world.server.log()
