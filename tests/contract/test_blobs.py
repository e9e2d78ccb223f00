"""The blob contract: the same tests against every backend (local folder, S3 via moto)."""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from postcall import audio
from postcall.blobs.base import BlobStore, new_key
from postcall.blobs.local import LocalBlobStore
from postcall.blobs.s3 import DEFAULT_PART_SIZE, S3BlobStore
from postcall.errors import InvalidInput, NotFound, PayloadTooLarge
from tests import media
from tests.contract.s3_server import S3Server, s3_server_fixture  # noqa: F401

MiB = 1024 * 1024
PREFIX = "tenant-a/"


@dataclass
class Backend:
    """A store under test plus backdoors the contract needs to see what is really kept."""

    name: str
    store: BlobStore
    #: Write an object the way a meeting bot would (not through the store).
    write_raw: Callable[[str, bytes], None]
    #: Everything physically left in the store's space: files, objects, pending uploads.
    leftovers: Callable[[], list[str]]
    #: The longest object key (in bytes) the backend can hold below its root/prefix.
    longest_key: int


def _local_backend(root: Path) -> Backend:
    def write_raw(key: str, data: bytes) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def leftovers() -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    # A file name has its own limit (255 bytes) on a local disk.
    return Backend("local", LocalBlobStore(root), write_raw, leftovers, longest_key=200)


def _s3_backend(server: S3Server, prefix: str) -> Backend:
    raw = server.client()

    def write_raw(key: str, data: bytes) -> None:
        raw.put_object(Bucket=server.bucket, Key=prefix + key, Body=data)

    def leftovers() -> list[str]:
        listed = raw.list_objects_v2(Bucket=server.bucket, Prefix=prefix)
        objects = [o["Key"] for o in listed.get("Contents", [])]
        uploads = raw.list_multipart_uploads(Bucket=server.bucket, Prefix=prefix)
        pending = [f"(upload) {u['Key']}" for u in uploads.get("Uploads", [])]
        return sorted(objects + pending)

    store = S3BlobStore(server.bucket, prefix, client=server.client())
    return Backend("s3", store, write_raw, leftovers, longest_key=1024 - len(prefix.encode()))


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        yield _local_backend(tmp_path / "blobs")
        return
    server: S3Server = request.getfixturevalue("s3_server")
    # A prefix of its own per test, so leftovers() sees only this test's objects.
    b = _s3_backend(server, f"{PREFIX}{new_key('run')}/")
    yield b
    raw = server.client()
    for key in b.leftovers():
        if not key.startswith("(upload)"):
            raw.delete_object(Bucket=server.bucket, Key=key)


@pytest.fixture
def s3(s3_server: S3Server) -> Iterator[Backend]:
    yield _s3_backend(s3_server, f"{PREFIX}{new_key('run')}/")


class ChunkReader:
    """A file-like reader over a generator of chunks that records how it is read."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""
        self.read_sizes: list[int] = []
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        self.read_sizes.append(size)
        if size is None or size < 0:
            raise AssertionError("the whole stream was asked for at once")
        while len(self._pending) < size:
            try:
                self._pending += next(self._chunks)
            except StopIteration:
                break
        out, self._pending = self._pending[:size], self._pending[size:]
        self.consumed += len(out)
        return out


def random_chunks(total: int, chunk: int, seed: int, digest: Any = None) -> Iterator[bytes]:
    rng = random.Random(seed)
    sent = 0
    while sent < total:
        block = rng.randbytes(min(chunk, total - sent))
        if digest is not None:
            digest.update(block)
        sent += len(block)
        yield block


def failing_chunks(good_bytes: int, error: BaseException) -> Iterator[bytes]:
    yield from random_chunks(good_bytes, 256 * 1024, seed=7)
    raise error


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(MiB):
            digest.update(block)
    return digest.hexdigest()


# -- the contract -------------------------------------------------------------------


def test_put_get_exists_delete_round_trip(backend: Backend) -> None:
    store = backend.store
    key = new_key("media")
    data = b"RIFF" + bytes(range(256)) * 40
    assert not store.exists(key)

    assert store.put(key, io.BytesIO(data)) == len(data)
    assert store.exists(key)
    assert store.get_bytes(key) == data
    with store.local_file(key) as path:
        assert path.read_bytes() == data

    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # missing is fine
    with pytest.raises(NotFound):
        store.get_bytes(key)
    with pytest.raises(NotFound), store.local_file(key):
        pass  # pragma: no cover
    assert backend.leftovers() == []


def test_put_bytes_documents_and_overwrite(backend: Backend) -> None:
    store = backend.store
    key = "transcripts/" + new_key("tr").split("/")[1] + ".json"
    store.put_bytes(key, b'{"v": 1}')
    assert store.get_bytes(key) == b'{"v": 1}'
    store.put_bytes(key, b'{"v": 2}')
    assert store.get_bytes(key) == b'{"v": 2}'
    assert store.exists(key)


def test_empty_stream_is_stored_as_empty_object(backend: Backend) -> None:
    key = new_key("media")
    assert backend.store.put(key, io.BytesIO(b"")) == 0
    assert backend.store.exists(key)
    assert backend.store.get_bytes(key) == b""


@pytest.mark.parametrize("kind", ["media", "doc", "transcripts"])
def test_keys_from_new_key(backend: Backend, kind: str) -> None:
    keys = {new_key(kind) for _ in range(3)}
    assert len(keys) == 3
    for key in keys:
        backend.store.put_bytes(key, key.encode())
    for key in keys:
        assert backend.store.get_bytes(key) == key.encode()


def test_large_stream_is_put_in_parts(backend: Backend) -> None:
    total = 25 * 1000 * 1000
    sent = hashlib.sha256()
    reader = ChunkReader(random_chunks(total, 256 * 1024, seed=1, digest=sent))
    key = new_key("media")

    assert backend.store.put(key, reader) == total  # type: ignore[arg-type]

    # Consumed to the end, in bounded reads: never "everything at once".
    assert reader.consumed == total
    assert len(reader.read_sizes) >= 3
    assert max(reader.read_sizes) <= 16 * MiB
    with backend.store.local_file(key) as path:
        assert path.stat().st_size == total
        assert sha256_file(path) == sent.hexdigest()


@pytest.mark.parametrize(
    ("good_bytes", "error"),
    [
        (0, OSError("client went away")),
        (64 * 1024, RuntimeError("decoder blew up")),
        (12 * MiB, PayloadTooLarge("upload over the limit")),
        (DEFAULT_PART_SIZE * 2 + 1, PayloadTooLarge("upload over the limit")),
    ],
    ids=["at-start", "small", "midway-multipart", "after-two-parts"],
)
def test_reader_raising_leaves_nothing(
    backend: Backend, good_bytes: int, error: BaseException
) -> None:
    key = new_key("media")
    reader = ChunkReader(failing_chunks(good_bytes, error))
    with pytest.raises(type(error)) as caught:
        backend.store.put(key, reader)  # type: ignore[arg-type]
    assert caught.value is error
    assert not backend.store.exists(key)
    assert backend.leftovers() == []


def test_failed_put_keeps_the_previous_object(backend: Backend) -> None:
    key = new_key("media")
    backend.store.put_bytes(key, b"old")
    reader = ChunkReader(failing_chunks(10 * MiB, PayloadTooLarge("too big")))
    with pytest.raises(PayloadTooLarge):
        backend.store.put(key, reader)  # type: ignore[arg-type]
    assert backend.store.get_bytes(key) == b"old"


def test_local_file_is_a_real_media_file(backend: Backend, tmp_path: Path) -> None:
    wav = media.write_audio(
        tmp_path / "tone.wav",
        np.sin(np.linspace(0, 2 * np.pi * 440, 16000)).astype(np.float32) * 0.3,
    )
    key = new_key("media")
    with wav.open("rb") as fh:
        backend.store.put(key, fh)

    with backend.store.local_file(key) as path:
        assert path.is_file()
        assert path.read_bytes() == wav.read_bytes()
        info = audio.probe(path)  # PyAV opens it like the worker does
        assert info.duration == pytest.approx(1.0, abs=0.05)
    assert backend.store.exists(key)
    if backend.name == "s3":
        # A downloaded copy, gone with the context (its folder too).
        assert not path.exists()
        assert not path.parent.exists()


def test_local_file_copy_is_removed_on_error(backend: Backend) -> None:
    key = new_key("media")
    backend.store.put_bytes(key, b"x" * 1000)
    seen: list[Path] = []
    with pytest.raises(ZeroDivisionError), backend.store.local_file(key) as path:
        seen.append(path)
        raise ZeroDivisionError
    assert backend.store.exists(key)
    if backend.name == "s3":
        assert not seen[0].exists()


def test_resolve_external_accepts_an_existing_nested_key(backend: Backend) -> None:
    object_key = f"bots/2024-05-01/{new_key('call').replace('/', '-')}.webm"
    backend.write_raw(object_key, b"webm bytes")

    key = backend.store.resolve_external(object_key)

    assert backend.store.exists(key)
    assert backend.store.get_bytes(key) == b"webm bytes"
    with backend.store.local_file(key) as path:
        assert path.read_bytes() == b"webm bytes"


@pytest.mark.parametrize(
    "object_key",
    [
        "../x",
        "/abs",
        "a//b",
        "a\\b",
        "bots/../../etc/passwd",
        "./a",
        "a/.",
        "a/",
        "",
        "a\x00b",
        "a\nb",
        "a\x7fb",
        "k" * 1025,
        "é" * 513,  # 1026 bytes in UTF-8
    ],
)
def test_resolve_external_refuses_bad_keys(backend: Backend, object_key: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        backend.store.resolve_external(object_key)
    assert caught.value.field == "object_key"


def test_resolve_external_missing_key_is_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound):
        backend.store.resolve_external("bots/missing/recording.webm")
    backend.write_raw("bots/dir/inner.webm", b"x")
    with pytest.raises(NotFound):
        backend.store.resolve_external("bots/dir")  # a "folder" is not an object


def test_resolve_external_refuses_postcall_managed_objects(backend: Backend) -> None:
    # Registering an upload's key would make the client co-own (and, by deleting its
    # recording, delete) an object postcall manages.
    key = new_key("media")
    backend.store.put_bytes(key, b"someone's upload")
    with pytest.raises(InvalidInput) as caught:
        backend.store.resolve_external(key)
    assert caught.value.field == "object_key"


def test_resolve_external_accepts_the_longest_key(backend: Backend) -> None:
    object_key = "bots/" + "k" * (backend.longest_key - 5)
    backend.write_raw(object_key, b"long")
    assert backend.store.resolve_external(object_key) == object_key


# -- S3 only ------------------------------------------------------------------------


def test_s3_presigned_get_fetches_the_bytes(s3: Backend) -> None:
    key = "bots/meeting 1/" + new_key("doc").replace("/", "-") + ".json"
    s3.write_raw(key, b'{"words": []}')
    url = s3.store.presign_get(s3.store.resolve_external(key), 60)
    assert url is not None

    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b'{"words": []}'


def test_s3_presigned_get_refuses_expired_and_tampered_urls(
    s3: Backend, s3_server: S3Server
) -> None:
    key = new_key("doc")
    s3.store.put_bytes(key, b"secret transcript")
    other = new_key("doc")
    s3.store.put_bytes(other, b"another tenant's transcript")
    url = s3.store.presign_get(key, 60)
    assert url is not None
    assert httpx.get(url).status_code == 200

    with s3_server.clock_moved(61):
        assert httpx.get(url).status_code == 403
    with s3_server.clock_moved(30):
        assert httpx.get(url).status_code == 200

    tampered = [
        url.replace(key.split("/")[1], other.split("/")[1]),  # another object
        url.replace("X-Amz-Expires=60", "X-Amz-Expires=600"),  # a longer life
        url[:-4] + ("0000" if not url.endswith("0000") else "1111"),  # the signature
    ]
    for bad in tampered:
        assert bad != url
        assert httpx.get(bad).status_code == 403, bad


def test_s3_presign_get_checks_expiry_bounds(s3: Backend) -> None:
    for bad in (0, -5, 7 * 24 * 3600 + 1):
        with pytest.raises(ValueError):
            s3.store.presign_get(new_key("doc"), bad)


def test_s3_large_put_is_a_multipart_upload(s3: Backend, s3_server: S3Server) -> None:
    key = new_key("media")
    total = DEFAULT_PART_SIZE * 3 + 123
    reader = ChunkReader(random_chunks(total, MiB, seed=3))
    assert s3.store.put(key, reader) == total  # type: ignore[arg-type]
    head = s3_server.client().head_object(
        Bucket=s3_server.bucket,
        Key=s3.store.prefix + key,  # type: ignore[attr-defined]
    )
    assert head["ContentLength"] == total
    assert head["ETag"].strip('"').endswith("-4")  # four parts


def test_s3_prefix_isolates_tenants(s3_server: S3Server) -> None:
    a = S3BlobStore(s3_server.bucket, "tenant-a/", client=s3_server.client())
    b = S3BlobStore(s3_server.bucket, "/tenant-b", client=s3_server.client())
    key = "bots/" + new_key("call").replace("/", "-") + ".webm"
    a.put_bytes(key, b"a's")
    try:
        assert a.resolve_external(key) == key
        raw = s3_server.client().get_object(Bucket=s3_server.bucket, Key=f"tenant-a/{key}")
        assert raw["Body"].read() == b"a's"
        assert b.prefix == "tenant-b/"
        assert not b.exists(key)
        with pytest.raises(NotFound):
            b.resolve_external(key)
    finally:
        a.delete(key)


def test_s3_from_url_reads_the_environment(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))

    store = S3BlobStore.from_url(f"s3://{s3_server.bucket}/tenant-env/")
    assert (store.bucket, store.prefix) == (s3_server.bucket, "tenant-env/")
    assert store.client.meta.region_name == "us-east-1"
    key = new_key("doc")
    store.put_bytes(key, b"from env")
    try:
        assert store.get_bytes(key) == b"from env"
        url = store.presign_get(key, 30)
        assert url is not None and url.startswith(s3_server.endpoint_url + "/")
        assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
        assert f"/{s3_server.bucket}/tenant-env/" in url  # path-style addressing
    finally:
        store.delete(key)


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://media", "media", ""),
        ("s3://media/", "media", ""),
        ("s3://media/tenant-a", "media", "tenant-a/"),
        ("s3://media/tenant-a/recordings/", "media", "tenant-a/recordings/"),
    ],
)
def test_s3_from_url(url: str, bucket: str, prefix: str, s3_server: S3Server) -> None:
    store = S3BlobStore.from_url(url, client=s3_server.client())
    assert (store.bucket, store.prefix) == (bucket, prefix)


@pytest.mark.parametrize(
    "url", ["file:///data", "s3://", "s3:///prefix", "s3://b/a//c", "s3://b/../x", "s3://b/p?x=1"]
)
def test_s3_from_url_refuses(url: str, s3_server: S3Server) -> None:
    with pytest.raises((ValueError, InvalidInput)):
        S3BlobStore.from_url(url, client=s3_server.client())


# -- local only ---------------------------------------------------------------------


def test_local_presign_get_is_none(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    key = new_key("doc")
    store.put_bytes(key, b"{}")
    assert store.presign_get(key, 60) is None


def test_local_symlink_escape_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = LocalBlobStore(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"not yours")
    (root / "bots").mkdir()
    (root / "bots" / "link.webm").symlink_to(outside / "secret.txt")
    (root / "shared").symlink_to(outside, target_is_directory=True)

    for object_key in ("bots/link.webm", "shared/secret.txt"):
        with pytest.raises(InvalidInput) as caught:
            store.resolve_external(object_key)
        assert caught.value.field == "object_key"
        # Nor can the key be used directly, whatever the caller.
        with pytest.raises(InvalidInput):
            store.get_bytes(object_key)
        with pytest.raises(InvalidInput), store.local_file(object_key):
            pass  # pragma: no cover


def test_local_symlink_inside_root_is_followed(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = LocalBlobStore(root)
    (root / "bots").mkdir()
    (root / "bots" / "real.webm").write_bytes(b"inside")
    (root / "bots" / "alias.webm").symlink_to(root / "bots" / "real.webm")
    assert store.get_bytes(store.resolve_external("bots/alias.webm")) == b"inside"


def test_local_registered_file_swapped_for_a_symlink_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = LocalBlobStore(root)
    (tmp_path / "secret").write_bytes(b"not yours")
    (root / "bots").mkdir()
    (root / "bots" / "rec.webm").write_bytes(b"ok")
    key = store.resolve_external("bots/rec.webm")
    (root / "bots" / "rec.webm").unlink()
    (root / "bots" / "rec.webm").symlink_to(tmp_path / "secret")
    with pytest.raises(InvalidInput):
        store.get_bytes(key)


def test_local_server_keys_unchanged_and_other_keys_refused(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    key = new_key("media")
    store.put_bytes(key, b"x")
    assert (tmp_path / "blobs" / key).read_bytes() == b"x"
    for bad in ("../x", "/etc/passwd", "a//b", "a\\b"):
        with pytest.raises(InvalidInput):
            store.put_bytes(bad, b"x")
    assert not (tmp_path / "x").exists()
