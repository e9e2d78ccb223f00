"""/v1/voiceprints in-process: routes, answers and refusals (tenants: test_tenants.py)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from postcall import wiring
from tests import media
from tests.unit.test_api import make_client, tone, upload


@pytest.fixture
def api(data_dir: Path) -> Iterator[tuple[TestClient, wiring.Components]]:
    client, comps = make_client(data_dir, voiceprint_min_speech_s=4.0)
    yield client, comps
    comps.store.close()


def enrol(client: TestClient, data: bytes, **fields: str) -> Any:
    return client.post("/v1/voiceprints", files={"file": ("s.flac", io.BytesIO(data))}, data=fields)


def blob_files(comps: wiring.Components) -> list[Path]:
    root = comps.settings.data_dir / "blobs"
    return [p for p in root.rglob("*") if p.is_file()]


def test_a_sample_enrols_and_is_listed_read_and_deleted(api: Any, testdata: Path) -> None:
    client, comps = api
    sample = (testdata / "ljspeech/LJ001-0003.flac").read_bytes()
    r = enrol(client, sample, participant_id="u1", name="Linda")
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["participantId"] == "u1" and made["name"] == "Linda"
    assert made["model"] == "resemblyzer-0.1.4" and made["source"] == "sample"
    assert 8 <= made["seconds"] <= 10 and "embedding" not in made
    assert blob_files(comps) == []  # the sample is not kept
    # Enrolling again refines the same print.
    again = enrol(client, sample, participant_id="u1", name="Linda M.").json()
    assert again["id"] == made["id"] and again["seconds"] > made["seconds"]
    assert again["name"] == "Linda M."
    listed = client.get("/v1/voiceprints").json()
    assert [v["id"] for v in listed["data"]] == [made["id"]] and listed["nextCursor"] is None
    assert "embedding" not in listed["data"][0]
    full = client.get(f"/v1/voiceprints/{made['id']}", params={"include_embedding": "true"})
    vector = full.json()["embedding"]
    assert len(vector) == 256 and abs(sum(x * x for x in vector) - 1) < 1e-3
    assert client.get("/v1/voiceprints", params={"participant_id": "u2"}).json()["data"] == []
    assert client.delete(f"/v1/voiceprints/{made['id']}").status_code == 204
    gone = client.get(f"/v1/voiceprints/{made['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    assert client.delete(f"/v1/voiceprints/{made['id']}").status_code == 404


def test_a_participants_prints_are_deleted_on_request(api: Any, testdata: Path) -> None:
    client, _ = api
    sample = (testdata / "ljspeech/LJ001-0003.flac").read_bytes()
    assert enrol(client, sample, participant_id="u1", name="Linda").status_code == 201
    r = client.delete("/v1/voiceprints", params={"participant_id": "u1"})
    assert r.status_code == 200 and r.json() == {"deleted": 1}
    assert client.delete("/v1/voiceprints", params={"participant_id": "u1"}).json() == {
        "deleted": 0
    }
    missing = client.delete("/v1/voiceprints")
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "participant_id"


def test_bad_samples_are_refused_and_not_kept(api: Any, tmp_path: Path) -> None:
    client, comps = api
    short = media.write_audio(tmp_path / "t.wav", tone(2)).read_bytes()
    r = enrol(client, short, participant_id="u1", name="Ann")
    assert r.status_code == 422 and r.json()["error"]["code"] == "too_little_speech", r.text
    assert r.json()["error"]["field"] == "file"
    r = enrol(client, b"not audio at all" * 100, participant_id="u1", name="Ann")
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media"
    r = enrol(client, b"", participant_id="u1", name="Ann")
    assert r.status_code == 400
    r = enrol(client, short, name="Ann")
    assert r.status_code == 422 and r.json()["error"]["field"] == "participant_id"
    r = enrol(client, short, participant_id="u1", name="  ")
    assert r.status_code == 422 and r.json()["error"]["field"] == "name"
    r = client.post("/v1/voiceprints", json={"participant_id": "u1"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "file"
    r = client.post("/v1/voiceprints", data={"participant_id": "u1", "name": "Ann"})
    assert r.status_code == 422
    assert blob_files(comps) == []
    assert client.get("/v1/voiceprints").json()["data"] == []


def test_enrolment_needs_separate_streams(api: Any, tmp_path: Path) -> None:
    client, _ = api
    wav = media.write_audio(tmp_path / "t.wav", tone(2)).read_bytes()
    rec = upload(client, wav, metadata=json.dumps({"participants": [{"id": "u", "name": "U"}]}))
    r = client.post(
        f"/v1/recordings/{rec.json()['id']}/transcribe", json={"enroll_voiceprints": True}
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "enroll_voiceprints"


def test_a_separate_streams_job_reports_who_was_enrolled_and_who_not(
    api: Any, testdata: Path
) -> None:
    client, comps = api
    files = [
        ("file", ("a.flac", (testdata / "ljspeech/LJ001-0003.flac").read_bytes())),
        ("file", ("b.wav", (testdata / "librispeech/1221-135766-0002.wav").read_bytes())),
        ("file", ("c.flac", (testdata / "ljspeech/LJ001-0005.flac").read_bytes())),
    ]
    meta = {"participants": [{"id": "a", "name": "Ann"}, {"id": "b", "name": "Bo"}]}
    tracks = [{"participant_id": p} for p in ("a", "b", "c")]
    rec = client.post(
        "/v1/recordings",
        files=files,
        data={"metadata": json.dumps(meta), "tracks": json.dumps(tracks)},
    )
    assert rec.status_code == 201, rec.text
    tr = client.post(
        f"/v1/recordings/{rec.json()['id']}/transcribe", json={"enroll_voiceprints": True}
    ).json()["transcriptionId"]
    assert comps.workers is not None and comps.workers.workers[0].run(burst=True) == 1
    result = client.get(f"/v1/transcriptions/{tr}").json()
    assert result["status"] == "completed", result
    notes = {n["participantId"]: n for n in result["voiceprints"]}
    assert notes["a"]["outcome"] == "enrolled" and notes["a"]["voiceprintId"].startswith("vp_")
    assert notes["b"]["outcome"] == "enrolled"  # 4.8 s of speech, the minimum here is 4 s
    assert notes["c"]["outcome"] == "skipped" and "does not name" in notes["c"]["message"]
    listed = {v["participantId"]: v for v in client.get("/v1/voiceprints").json()["data"]}
    assert set(listed) == {"a", "b"}
    assert listed["a"]["source"] == f"recording:{rec.json()['id']}"
