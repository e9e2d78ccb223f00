"""Import from a URL (POST /v1/recordings {"url": …}) in-process, against a real HTTP
origin on 127.0.0.1 (allowed through POSTCALL_ALLOWED_NETWORKS where a test needs it).

Refused URLs never connect (a ``Tripwire`` listener counts connections); refusals
keep no file; the fetch holds neither the event loop nor more than the timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from postcall import wiring
from postcall.api.deps import hash_key
from tests import hostile_media as hostile
from tests import media
from tests.e2e.receiver import Tripwire
from tests.origin import Origin, Route, serving
from tests.unit.test_api import make_client, tone
from tests.unit.test_outbound import LOOPBACK_SPELLINGS, NON_PUBLIC, has_ipv6_loopback

CAP = 256 * 1024
TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("wav") / "tone.wav"
    return media.write_audio(path, tone(3)).read_bytes()


@pytest.fixture
def origin() -> Iterator[Origin]:
    with serving() as o:
        yield o


@pytest.fixture
def api(data_dir: Path) -> Iterator[tuple[TestClient, wiring.Components]]:
    client, comps = make_client(
        data_dir,
        allowed_networks="127.0.0.1/32",
        max_upload_bytes=CAP,
        url_import_timeout_s=TIMEOUT_S,
    )
    yield client, comps
    comps.store.close()


def kept_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]


def post(client: TestClient, url: str, **body: Any) -> Any:
    return client.post("/v1/recordings", json={"url": url, **body})


def error(r: Any) -> str:
    return str(r.json()["error"]["code"])


def test_a_clip_is_imported_once_and_stored_like_an_upload(
    api: Any, origin: Origin, wav: bytes, data_dir: Path
) -> None:
    client, comps = api
    url = origin.add("/calls/tone%201.wav", Route(wav, content_type="audio/wav"))
    r = post(client, url, id="call-1", metadata={"participants": [{"id": "1", "name": "Ada"}]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] == "call-1" and body["duration"] == "3.0"
    assert body["filename"] == "tone 1.wav" and body["contentType"] == "audio/wav"
    assert body["size"] == len(wav)
    assert body["metadata"] == {"participants": [{"id": "1", "name": "Ada"}]}
    assert origin.hits["/calls/tone%201.wav"] == 1
    (stored,) = kept_files(data_dir)  # written once, where it is kept: no other copy
    assert stored.read_bytes() == wav
    t = client.post("/v1/recordings/call-1/transcribe", json={}).json()
    assert comps.workers.workers[0].run(burst=True) == 1
    done = client.get(f"/v1/transcriptions/{t['transcriptionId']}").json()
    assert done["status"] == "completed" and done["duration"] == "3.0"


def test_no_content_length_is_read_to_the_end(api: Any, origin: Origin, wav: bytes) -> None:
    client, _ = api
    url = origin.add("/a.wav", Route(wav, length=None))
    r = post(client, url)
    assert r.status_code == 201, r.text
    assert r.json()["size"] == len(wav) and r.json()["contentType"] == "audio/x-wav"


def test_redirects_are_followed_and_each_hop_checked(api: Any, origin: Origin, wav: bytes) -> None:
    client, _ = api
    origin.add("/final.wav", Route(wav))
    origin.add("/r3", Route(status=307, location="/final.wav"))  # relative
    origin.add("/r2", Route(status=302, location=origin.url + "/r3"))
    url = origin.add("/r1", Route(status=301, location="r2"))
    r = post(client, url)
    assert r.status_code == 201, r.text
    assert r.json()["filename"] == "final.wav"
    assert [origin.hits[p] for p in ("/r1", "/r2", "/r3", "/final.wav")] == [1, 1, 1, 1]


def test_more_than_five_redirects_fail(api: Any, origin: Origin, wav: bytes) -> None:
    client, _ = api
    origin.add("/end.wav", Route(wav))
    for i in range(6):
        origin.add(f"/hop{i}", Route(status=302, location=f"/hop{i + 1}"))
    origin.add("/hop6", Route(status=302, location="/end.wav"))
    r = post(client, origin.url + "/hop0")
    assert r.status_code == 422 and error(r) == "fetch_failed", r.text
    assert "redirects more than 5" in r.json()["error"]["message"]
    assert origin.hits["/end.wav"] == 0


def test_a_redirect_to_a_private_address_is_refused_and_never_connects(
    api: Any, origin: Origin
) -> None:
    client, _ = api
    with Tripwire("127.0.0.2") as wire:  # loopback, but not in the allowed 127.0.0.1/32
        url = origin.add("/go", Route(status=302, location=f"http://127.0.0.2:{wire.port}/x.wav"))
        r = post(client, url)
        assert r.status_code == 422 and error(r) == "url_not_allowed", r.text
        assert "127.0.0.2" in r.json()["error"]["message"]
        assert r.json()["error"]["field"] == "url"
        assert wire.connections == 0


@pytest.mark.parametrize("location", ["ftp://127.0.0.1/a.wav", "file:///etc/passwd"])
def test_a_redirect_to_another_scheme_is_refused(api: Any, origin: Origin, location: str) -> None:
    client, _ = api
    r = post(client, origin.add("/go", Route(status=302, location=location)))
    assert r.status_code == 422 and error(r) == "url_not_allowed", r.text


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS + NON_PUBLIC)
def test_every_spelling_of_a_private_target_is_refused(
    host: str, data_dir: Path, wav: bytes
) -> None:
    """The 31 spellings the webhooks refuse, with nothing allowed: 422, no connection."""
    client, comps = make_client(data_dir)  # no POSTCALL_ALLOWED_NETWORKS
    try:
        with Tripwire("127.0.0.1") as wire:
            bare = host.strip("[]")
            name = f"[{bare}]" if ":" in bare else bare
            r = post(client, f"http://{name}:{wire.port}/a.wav")
            assert r.status_code == 422 and error(r) == "url_not_allowed", r.text
            assert wire.connections == 0
        assert client.get("/v1/recordings").json()["data"] == []
    finally:
        comps.store.close()


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_loopback_is_refused_and_never_connects(api: Any) -> None:
    client, _ = api
    with Tripwire("::1") as wire:
        r = post(client, f"http://[::1]:{wire.port}/a.wav")
        assert r.status_code == 422 and error(r) == "url_not_allowed", r.text
        assert wire.connections == 0


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/a.wav",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
        "http:///a.wav",
        "http://127.0.0.1:99999/a.wav",
        "a.wav",
        "http://user:secret@127.0.0.1/a.wav",
        "http://user@127.0.0.1/a.wav",
        "http://" + "a" * 5000 + ".example/",
    ],
)
def test_bad_urls_are_refused(api: Any, url: str) -> None:
    client, _ = api
    r = post(client, url)
    assert r.status_code == 422, r.text
    assert error(r) in ("url_not_allowed", "invalid_input"), r.text


def test_credentials_in_the_url_are_refused_before_connecting(api: Any, origin: Origin) -> None:
    client, _ = api
    url = origin.add("/a.wav", Route(b"x")).replace("http://", "http://user:pw@")
    r = post(client, url)
    assert r.status_code == 422 and error(r) == "url_not_allowed"
    assert "credentials" in r.json()["error"]["message"]
    assert origin.hits["/a.wav"] == 0


@pytest.mark.parametrize("status", [404, 403, 500])
def test_a_remote_error_is_fetch_failed_with_its_status(
    api: Any, origin: Origin, status: int
) -> None:
    client, _ = api
    r = post(client, origin.add("/gone.wav", Route(b"no", status=status)))
    assert r.status_code == 422 and error(r) == "fetch_failed", r.text
    assert str(status) in r.json()["error"]["message"]
    assert r.json()["error"].get("retryable", False) is (status >= 500)


def test_a_refused_connection_is_fetch_failed(api: Any) -> None:
    client, _ = api
    with Tripwire("127.0.0.1") as wire:
        port = wire.port
    r = post(client, f"http://127.0.0.1:{port}/a.wav")  # nothing listens there now
    assert r.status_code == 422 and error(r) == "fetch_failed", r.text
    assert "ConnectError" in r.json()["error"]["message"]


def test_a_host_that_does_not_resolve_is_fetch_failed(api: Any) -> None:
    client, _ = api
    r = post(client, "http://postcall-no-such-host.invalid/a.wav")
    assert r.status_code == 422 and error(r) == "fetch_failed", r.text
    assert "cannot be resolved" in r.json()["error"]["message"]
    assert r.json()["error"]["retryable"] is True


def test_over_the_cap_with_content_length_is_refused_unread(
    api: Any, origin: Origin, data_dir: Path
) -> None:
    client, _ = api
    r = post(client, origin.add("/big.wav", Route(b"\0" * (CAP + 1))))
    assert r.status_code == 413 and error(r) == "payload_too_large", r.text
    assert str(CAP + 1) in r.json()["error"]["message"]  # the declared length, read first
    assert kept_files(data_dir) == []


def test_over_the_cap_without_content_length_stops_at_the_cap(
    api: Any, origin: Origin, data_dir: Path
) -> None:
    client, _ = api
    r = post(client, origin.add("/big.wav", Route(b"\0" * (8 * CAP), length=None)))
    assert r.status_code == 413 and error(r) == "payload_too_large", r.text
    assert kept_files(data_dir) == []


def test_a_content_length_under_the_truth_is_all_that_is_read(
    api: Any, origin: Origin, wav: bytes, data_dir: Path
) -> None:
    """The body is read up to its declared length and no further (never past the cap)."""
    client, _ = api
    r = post(client, origin.add("/lies.wav", Route(wav + b"\0" * (8 * CAP), length=len(wav))))
    assert r.status_code == 201, r.text
    assert r.json()["size"] == len(wav) and r.json()["duration"] == "3.0"


def test_a_content_length_over_the_truth_is_fetch_failed(
    api: Any, origin: Origin, wav: bytes, data_dir: Path
) -> None:
    client, _ = api
    r = post(client, origin.add("/short.wav", Route(wav, length=len(wav) + 1000)))
    assert r.status_code == 422 and error(r) == "fetch_failed", r.text
    assert kept_files(data_dir) == []


def test_a_trickling_server_runs_into_the_timeout_without_holding_the_loop(
    api: Any, origin: Origin, data_dir: Path
) -> None:
    client, _ = api
    url = origin.add("/slow.wav", Route(trickle_s=0.05))
    answers: list[Any] = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: answers.append(post(client, url)))
    thread.start()
    # Meanwhile the API answers: the fetch runs in a thread, not in the event loop.
    while not origin.hits["/slow.wav"]:
        assert time.monotonic() - started < 5, "the origin was never asked"
        assert client.get("/v1/recordings").status_code == 200
    assert client.get("/v1/recordings").status_code == 200
    thread.join(30)
    elapsed = time.monotonic() - started
    (r,) = answers
    assert r.status_code == 422 and error(r) == "fetch_timeout", r.text
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 5
    assert kept_files(data_dir) == []


@pytest.mark.parametrize("length", [None, 100_000], ids=["no-content-length", "content-length"])
def test_a_server_that_stalls_midway_runs_into_the_timeout(
    api: Any, origin: Origin, length: int | None
) -> None:
    """Bytes for a while, then nothing: the wait for the next byte ends at the deadline
    (not one whole timeout later), and what came is not taken for the whole file."""
    client, _ = api
    url = origin.add("/stall.wav", Route(length=length, trickle_s=0.05, trickle_for_s=1.0))
    started = time.monotonic()
    r = post(client, url)
    elapsed = time.monotonic() - started
    assert r.status_code == 422 and error(r) == "fetch_timeout", r.text
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 1.0


@pytest.mark.parametrize("kind", ["hls", "ffconcat", "random"])
def test_playlists_and_non_media_are_unsupported(
    api: Any, origin: Origin, tmp_path: Path, wav: bytes, kind: str, data_dir: Path
) -> None:
    client, _ = api
    target = origin.add("/target.wav", Route(wav))
    if kind == "hls":
        path = hostile.hls_playlist(tmp_path / "list.m3u8", target, "file:///etc/passwd")
        route = Route(path.read_bytes(), content_type="application/vnd.apple.mpegurl")
    elif kind == "ffconcat":
        path = hostile.ffconcat(tmp_path / "list.ffconcat", "/etc/passwd")
        route = Route(path.read_bytes(), content_type="text/plain")
    else:
        route = Route(hostile.random_bytes(tmp_path / "r.bin").read_bytes())
    name = path.name if kind != "random" else "r.wav"
    r = post(client, origin.add(f"/{name}", route))
    assert r.status_code == 415 and error(r) == "unsupported_media", r.text
    assert origin.hits["/target.wav"] == 0  # the playlist's entry was never fetched
    assert kept_files(data_dir) == []


def test_an_empty_file_is_refused(api: Any, origin: Origin) -> None:
    client, _ = api
    r = post(client, origin.add("/empty.wav", Route(b"")))
    assert r.status_code == 400 and error(r) == "empty_file", r.text
    assert r.json()["error"]["field"] == "url"


@pytest.mark.parametrize(
    ("extra", "status", "code"),
    [
        ({"metadata": {"a": float("inf")}}, 422, "invalid_input"),
        ({"metadata": {"channels": {"3": "u1"}}}, 422, "invalid_input"),
        ({"id": "bad id\n"}, 422, "invalid_input"),
        ({"id": "taken"}, 409, "conflict"),
        ({"object_key": "media/x.wav"}, 422, "invalid_input"),
        ({"surprise": 1}, 422, "invalid_input"),
    ],
)
def test_bad_requests_fetch_nothing(
    api: Any, origin: Origin, wav: bytes, extra: dict[str, Any], status: int, code: str
) -> None:
    client, _ = api
    assert post(client, origin.add("/first.wav", Route(wav)), id="taken").status_code == 201
    url = origin.add("/a.wav", Route(wav))
    if extra == {"metadata": {"a": float("inf")}}:
        r = client.post(
            "/v1/recordings",
            content=f'{{"url": "{url}", "metadata": {{"a": Infinity}}}}',
            headers={"content-type": "application/json"},
        )
    else:
        r = post(client, url, **extra)
    assert r.status_code == status and error(r) == code, r.text
    # Speaker metadata the media cannot carry is only known once it is probed.
    fetched = 1 if "channels" in extra.get("metadata", {}) else 0
    assert origin.hits["/a.wav"] == fetched


def test_an_idempotency_key_replays_without_fetching_again(
    api: Any, origin: Origin, wav: bytes
) -> None:
    client, _ = api
    url = origin.add("/a.wav", Route(wav))
    headers = {"Idempotency-Key": "import-1"}
    first = client.post("/v1/recordings", json={"url": url}, headers=headers)
    again = client.post("/v1/recordings", json={"url": url}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert origin.hits["/a.wav"] == 1
    other = client.post("/v1/recordings", json={"url": url + "?v=2"}, headers=headers)
    assert other.status_code == 422 and error(other) == "idempotency_key_reused"
    assert len(client.get("/v1/recordings").json()["data"]) == 1


def test_a_failed_import_frees_its_idempotency_key(api: Any, origin: Origin, wav: bytes) -> None:
    client, _ = api
    headers = {"Idempotency-Key": "import-2"}
    url = origin.add("/later.wav", Route(b"", status=404))
    first = client.post("/v1/recordings", json={"url": url}, headers=headers)
    assert first.status_code == 422 and error(first) == "fetch_failed"
    origin.add("/later.wav", Route(wav))
    again = client.post("/v1/recordings", json={"url": url}, headers=headers)
    assert again.status_code == 201, again.text


def test_an_imported_recording_is_its_tenants_only(api: Any, origin: Origin, wav: bytes) -> None:
    client, comps = api
    comps.store.add_api_key(hash_key("key-b"), name="b", tenant="b")
    r = post(client, origin.add("/a.wav", Route(wav)), id="mine")
    assert r.status_code == 201
    other = {"Authorization": "Bearer key-b"}
    assert client.get("/v1/recordings/mine", headers=other).status_code == 404
    assert client.get("/v1/recordings", headers=other).json()["data"] == []
    # The other tenant may use the same id: ids are per tenant.
    body = {"url": origin.url + "/a.wav", "id": "mine"}
    r = client.post("/v1/recordings", json=body, headers=other)
    assert r.status_code == 201, r.text
