"""End to end: `postcall whisper-server` as a real process with the real tiny.en model,
and the remote engine (``HttpWhisperEngine``) and raw OpenAI-style requests against it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from postcall import audio
from postcall.engines.base import EngineOptions
from postcall.engines.whisper_http import HttpWhisperEngine
from postcall.errors import EngineUnavailable
from tests.conftest import clip
from tests.e2e.server import Server, free_port
from tests.helpers import wer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, whisper_model_dir: str) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("whisper-e2e")
    srv = Server(
        {"WHISPER_MODEL": whisper_model_dir, "POSTCALL_DATA_DIR": str(root / "data")},
        root / "whisper-server.log",
        command="whisper-server",
        health="/health",
        timeout=120,
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def jfk(testdata: Path) -> Path:
    return testdata / "jfk.flac"


def test_engine_transcribes_through_the_server(server: Server, jfk: Path) -> None:
    samples = np.concatenate(list(audio.decode(jfk)))
    with HttpWhisperEngine(server.url, timeout_s=120, retries=1) as engine:
        result = engine.transcribe(samples, EngineOptions(language="en"))
    assert result.language == "en"
    text = " ".join(s.text for s in result.segments)
    assert wer(clip("jfk.flac")["text"], text) <= 0.15, text
    assert result.segments
    duration = samples.size / audio.SAMPLE_RATE
    for segment in result.segments:
        assert 0 <= segment.start <= segment.end <= duration + 0.5
        assert segment.words, segment
        starts = [w.start for w in segment.words]
        assert starts == sorted(starts)
        for word in segment.words:
            assert word.start <= word.end
            assert 0.0 < word.probability <= 1.0


def test_openai_style_requests(server: Server, jfk: Path) -> None:
    reference = clip("jfk.flac")["text"]
    data = jfk.read_bytes()
    with httpx.Client(base_url=server.url, timeout=120) as client:

        def ask(**fields: str | list[str]) -> httpx.Response:
            r = client.post(
                "/v1/audio/transcriptions",
                files={"file": ("jfk.flac", data, "audio/flac")},
                data={"model": "whisper-1", **fields},
            )
            assert r.status_code == 200, r.text
            return r

        verbose = ask(
            response_format="verbose_json", **{"timestamp_granularities[]": ["word", "segment"]}
        ).json()
        assert verbose["task"] == "transcribe"
        assert verbose["language"] == "en"
        assert verbose["duration"] == pytest.approx(clip("jfk.flac")["duration_s"], abs=0.1)
        assert wer(reference, verbose["text"]) <= 0.15, verbose["text"]
        assert [s["id"] for s in verbose["segments"]] == list(range(len(verbose["segments"])))
        assert all(s["start"] <= s["end"] for s in verbose["segments"])
        words = verbose["words"]
        assert len(words) >= 15
        assert all({"word", "start", "end", "probability"} <= set(w) for w in words)
        assert [w["start"] for w in words] == sorted(w["start"] for w in words)

        plain = ask(response_format="json", language="en").json()
        assert set(plain) == {"text"} and wer(reference, plain["text"]) <= 0.15

        text = ask(response_format="text")
        assert text.headers["content-type"].startswith("text/plain")
        assert wer(reference, text.text) <= 0.15

        models = client.get("/v1/models").json()
        assert models["object"] == "list" and models["data"]

        bad = client.post(
            "/v1/audio/transcriptions", files={"file": ("x.wav", b"RIFF nonsense", "audio/wav")}
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["type"] == "invalid_request_error"


def test_engine_against_a_closed_port_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        HttpWhisperEngine(url, retries=2, backoff_s=0.01, timeout_s=5) as engine,
        pytest.raises(EngineUnavailable) as caught,
    ):
        engine.transcribe(np.zeros(16000, dtype=np.float32), EngineOptions())
    assert "after 3 attempts" in caught.value.message
    assert "WHISPER_URL" in caught.value.message
