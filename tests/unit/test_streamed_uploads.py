"""Multipart uploads are written straight to the blob store as they arrive
(``postcall.api.uploads``): whatever the order of the form's parts, and whatever goes
wrong, a recording keeps exactly its files and a refusal keeps none."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from postcall import wiring
from postcall.api.app import create_app
from postcall.settings import Settings
from tests import media
from tests.fakes import ScriptedEngine
from tests.unit.test_api import tone

KEY = "test-key-123"


@pytest.fixture
def wav(tmp_path: Path) -> bytes:
    return media.write_audio(tmp_path / "tone.wav", tone(2)).read_bytes()


@pytest.fixture
def api(data_dir: Path) -> Iterator[TestClient]:
    comps = wiring.build(
        Settings(data_dir=data_dir, api_keys=KEY), with_worker=False, engine=ScriptedEngine()
    )
    client = TestClient(create_app(comps))
    client.headers["Authorization"] = f"Bearer {KEY}"
    yield client
    comps.store.close()


def blobs(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0und") -> bytes:
    """A form body with the parts in the order given: (name, filename or None, data)."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def post(client: TestClient, body: bytes, boundary: str = "b0und", **headers: str) -> Any:
    return client.post(
        "/v1/recordings",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}", **headers},
    )


def test_fields_after_the_file_are_read(api: TestClient, wav: bytes, data_dir: Path) -> None:
    meta = b'{"participants": [{"id": "1", "name": "Ada"}]}'
    body = multipart([("file", "a.wav", wav), ("metadata", None, meta), ("id", None, b"late-id")])
    r = post(api, body)
    assert r.status_code == 201, r.text
    assert r.json()["id"] == "late-id"
    assert r.json()["metadata"]["participants"][0]["name"] == "Ada"
    (stored,) = blobs(data_dir)
    assert stored.read_bytes() == wav  # the very bytes sent, written once


def test_several_files_with_tracks_keep_their_order(
    api: TestClient, wav: bytes, data_dir: Path
) -> None:
    short = media.write_audio(data_dir / "short.wav", tone(1)).read_bytes()
    tracks = b'[{"participant_id": "a"}, {"participant_id": "b", "offset": 0.5}]'
    body = multipart([("file", "a.wav", wav), ("file", "b.wav", short), ("tracks", None, tracks)])
    r = post(api, body)
    assert r.status_code == 201, r.text
    got = api.get(f"/v1/recordings/{r.json()['id']}").json()
    assert got["duration"] == "2.0"  # max(0 + 2.0, 0.5 + 1.0)
    assert sorted(p.stat().st_size for p in blobs(data_dir)) == sorted([len(wav), len(short)])


@pytest.mark.parametrize(
    ("parts", "status", "field"),
    [
        ([("file", "a.wav", b"WAV"), ("metadata", None, b"{nope")], 422, "metadata"),
        ([("file", "a.wav", b"WAV"), ("id", None, b"../x")], 422, "id"),
        ([("file", "a.wav", b"WAV"), ("file", "b.wav", b"WAV")], 422, "tracks"),
        (
            [
                ("file", "a.wav", b"WAV"),
                ("tracks", None, b'[{"participant_id": "a"}, {"participant_id": "b"}]'),
            ],
            422,
            "tracks",
        ),
        ([("file", "a.wav", b"WAV"), ("notes", "n.txt", b"hello")], 422, "notes"),
        ([("metadata", None, b"x" * (1024 * 1024 + 1)), ("file", "a.wav", b"WAV")], 413, None),
        ([("file", "a.wav", b"")], 400, "file"),
        ([("metadata", None, b"{}")], 422, "file"),
    ],
    ids=[
        "bad-metadata",
        "bad-id",
        "two-files-no-tracks",
        "track-count",
        "file-in-other-field",
        "huge-field",
        "empty-file",
        "no-file",
    ],
)
def test_a_refused_form_keeps_no_file(
    api: TestClient,
    wav: bytes,
    data_dir: Path,
    parts: list[tuple[str, str | None, bytes]],
    status: int,
    field: str | None,
) -> None:
    real = [(n, f, wav if d == b"WAV" else d) for n, f, d in parts]
    r = post(api, multipart(real))
    assert r.status_code == status, r.text
    if field is not None:
        assert r.json()["error"]["field"] == field
    assert blobs(data_dir) == []
    assert api.get("/v1/recordings").json()["data"] == []


def test_a_body_cut_off_inside_the_file_keeps_nothing(
    api: TestClient, wav: bytes, data_dir: Path
) -> None:
    body = multipart([("file", "a.wav", wav)])
    r = post(api, body[: len(body) // 2])
    assert r.status_code == 422 and r.json()["error"]["field"] == "file"
    assert blobs(data_dir) == []


def test_an_upload_over_the_cap_stops_and_keeps_nothing(data_dir: Path, wav: bytes) -> None:
    comps = wiring.build(
        Settings(data_dir=data_dir, api_keys=KEY, max_upload_bytes=100_000),
        with_worker=False,
        engine=ScriptedEngine(),
    )
    client = TestClient(create_app(comps))
    client.headers["Authorization"] = f"Bearer {KEY}"
    big = media.write_audio(data_dir / "big.wav", tone(30)).read_bytes()  # ~960 kB
    r = post(client, multipart([("file", "big.wav", big)]))
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert blobs(data_dir) == []
    comps.store.close()


def test_an_idempotent_retry_keeps_one_copy(api: TestClient, wav: bytes, data_dir: Path) -> None:
    first = post(api, multipart([("file", "a.wav", wav)]), **{"Idempotency-Key": "k1"})
    again = post(
        api, multipart([("file", "a.wav", wav)], "other"), "other", **{"Idempotency-Key": "k1"}
    )
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert len(blobs(data_dir)) == 1  # the replay's copy was deleted


def test_the_multipart_helper_matches_what_clients_send(api: TestClient, wav: bytes) -> None:
    """The same upload through httpx's own multipart encoder (what curl -F sends too)."""
    r = api.post("/v1/recordings", files={"file": ("a.wav", io.BytesIO(wav))}, data={"id": "x1"})
    assert r.status_code == 201 and r.json()["id"] == "x1"
