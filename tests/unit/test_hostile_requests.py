"""Hostile requests (the request half of the hostile-input suite).

Each case is a request a careless or hostile client could send, against the real app
(SQLite store, local blobs, an English-only model configured, a scripted engine). Each
must get its own specific 4xx, never a 500, and every listing and read path must still
answer afterwards: the cases share one server, so whatever one of them left behind
would break the checks of all that follow.
"""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from fastapi.testclient import TestClient

from postcall import formats, wiring
from postcall.api.app import create_app
from postcall.domain import Segment, TranscriptDocument, Word
from postcall.settings import Settings
from tests import media
from tests.fakes import ScriptedEngine
from tests.unit.test_api import tone

KEY = "hostile-test-key"


@dataclass
class World:
    client: TestClient
    comps: wiring.Components
    wav: bytes
    recording: str  # a good recording every case may aim at
    transcription: str  # a finished transcription of it


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, whisper_model_dir: str) -> Iterator[World]:
    root = tmp_path_factory.mktemp("hostile")
    settings = Settings(data_dir=root / "data", api_keys=KEY, whisper_model=whisper_model_dir)
    comps = wiring.build(settings, with_worker=True, engine=ScriptedEngine())
    client = TestClient(create_app(comps), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {KEY}"
    wav = media.write_audio(root / "tone.wav", tone(3)).read_bytes()
    rec = upload(client, wav, metadata='{"participants": [{"id": "1", "name": "Ada"}]}')
    assert rec.status_code == 201, rec.text
    tr = client.post(f"/v1/recordings/{rec.json()['id']}/transcribe", json={})
    assert tr.status_code == 202, tr.text
    assert comps.workers is not None and comps.workers.workers[0].run(burst=True) == 1
    yield World(client, comps, wav, rec.json()["id"], tr.json()["transcriptionId"])
    client.close()
    comps.store.close()


def upload(client: TestClient, wav: bytes, **fields: str) -> httpx.Response:
    return client.post("/v1/recordings", files={"file": ("a.wav", io.BytesIO(wav))}, data=fields)


def deep(levels: int, leaf: str = "1") -> str:
    return '{"a":' * levels + leaf + "}" * levels


def post_json(client: TestClient, url: str, text: str) -> httpx.Response:
    return client.post(url, content=text.encode(), headers={"Content-Type": "application/json"})


Send = Callable[[World], httpx.Response]


def meta(text: str) -> Send:
    """An upload whose metadata form field is ``text``."""
    return lambda w: upload(w.client, w.wav, metadata=text)


def register(text: str) -> Send:
    return lambda w: post_json(w.client, "/v1/recordings", text)


def transcribe(text: str) -> Send:
    return lambda w: post_json(w.client, f"/v1/recordings/{w.recording}/transcribe", text)


def recall(text: str) -> Send:
    return lambda w: post_json(
        w.client, f"/api/v1/recording/{w.recording}/create_transcript/", text
    )


def get(path: str) -> Send:
    return lambda w: w.client.get(path.format(rec=w.recording, tr=w.transcription))


BIG = json.dumps({"notes": "x" * 70_000})

# (name, request, status, code, field); field None: not checked (none is named).
CASES: list[tuple[str, Send, int, str, str | None]] = [
    ("upload-nested-100", meta(deep(100)), 422, "invalid_input", "metadata.a"),
    ("upload-nested-300", meta(deep(300)), 422, "invalid_input", "metadata.a"),
    ("upload-nested-10000", meta(deep(10_000)), 422, "invalid_input", "metadata.a"),
    (
        "upload-list-nested-10000",
        meta('{"a":' + "[" * 10_000 + "]" * 10_000 + "}"),
        422,
        "invalid_input",
        "metadata.a",
    ),
    ("upload-surrogate-value", meta('{"a": "\\ud800"}'), 422, "invalid_input", "metadata.a"),
    ("upload-surrogate-key", meta('{"\\udfff": 1}'), 422, "invalid_input", "metadata"),
    (
        "upload-surrogate-deep",
        meta('{"participants": [{"id": "1", "name": "A\\ud83d"}]}'),
        422,
        "invalid_input",
        "metadata.participants[0].name",
    ),
    ("upload-nan", meta('{"a": NaN}'), 422, "invalid_input", "metadata.a"),
    ("upload-infinity", meta('{"a": Infinity}'), 422, "invalid_input", "metadata.a"),
    ("upload-minus-infinity", meta('{"a": [-Infinity]}'), 422, "invalid_input", "metadata.a[0]"),
    ("upload-1e999", meta('{"a": 1e999}'), 422, "invalid_input", "metadata.a"),
    (
        "upload-int-over-64-bits",
        meta('{"a": 18446744073709551616}'),
        422,
        "invalid_input",
        "metadata.a",
    ),
    ("upload-int-5000-digits", meta('{"a": ' + "9" * 5000 + "}"), 422, "invalid_input", "metadata"),
    (
        "upload-started-at-9999",
        meta('{"started_at": "9999-12-31T23:59:59Z"}'),
        422,
        "invalid_input",
        "metadata.started_at",
    ),
    (
        "upload-started-at-0001",
        meta('{"started_at": "0001-01-01T00:00:00+01:00"}'),
        422,
        "invalid_input",
        "metadata.started_at",
    ),
    (
        "upload-started-at-offset-25h",
        meta('{"started_at": "2024-05-01T10:00:00+25:00"}'),
        422,
        "invalid_input",
        "metadata.started_at",
    ),
    (
        "upload-started-at-named-zone",
        meta('{"started_at": "2024-05-01T10:00:00 Mars/Base"}'),
        422,
        "invalid_input",
        "metadata.started_at",
    ),
    (
        "upload-started-at-number",
        meta('{"started_at": 1714557600}'),
        422,
        "invalid_input",
        "metadata.started_at",
    ),
    (
        "upload-timeline-infinite",
        meta('{"speaker_timeline": [{"participant_id": "1", "start": 0, "end": "Infinity"}]}'),
        422,
        "invalid_input",
        "metadata",
    ),
    ("upload-oversized-metadata", meta(BIG), 422, "invalid_input", "metadata"),
    ("upload-metadata-not-object", meta("[1, 2]"), 422, "invalid_input", "metadata"),
    ("upload-metadata-not-json", meta("{'a': 1}"), 422, "invalid_input", "metadata"),
    (
        "upload-tracks-nested",
        lambda w: upload(w.client, w.wav, tracks="[" * 5000 + "]" * 5000),
        422,
        "invalid_input",
        "tracks",
    ),
    (
        "upload-id-newline",
        lambda w: upload(w.client, w.wav, id="call-1\n"),
        422,
        "invalid_input",
        "id",
    ),
    (
        "upload-id-too-long",
        lambda w: upload(w.client, w.wav, id="a" * 200),
        422,
        "invalid_input",
        "id",
    ),
    (
        "upload-id-not-ascii",
        lambda w: upload(w.client, w.wav, id="réc-1"),
        422,
        "invalid_input",
        "id",
    ),
    (
        "register-nested-300",
        register('{"object_key": "x.wav", "metadata": ' + deep(300) + "}"),
        422,
        "invalid_input",
        "metadata",
    ),
    ("register-nested-10000", register("[" * 10_000 + "]" * 10_000), 422, "invalid_input", "body"),
    (
        "register-nan",
        register('{"object_key": "x.wav", "metadata": {"n": NaN}}'),
        422,
        "invalid_input",
        "metadata.n",
    ),
    (
        "register-surrogate-key",
        register('{"object_key": "\\ud800.wav"}'),
        422,
        "invalid_input",
        "object_key",
    ),
    (
        "register-not-utf8",
        lambda w: w.client.post(
            "/v1/recordings",
            content=b'{"object_key": "\xff"}',
            headers={"Content-Type": "application/json"},
        ),
        422,
        "invalid_input",
        "body",
    ),
    (
        "register-started-at-9999",
        register('{"object_key": "x.wav", "metadata": {"started_at": "9999-01-01T00:00:00"}}'),
        422,
        "invalid_input",
        "metadata.started_at",
    ),
    (
        "transcribe-german-on-en-model",
        transcribe('{"language": "de"}'),
        422,
        "unsupported_language",
        "language",
    ),
    (
        "transcribe-unknown-language",
        transcribe('{"language": "klingon"}'),
        422,
        "invalid_input",
        "language",
    ),
    (
        "transcribe-language-nested",
        transcribe('{"language": ' + "[" * 10_000 + "]" * 10_000 + "}"),
        422,
        "invalid_input",
        "language",
    ),
    (
        "transcribe-prompt-surrogate",
        transcribe('{"prompt": "\\ud800 names"}'),
        422,
        "invalid_input",
        "prompt",
    ),
    (
        "transcribe-speakers-nan",
        transcribe('{"speakers": {"num_speakers": NaN}}'),
        422,
        "invalid_input",
        "speakers.num_speakers",
    ),
    (
        "transcribe-unknown-recording",
        lambda w: w.client.post("/v1/recordings/nope%0A/transcribe", json={}),
        404,
        "not_found",
        None,
    ),
    (
        "recall-nested-300",
        recall('{"metadata": ' + deep(300) + "}"),
        422,
        "invalid_input",
        "metadata",
    ),
    (
        "recall-nested-40",
        recall('{"metadata": ' + deep(40) + "}"),
        422,
        "invalid_input",
        "metadata" + ".a" * 32,
    ),
    ("recall-nan", recall('{"metadata": {"score": NaN}}'), 422, "invalid_input", "metadata.score"),
    (
        "recall-surrogate-key",
        recall('{"metadata": {"\\ud800": "x"}}'),
        422,
        "invalid_input",
        "metadata",
    ),
    (
        "recall-german-on-en-model",
        recall('{"provider": {"postcall": {"language": "de"}}}'),
        422,
        "unsupported_language",
        "provider.postcall.language",
    ),
    (
        "recall-language-surrogate",
        recall('{"provider": {"postcall": {"language": "\\ud800"}}}'),
        422,
        "invalid_input",
        "provider.postcall.language",
    ),
    (
        "recall-oversized-body",
        recall('{"metadata": {"x": "' + "y" * 200_000 + '"}}'),
        413,
        "payload_too_large",
        None,
    ),
    ("recall-unknown-transcript", get("/api/v1/transcript/tr_nope%00/"), 404, "not_found", None),
    ("recall-cursor-nan", get("/api/v1/transcript/?cursor=nan:x"), 200, "", None),
    ("native-cursor-garbage", get("/v1/recordings?cursor=%ff%fe"), 422, "invalid_input", "cursor"),
    ("native-limit-zero", get("/v1/recordings?limit=0"), 422, "invalid_input", "limit"),
    (
        "native-bad-recording-id",
        get("/v1/recordings/%2e%2e%2f%2e%2e%2fetc%2fpasswd"),
        404,
        "not_found",
        None,
    ),
    (
        "native-bad-format",
        get("/v1/transcriptions/{tr}/transcript?format=exe"),
        422,
        "invalid_input",
        "format",
    ),
]


def assert_reads_work(w: World) -> None:
    """Every listing and read path of both APIs still answers."""
    c = w.client
    for path in (
        "/v1/recordings",
        f"/v1/recordings/{w.recording}",
        f"/v1/recordings/{w.recording}/transcriptions",
        f"/v1/transcriptions/{w.transcription}",
        f"/v1/transcriptions/{w.transcription}/transcript?format=recall",
        "/api/v1/transcript/",
        f"/api/v1/transcript/{w.transcription}/",
    ):
        r = c.get(path)
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:300]}"
    for item in c.get("/api/v1/transcript/").json()["results"]:
        url = item["data"]["download_url"]
        if url:
            assert c.get(url).status_code == 200, url


@pytest.mark.parametrize(
    ("send", "status", "code", "field"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_hostile_request_gets_a_specific_4xx(
    world: World, send: Send, status: int, code: str, field: str | None
) -> None:
    r = send(world)
    assert r.status_code == status, r.text[:500]
    if status >= 400:
        error = r.json()["error"]
        assert error["code"] == code, error
        if field is not None:
            assert error.get("field") == field, error
        assert error["message"]
    assert_reads_work(world)


def test_a_refused_request_can_be_retried_with_its_idempotency_key(world: World) -> None:
    headers = {"Content-Type": "application/json", "Idempotency-Key": "retry-nan-1"}
    url = f"/api/v1/recording/{world.recording}/create_transcript/"
    body = b'{"metadata": {"score": NaN}}'
    for _ in range(2):  # never a 409: nothing was stored the first time
        r = world.client.post(url, content=body, headers=headers)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == "metadata.score"
    for _ in range(2):
        r = upload(world.client, world.wav, metadata='{"a": NaN}', id="retry-1")
        assert r.status_code == 422 and r.json()["error"]["field"] == "metadata.a", r.text
    assert world.client.get("/v1/recordings/retry-1").status_code == 404


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 40


def test_metadata_at_the_limits_is_kept_and_rendered(world: World) -> None:
    edge = {
        "nested": json.loads(deep(31)),
        "big": 2**63 - 1,
        "small": -(2**63) + 1,
        "float": 1.7976931348623157e308,
        "text": "Zoë 😀 \u0000 ok",
        "started_at": "2100-12-31T23:00:00+00:00",
    }
    r = upload(world.client, world.wav, metadata=json.dumps(edge))
    assert r.status_code == 201, r.text
    assert world.client.get(f"/v1/recordings/{r.json()['id']}").json()["metadata"] == edge
    assert_reads_work(world)


def test_english_only_model_runs_auto_as_english(world: World) -> None:
    r = world.client.post(f"/v1/recordings/{world.recording}/transcribe", json={"language": "auto"})
    assert r.status_code == 202, r.text
    assert world.comps.workers is not None and world.comps.workers.workers[0].run(burst=True) == 1
    done = world.client.get(f"/v1/transcriptions/{r.json()['transcriptionId']}").json()
    assert done["status"] == "completed" and done["language"] == "en"


def test_metadata_stored_before_the_rules_still_renders(world: World) -> None:
    """Rows written by an older version (or by hand) must not break a listing."""
    odd = {
        "nan": float("nan"),
        "inf": [float("inf")],
        "text": "\ud800",
        "\udfff": "key",
        "deep": json.loads(deep(300)),
        "started_at": "9999-12-31T23:59:59Z",
    }
    r = upload(world.client, world.wav)
    assert r.status_code == 201, r.text
    rec_id = r.json()["id"]
    raw = json.dumps(odd)  # ensure_ascii and allow_nan: what an old version could write
    with sqlite3.connect(world.comps.settings.data_dir / "postcall.db") as db:
        db.execute("UPDATE recordings SET metadata=? WHERE id=?", (raw, rec_id))
    db.close()
    tr = world.client.post(f"/v1/recordings/{rec_id}/transcribe", json={})
    assert tr.status_code == 202, tr.text
    assert world.comps.workers is not None and world.comps.workers.workers[0].run(burst=True) == 1
    shown = world.client.get(f"/v1/recordings/{rec_id}")
    assert shown.status_code == 200, shown.text
    metadata = shown.json()["metadata"]
    assert metadata["nan"] is None and metadata["inf"] == [None]
    assert metadata["text"] == "\ufffd" and metadata["\ufffd"] == "key"
    tr_id = tr.json()["transcriptionId"]
    recall_doc = world.client.get(f"/v1/transcriptions/{tr_id}/transcript?format=recall")
    assert recall_doc.status_code == 200, recall_doc.text
    words = [w for block in recall_doc.json() for w in block["words"]]
    assert words and all(w["start_timestamp"]["absolute"] is None for w in words)

    made = world.client.post(f"/api/v1/recording/{rec_id}/create_transcript/", json={})
    assert made.status_code == 200, made.text
    with sqlite3.connect(world.comps.settings.data_dir / "postcall.db") as db:
        (options,) = db.execute(
            "SELECT options FROM transcriptions WHERE id=?", (made.json()["id"],)
        ).fetchone()
        echoed = {**json.loads(options), "requested": {"provider": {"postcall": {"x": odd}}}}
        db.execute(
            "UPDATE transcriptions SET options=?, metadata=? WHERE id=?",
            (json.dumps(echoed), raw, made.json()["id"]),
        )
    db.close()
    shown = world.client.get(f"/api/v1/transcript/{made.json()['id']}/")
    assert shown.status_code == 200, shown.text
    assert shown.json()["provider"]["postcall"]["x"]["nan"] is None
    assert shown.json()["metadata"]["inf"] == [None]
    assert_reads_work(world)


def test_a_document_starting_at_the_calendars_end_renders() -> None:
    doc = TranscriptDocument(
        transcription_id="tr_x",
        recording_id="rec_x",
        language="en",
        duration=5.0,
        segments=(
            Segment(0.5, 4.0, "hello there", words=(Word(0.5, 1.0, "hello", 0.9),), speaker="A"),
        ),
        started_at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
    )
    blocks = json.loads(formats.render(doc, "recall"))
    word = blocks[0]["words"][0]
    assert word["start_timestamp"]["absolute"].startswith("9999-12-31T23:59:59.5")
    assert word["end_timestamp"] == {"relative": 1.0, "absolute": None}  # past 9999


def test_parsing_never_recurses() -> None:
    """The strict parser measures nesting first: 100,000 levels are a clean refusal."""
    from postcall.errors import InvalidInput
    from postcall.metadata import parse_json

    for text in ("[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "0" + "}" * 100_000):
        with pytest.raises(InvalidInput) as caught:
            parse_json(text, "body")
        assert "nested more than" in caught.value.message
