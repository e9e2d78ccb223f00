"""Download links on both blob backends: a pre-signed S3 URL (checked by an independent
SigV4 verifier in front of moto), or postcall's own HMAC-signed link on a local folder."""

from __future__ import annotations

import io
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from postcall.blobs.base import BlobStore, new_key
from postcall.blobs.local import LocalBlobStore
from postcall.blobs.s3 import S3BlobStore
from postcall.domain import Transcription
from postcall.errors import Forbidden
from postcall.service import Service, rendering_key
from postcall.store.sqlite import SqliteStore
from postcall.transcripts import Transcripts
from postcall.worker import Worker
from tests import media
from tests.contract.s3_server import S3Server, s3_server_fixture  # noqa: F401 (fixture)
from tests.fakes import ScriptedEngine
from tests.unit.test_api import tone

TTL = 600


@pytest.fixture
def s3_blobs(s3_server: S3Server) -> S3BlobStore:
    return S3BlobStore(s3_server.bucket, f"links/{new_key('run')}/", client=s3_server.client())


def finished(blobs: BlobStore, tmp_path: Path) -> tuple[Transcripts, Transcription]:
    store = SqliteStore(tmp_path / "store.db")
    service = Service(store, blobs)
    wav = media.write_audio(tmp_path / "t.wav", tone(2)).read_bytes()
    rec = service.create_recording(
        "acme",
        io.BytesIO(wav),
        filename="t.wav",
        content_type="audio/wav",
        metadata={"participants": [{"id": "9", "name": "Grace"}]},
    )
    t = service.request_transcription("acme", rec.id)
    assert Worker(store, blobs, ScriptedEngine()).run(burst=True) == 1
    return Transcripts(service, ttl_s=TTL), service.get_transcription("acme", t.id)


def test_s3_link_is_a_presigned_url_of_the_rendering(
    s3_blobs: S3BlobStore, s3_server: S3Server, tmp_path: Path
) -> None:
    transcripts, t = finished(s3_blobs, tmp_path)
    link = transcripts.download_link(t, "http://unused")
    assert link is not None
    query = parse_qs(urlsplit(link.url).query)
    assert query["X-Amz-Expires"] == [str(TTL)] and "X-Amz-Signature" in query
    blocks = httpx.get(link.url, timeout=10).json()
    assert blocks[0]["participant"]["name"] == "Grace"
    assert [w["text"] for w in blocks[0]["words"]] == ["w0", "w1"]
    # The same object serves the next link; it expires with its lifetime.
    again = transcripts.download_link(t, "http://unused")
    assert again is not None and httpx.get(again.url, timeout=10).status_code == 200
    with s3_server.clock_moved(TTL + 5):
        assert httpx.get(link.url, timeout=10).status_code == 403
    tampered = link.url.replace("X-Amz-Expires=600", "X-Amz-Expires=6000")
    assert httpx.get(tampered, timeout=10).status_code == 403
    # Deleting the transcript deletes the rendering too.
    assert s3_blobs.exists(rendering_key(t.id, "recall"))
    transcripts.service.delete_transcription("acme", t.id)
    assert not s3_blobs.exists(rendering_key(t.id, "recall"))
    assert httpx.get(again.url, timeout=10).status_code == 404


def test_local_link_is_signed_by_postcall(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    transcripts, t = finished(blobs, tmp_path)
    link = transcripts.download_link(t, "https://postcall.example/")
    assert link is not None
    assert link.url.startswith(f"https://postcall.example/api/v1/transcript/{t.id}/download/")
    token = parse_qs(urlsplit(link.url).query)["token"][0]
    blocks = json.loads(transcripts.open_link(t.id, token))
    assert blocks[0]["participant"]["id"] == "9"
    with pytest.raises(Forbidden):
        transcripts.open_link(t.id, token[:-1] + ("A" if token[-1] != "A" else "B"))
    # Nothing is written for the local link: the rendering is made when it is fetched.
    assert not blobs.exists(rendering_key(t.id, "recall"))


def test_no_link_before_the_transcript_is_done(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    store = SqliteStore(tmp_path / "store.db")
    service = Service(store, blobs)
    wav = media.write_audio(tmp_path / "t.wav", tone(1)).read_bytes()
    rec = service.create_recording("a", io.BytesIO(wav), filename="t", content_type="audio/wav")
    t = service.request_transcription("a", rec.id)
    assert Transcripts(service, ttl_s=TTL).download_link(t, "http://x") is None


@pytest.mark.parametrize("ttl", [0, 7 * 24 * 3600 + 1])
def test_link_lifetime_is_bounded(tmp_path: Path, ttl: int) -> None:
    service = Service(SqliteStore(tmp_path / "s.db"), LocalBlobStore(tmp_path / "b"))
    with pytest.raises(ValueError):
        Transcripts(service, ttl_s=ttl)
