"""Voiceprints end to end: enrolled from a separate-streams recording, recognised in a
later mixed one. A real server, the real tiny.en model and speaker encoder, real speech.

The material is from bench/voiceprints.py's report set (even LJ Speech clips,
LibriSpeech 1221-135766-0001, JFK), never from its dev set, where the threshold was
chosen.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests import media, speech
from tests.e2e.server import Server, model_server
from tests.e2e.test_native_e2e import poll
from tests.helpers import create_recording

pytestmark = pytest.mark.e2e

KEY = "voiceprints-key"
RATE = 16000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, whisper_model_dir: str) -> Iterator[Server]:
    srv = model_server(tmp_path_factory.mktemp("voiceprints"), whisper_model_dir, KEY)
    yield srv
    srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client(KEY, timeout=120) as c:
        yield c


def load(testdata: Path, name: str) -> speech.Audio:
    return speech.trim(media.load_mono16k(testdata / name))


def run(client: httpx.Client, rec_id: str, **body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    r = client.post(f"/v1/recordings/{rec_id}/transcribe", json=body)
    assert r.status_code == 202, r.text
    tr_id = r.json()["transcriptionId"]
    result = poll(client, tr_id)
    assert result["status"] == "completed", result
    doc = client.get(f"/v1/transcriptions/{tr_id}/transcript", params={"format": "json"})
    return result, doc.json()


def test_an_enrolled_participant_is_named_in_a_later_mixed_recording(
    client: httpx.Client, testdata: Path, tmp_path: Path
) -> None:
    lj = [load(testdata, f"ljspeech/LJ001-{i:04d}.flac") for i in (4, 6, 10, 12, 14, 16)]
    libri = load(testdata, "librispeech/1221-135766-0001.wav")
    jfk = load(testdata, "jfk.flac")
    cut = int(8.0 * RATE) + int(np.argmin(np.abs(libri[8 * RATE : 9 * RATE])))  # a quiet point
    gap = media.silence(0.4)

    # 1. A separate-streams recording of Alice (LJ) and Bob (LibriSpeech), enrolment on.
    alice_stream = media.write_audio(
        tmp_path / "alice.wav", np.concatenate([lj[0], gap, lj[1], gap, lj[2]])
    )
    bob_stream = media.write_audio(tmp_path / "bob.wav", libri[:cut])
    people = [{"id": "u-alice", "name": "Alice"}, {"id": "u-bob", "name": "Bob"}]
    streams = create_recording(
        client,
        [alice_stream, bob_stream],
        metadata={"participants": people},
        tracks=[{"participant_id": "u-alice", "offset": 0}, {"participant_id": "u-bob"}],
    )["id"]
    result, _ = run(client, streams, enroll_voiceprints=True)
    notes = {n["participantId"]: n for n in result["voiceprints"]}
    assert {n["outcome"] for n in notes.values()} == {"enrolled"}, notes
    listed = client.get("/v1/voiceprints").json()["data"]
    assert {(v["participantId"], v["name"]) for v in listed} == {
        ("u-alice", "Alice"),
        ("u-bob", "Bob"),
    }
    assert all("embedding" not in v and v["seconds"] >= 5 for v in listed)

    # 2. A later mixed mono recording of Alice, Bob and Carl (JFK, never enrolled).
    rest = libri[cut:]
    half = len(rest) // 2
    jfk_half = int(5.3 * RATE) + int(np.argmin(np.abs(jfk[int(5.3 * RATE) : 6 * RATE])))
    turns = [
        ("Alice", lj[3]),
        ("Bob", rest[:half]),
        ("Carl", jfk[:jfk_half]),
        ("Alice", lj[4]),
        ("Bob", rest[half:]),
        ("Carl", jfk[jfk_half:]),
        ("Alice", lj[5]),
    ]
    pieces, truth, t = [], [], 0.0
    for who, samples in turns:
        pieces += [media.silence(0.6), samples]
        t += 0.6
        truth.append((t, t + len(samples) / RATE, who))
        t += len(samples) / RATE
    mixed = media.write_audio(tmp_path / "mixed.wav", np.concatenate(pieces))
    meeting = create_recording(client, [mixed], metadata={"participants": people})["id"]
    result, doc = run(client, meeting, speakers={"mode": "diarize"})
    matched = {n["participantId"] for n in result["voiceprints"] if n["outcome"] == "matched"}
    assert matched == {"u-alice", "u-bob"}, result["voiceprints"]

    counts: dict[str, dict[str, int]] = {}
    for seg in doc["segments"]:
        for w in seg["words"]:
            mid = (w["start"] + w["end"]) / 2
            near = [who for a, b, who in truth if a - 0.3 <= mid <= b + 0.3]
            if len(near) == 1:
                mine = counts.setdefault(near[0], {})
                mine[seg["speaker"]] = mine.get(seg["speaker"], 0) + 1
    print(f"words by true speaker and label: {counts}; {result['voiceprints']}")
    for who in ("Alice", "Bob"):
        total = sum(counts[who].values())
        assert total >= 15, counts
        assert counts[who].get(who, 0) / total >= 0.9, (who, counts)
    assert sum(counts["Carl"].values()) >= 10, counts
    # Carl, never enrolled, is not named as Alice or Bob; as for them, a word at the
    # edge of a turn may go to the neighbour's segment.
    named = sum(n for label, n in counts["Carl"].items() if label in {"Alice", "Bob"})
    assert named / sum(counts["Carl"].values()) <= 0.1, counts
    # The recall download carries the participants' ids.
    blocks = client.get(
        f"/v1/transcriptions/{doc['transcriptionId']}/transcript", params={"format": "recall"}
    ).json()
    ids = {b["participant"]["name"]: b["participant"]["id"] for b in blocks}
    assert ids["Alice"] == "u-alice" and ids["Bob"] == "u-bob"

    # 3. A sample enrols too; too little speech is refused; a participant is forgotten.
    sample = media.write_audio(tmp_path / "dan.wav", load(testdata, "ljspeech/LJ001-0018.flac"))
    short = media.write_audio(tmp_path / "short.wav", lj[0][: 2 * RATE])
    with short.open("rb") as f:
        r = client.post(
            "/v1/voiceprints",
            files={"file": ("short.wav", f)},
            data={"participant_id": "u-dan", "name": "Dan"},
        )
    assert r.status_code == 422 and r.json()["error"]["code"] == "too_little_speech", r.text
    with sample.open("rb") as f:
        r = client.post(
            "/v1/voiceprints",
            files={"file": ("dan.wav", f)},
            data={"participant_id": "u-dan", "name": "Dan"},
        )
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "sample" and r.json()["participantId"] == "u-dan"
    gone = client.delete("/v1/voiceprints", params={"participant_id": "u-alice"})
    assert gone.json() == {"deleted": 1}
    left = {v["participantId"] for v in client.get("/v1/voiceprints").json()["data"]}
    assert left == {"u-bob", "u-dan"}
