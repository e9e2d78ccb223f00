"""Who said what, end to end: a real server, the real tiny.en model, real speech."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from postcall.speakers.encoder import HOP, PARTIAL_FRAMES, SAMPLE_RATE
from tests import media
from tests.conftest import clip
from tests.e2e.server import Server, model_server
from tests.e2e.test_native_e2e import LINE, poll, transcribe
from tests.helpers import create_recording, normalize, wer

pytestmark = pytest.mark.e2e

KEY = "speakers-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, whisper_model_dir: str) -> Iterator[Server]:
    # tiny.en hears the one utterance of the far-field AMI excerpt only when the 30 s
    # file is cut in two (at 300 s chunks it answers no_speech).
    srv = model_server(
        tmp_path_factory.mktemp("speakers"), whisper_model_dir, KEY, POSTCALL_CHUNK_MAX_S="25"
    )
    yield srv
    srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client(KEY, timeout=60) as c:
        yield c


def finished(client: httpx.Client, rec_id: str, **body: Any) -> tuple[dict[str, Any], Any]:
    tr_id = transcribe(client, rec_id, **body)
    result = poll(client, tr_id)
    assert result["status"] == "completed", result
    doc = client.get(f"/v1/transcriptions/{tr_id}/transcript", params={"format": "json"}).json()
    return result, doc


def words_by_speaker(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for s in doc["segments"]:
        out.setdefault(s["speaker"], []).extend(s["words"])
    return out


def test_a_channel_map_puts_each_channel_under_its_participant(
    client: httpx.Client, testdata: Path
) -> None:
    meta = {
        "participants": [{"id": "L", "name": "Lena"}, {"id": "R", "name": "Raj"}],
        "channels": {"0": "L", "1": "R"},
    }
    rec = create_recording(client, [testdata / "stereo_diarization.wav"], metadata=meta)
    result, doc = finished(client, rec["id"])
    texts = clip("stereo_diarization.wav")["channel_texts"]
    spoken = words_by_speaker(doc)
    assert set(spoken) == {"Lena", "Raj"}
    assert wer(texts["0"], " ".join(w["text"] for w in spoken["Lena"])) <= 0.15
    assert wer(texts["1"], " ".join(w["text"] for w in spoken["Raj"])) <= 0.15
    # Every word of each channel's reference is under the right name, none under both.
    lena = set(normalize(" ".join(w["text"] for w in spoken["Lena"])).split())
    raj = set(normalize(" ".join(w["text"] for w in spoken["Raj"])).split())
    assert not (set(normalize(texts["1"]).split()) & lena - set(normalize(texts["0"]).split()))
    assert not (set(normalize(texts["0"]).split()) & raj - set(normalize(texts["1"]).split()))
    starts = [s["start"] for s in doc["segments"]]
    assert starts == sorted(starts)
    names = {LINE.match(line).group(4) for line in result["text"].split("\n")}  # type: ignore[union-attr]
    assert names == {"Lena", "Raj"}
    blocks = client.get(
        f"/v1/transcriptions/{doc['transcriptionId']}/transcript", params={"format": "recall"}
    ).json()
    assert {b["participant"]["name"] for b in blocks} == {"Lena", "Raj"}
    assert {b["participant"]["id"] for b in blocks} == {"L", "R"}


def test_one_file_per_participant_merges_in_time_order(
    client: httpx.Client, testdata: Path
) -> None:
    a, b = "librispeech/1089-134686-0001.wav", "ljspeech/LJ001-0001.flac"
    alone = []
    for name in (a, b):
        _, doc = finished(client, create_recording(client, [testdata / name])["id"])
        alone.append(" ".join(w["text"] for s in doc["segments"] for w in s["words"]))
    reference = f"{clip(a)['text']} {clip(b)['text']}"
    alone_wer = wer(reference, " ".join(alone))

    meta = {"participants": [{"id": "u1", "name": "Ana"}, {"id": "u2", "name": "Ben"}]}
    tracks = [{"participant_id": "u1", "offset": 0.0}, {"participant_id": "u2", "offset": 8.0}]
    rec = create_recording(client, [testdata / a, testdata / b], metadata=meta, tracks=tracks)
    assert [t["participantId"] for t in rec["tracks"]] == ["u1", "u2"]
    result, doc = finished(client, rec["id"])
    order = [s["speaker"] for s in doc["segments"]]
    assert order[0] == "Ana" and order[-1] == "Ben"
    assert order == sorted(order, key=["Ana", "Ben"].index)  # all of Ana, then all of Ben
    assert min(s["start"] for s in doc["segments"] if s["speaker"] == "Ben") >= 8.0
    merged = " ".join(w["text"] for s in doc["segments"] for w in s["words"])
    assert wer(reference, merged) <= alone_wer + 0.02
    assert float(result["duration"]) == pytest.approx(8.0 + clip(b)["duration_s"], abs=0.1)


def test_a_speaker_timeline_attributes_words(
    client: httpx.Client, testdata: Path, tmp_path: Path
) -> None:
    # Three voices taking turns, and the platform's active-speaker events for them,
    # reported late by 0.3 s as platforms do.
    turns = [
        ("librispeech/1089-134686-0001.wav", "p1"),
        ("ljspeech/LJ001-0002.flac", "p2"),
        ("librispeech/1221-135766-0002.wav", "p3"),
        ("ljspeech/LJ001-0008.flac", "p2"),
        ("jfk.flac", "p1"),
    ]
    pieces, timeline, t = [], [], 0.0
    for name, who in turns:
        samples = media.load_mono16k(testdata / name)
        pieces += [samples, media.silence(0.8)]
        timeline.append(
            {"participant_id": who, "start": t + 0.3, "end": t + len(samples) / 16000 + 0.3}
        )
        t += len(samples) / 16000 + 0.8
    wav = media.write_audio(tmp_path / "meeting.wav", np.concatenate(pieces))
    meta = {
        "participants": [
            {"id": "p1", "name": "Ann"},
            {"id": "p2", "name": "Bo"},
            {"id": "p3", "name": "Cy"},
        ],
        "speaker_timeline": timeline,
    }
    _, doc = finished(client, create_recording(client, [wav], metadata=meta)["id"])
    names = {"p1": "Ann", "p2": "Bo", "p3": "Cy"}
    truth = [(e["start"] - 0.3, e["end"] - 0.3, names[e["participant_id"]]) for e in timeline]
    right = total = 0
    for seg in doc["segments"]:
        for w in seg["words"]:
            mid = (w["start"] + w["end"]) / 2
            actual = [who for a, b, who in truth if a - 0.4 <= mid <= b + 0.4]
            if actual:
                total += 1
                right += seg["speaker"] in actual
    assert total >= 40
    assert right / total >= 0.9, (right, total)


def test_a_timeline_from_an_ami_rttm(client: httpx.Client, testdata: Path) -> None:
    entry = clip("ami/trn02.wav")
    timeline = [
        {"participant_id": s["speaker"], "start": s["start"], "end": s["end"]}
        for s in entry["speakers"]
    ]
    # The far-field excerpt holds more (distant) speech than its one annotated turn:
    # only the words of that turn are asserted, under the participant's name.
    names = [{"id": s["speaker"], "name": "Fiona"} for s in entry["speakers"]]
    meta = {"speaker_timeline": timeline, "participants": names}
    rec = create_recording(client, [testdata / "ami/trn02.wav"], metadata=meta)
    _, doc = finished(client, rec["id"], speakers={"mode": "timeline"})
    right = total = 0
    for seg in doc["segments"]:
        for w in seg["words"]:
            active = [
                s for s in entry["speakers"] if s["start"] <= w["end"] and w["start"] <= s["end"]
            ]
            if active:
                total += 1
                right += seg["speaker"] == "Fiona"
    assert total >= 1
    assert right / total >= 0.9


def test_modes_a_recording_cannot_give_are_refused(client: httpx.Client, testdata: Path) -> None:
    rec = create_recording(client, [testdata / "jfk.flac"])
    for mode in ("separate_streams", "timeline"):
        r = client.post(f"/v1/recordings/{rec['id']}/transcribe", json={"speakers": {"mode": mode}})
        assert r.status_code == 422 and r.json()["error"]["field"] == "speakers"
    jfk = (testdata / "jfk.flac").read_bytes()
    meta = json.dumps({"channels": {"5": "x"}})
    r = client.post("/v1/recordings", files={"file": ("a.flac", jfk)}, data={"metadata": meta})
    assert r.status_code == 422 and r.json()["error"]["field"] == "metadata"


def test_offline_diarization_splits_a_two_speaker_mix(
    client: httpx.Client, testdata: Path, tmp_path: Path
) -> None:
    # The two-speaker stereo clip mixed down to one track: the right-hand speaker talks
    # from 0.35 to 2.55 s (over the left-hand one, who goes on alone to 4.9 s).
    mono = media.write_audio(
        tmp_path / "mixed.wav", media.load_mono16k(testdata / "stereo_diarization.wav")
    )
    rec = create_recording(client, [mono])
    _, doc = finished(client, rec["id"], speakers={"mode": "diarize", "min_speakers": 2})
    assert set(doc["speakers"]) == {"Speaker 1", "Speaker 2"}
    words = [(w, s["speaker"]) for s in doc["segments"] for w in s["words"]]
    trace = [(w["text"], w["start"], w["end"], who) for w, who in words]
    # The diarizer labels 1.6 s windows (the encoder's partial utterance), so a speaker
    # change can land anywhere within half a window of the true one: only words clear
    # of the change at 2.55 s by that much are asserted, whatever the CPU's rounding.
    resolution = PARTIAL_FRAMES * HOP / SAMPLE_RATE / 2
    change = 2.55
    mids = [((w["start"] + w["end"]) / 2, who) for w, who in words]
    before = {who for mid, who in mids if mid < change - resolution}
    after = {who for mid, who in mids if mid > change + resolution}
    assert len(before) == 1 and len(after) == 1, trace
    assert before != after, trace
