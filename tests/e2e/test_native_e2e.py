"""End to end: `postcall serve` as a real process, the real tiny.en model, real speech."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import srt
import webvtt

from tests import media
from tests.conftest import manifest
from tests.e2e.server import Server, model_server
from tests.helpers import wait_for, wer

pytestmark = pytest.mark.e2e

KEY = "e2e-secret-key"
LINE = re.compile(r"^\[(\d{2}):(\d{2}):(\d{2})\] ([^:]+): (.+)$")
ENGLISH = [
    "jfk.flac",
    "librispeech/1089-134686-0001.wav",
    "librispeech/1221-135766-0001.wav",
    "librispeech/1221-135766-0002.wav",
    "ljspeech/LJ001-0001.flac",
    "ljspeech/LJ001-0002.flac",
    "ljspeech/LJ001-0010.flac",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, whisper_model_dir: str) -> Iterator[Server]:
    srv = model_server(tmp_path_factory.mktemp("e2e"), whisper_model_dir, KEY)
    yield srv
    srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client(KEY) as c:
        yield c


def upload(client: httpx.Client, path: Path, **fields: str) -> httpx.Response:
    with path.open("rb") as fh:
        return client.post("/v1/recordings", files={"file": (path.name, fh)}, data=fields)


def poll(client: httpx.Client, tr_id: str, timeout: float = 180) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/v1/transcriptions/{tr_id}").json()
        return body if body["status"] in ("completed", "failed") else None

    return wait_for(finished, timeout=timeout, interval=0.25, what=f"transcription {tr_id}")


def transcribe(client: httpx.Client, rec_id: str, **body: str) -> str:
    r = client.post(f"/v1/recordings/{rec_id}/transcribe", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["transcriptionId"])


def test_english_clips_are_transcribed_within_15_percent_wer(
    client: httpx.Client, testdata: Path
) -> None:
    refs = {m["audio"]: m for m in manifest()}
    jobs = {}
    refs_all: list[str] = []
    hyps_all: list[str] = []
    for name in ENGLISH:
        rec = upload(client, testdata / name)
        assert rec.status_code == 201, rec.text
        jobs[name] = transcribe(client, rec.json()["id"], language="en")
    for name, tr_id in jobs.items():
        result = poll(client, tr_id)
        assert result["status"] == "completed", result
        assert isinstance(result["duration"], str) and isinstance(result["segmentCount"], str)
        assert abs(float(result["duration"]) - refs[name]["duration_s"]) < 0.2
        lines = result["text"].split("\n")
        assert len(lines) == int(result["segmentCount"])
        spoken = []
        for line in lines:
            m = LINE.match(line)
            assert m, line
            assert m.group(4) == "Speaker 1"
            spoken.append(m.group(5))
        refs_all.append(refs[name]["text"])
        hyps_all.append(" ".join(spoken))
        # tiny.en mishears some proper names ("Hester Prynne"); one short clip may reach
        # ~27 %: hold each clip to a loose bound and the set to the 15 % target.
        assert wer(refs[name]["text"], " ".join(spoken)) <= 0.3, (name, spoken)
    corpus = wer(" ".join(refs_all), " ".join(hyps_all))
    assert corpus <= 0.15, corpus


def test_other_formats_and_a_named_participant(client: httpx.Client, testdata: Path) -> None:
    meta = json.dumps({"participants": [{"id": "p1", "name": "Linda", "is_host": True}]})
    rec = upload(client, testdata / "librispeech/1221-135766-0001.wav", metadata=meta).json()
    tr_id = transcribe(client, rec["id"])
    result = poll(client, tr_id)
    assert result["status"] == "completed"
    assert all(line.split("] ", 1)[1].startswith("Linda: ") for line in result["text"].split("\n"))
    base = f"/v1/transcriptions/{tr_id}/transcript"

    txt = client.get(base, params={"format": "txt"})
    assert txt.headers["content-type"].startswith("text/plain")
    assert txt.text.strip() == result["text"]

    cues = list(srt.parse(client.get(base, params={"format": "srt"}).text))
    assert len(cues) == int(result["segmentCount"])
    assert all(c.content.startswith("Linda: ") for c in cues)
    assert all(c.start < c.end for c in cues)

    vtt = webvtt.from_string(client.get(base, params={"format": "vtt"}).text)
    assert len(vtt.captions) == len(cues)

    doc = client.get(base, params={"format": "json"}).json()
    assert doc["language"] == "en"
    words = [w for s in doc["segments"] for w in s["words"]]
    assert words and all(0 <= w["probability"] <= 1 for w in words)
    assert all(
        s["start"] <= w["start"] <= w["end"] <= s["end"] + 0.01
        for s in doc["segments"]
        for w in s["words"]
    )
    ref = next(m for m in manifest() if m["audio"] == "librispeech/1221-135766-0001.wav")
    assert wer(ref["text"], " ".join(w["text"] for w in words)) <= 0.15


def test_language_auto_detects_english(client: httpx.Client, testdata: Path) -> None:
    rec = upload(client, testdata / "jfk.flac").json()
    result = poll(client, transcribe(client, rec["id"], language="auto"))
    assert result["status"] == "completed" and result["language"] == "en"


def test_requests_without_a_key_are_refused(server: Server) -> None:
    r = httpx.get(f"{server.url}/v1/recordings")
    assert r.status_code == 401
    for header in (f"Token {KEY}", KEY):
        assert (
            httpx.get(f"{server.url}/v1/recordings", headers={"Authorization": header}).status_code
            == 200
        )


NODE_CLIENT = Path(__file__).with_name("native_client.mjs")


def test_the_contracts_own_javascript_client(
    client: httpx.Client, server: Server, testdata: Path, tmp_path: Path
) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is required for this test (make test installs it)")
    rec = upload(client, testdata / "jfk.flac", id="bot-recording-0001").json()
    script = NODE_CLIENT
    out = subprocess.run(
        [node, str(script), rec["id"], server.url, KEY],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "completed"
    ref = next(m for m in manifest() if m["audio"] == "jfk.flac")
    spoken = " ".join(LINE.match(line).group(5) for line in result["text"].split("\n"))  # type: ignore[union-attr]
    assert wer(ref["text"], spoken) <= 0.15


def test_bad_input_gets_clear_errors_and_good_work_goes_on(
    client: httpx.Client, server: Server, testdata: Path, tmp_path: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("this is not a recording\n" * 50)
    png = tmp_path / "cover.mp3"
    png.write_bytes(media.png_bytes())
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    video = media.write_video_only(tmp_path / "screen.mp4")
    truncated = media.write_truncated_mp4(tmp_path / "cut.mp4")
    before = client.get("/v1/recordings?limit=500").json()["data"]

    expected = {
        text: (415, "unsupported_media"),
        png: (415, "unsupported_media"),  # an image: no accepted format
        empty: (400, "empty_file"),
        video: (422, "no_audio_stream"),
        truncated: (415, "unsupported_media"),
    }
    for path, (status, code) in expected.items():
        r = upload(client, path)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (path.name, r.text)
        assert r.json()["error"]["message"]
    after = client.get("/v1/recordings?limit=500").json()["data"]
    assert len(after) == len(before)  # nothing kept

    quiet = media.write_audio(tmp_path / "quiet.wav", media.silence(8))
    silent_tr = transcribe(client, upload(client, quiet).json()["id"])
    good_tr = transcribe(client, upload(client, testdata / "jfk.flac").json()["id"])
    silent = poll(client, silent_tr)
    assert silent["status"] == "failed"
    assert silent["error"]["code"] == "no_speech" and silent["error"]["message"]
    assert poll(client, good_tr)["status"] == "completed"


def test_deleting_a_recording_removes_its_files(client: httpx.Client, testdata: Path) -> None:
    rec = upload(client, testdata / "ljspeech/LJ001-0002.flac").json()
    tr_id = transcribe(client, rec["id"])
    assert poll(client, tr_id)["status"] == "completed"
    assert client.delete(f"/v1/recordings/{rec['id']}").status_code == 204
    assert client.get(f"/v1/transcriptions/{tr_id}").status_code == 404
    assert client.get(f"/v1/recordings/{rec['id']}").status_code == 404


def test_english_only_model_refuses_other_languages(client: httpx.Client, testdata: Path) -> None:
    """The bundled tiny.en only speaks English: German is refused at request time on both
    APIs (the API process reads the model's vocabulary, it never loads the model)."""
    rec = upload(client, testdata / "jfk.flac").json()
    native = client.post(f"/v1/recordings/{rec['id']}/transcribe", json={"language": "de"})
    recall = client.post(
        f"/api/v1/recording/{rec['id']}/create_transcript/",
        json={"provider": {"postcall": {"language": "de"}}},
    )
    for r, field in ((native, "language"), (recall, "provider.postcall.language")):
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert (error["code"], error["field"]) == ("unsupported_language", field)
        assert "English-only" in error["message"] and "model" in error["message"]
    listed = client.get(f"/v1/recordings/{rec['id']}/transcriptions").json()["data"]
    assert listed == []
