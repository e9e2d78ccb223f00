"""End to end: `postcall whisper-server` as a real process with the real tiny.en model,
and the remote engine (``HttpWhisperEngine``) and raw OpenAI-style requests against it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import numpy as np
import pytest

from postcall import audio
from postcall.engines.base import EngineOptions
from postcall.engines.whisper_http import HttpWhisperEngine
from postcall.errors import EngineUnavailable
from tests.conftest import clip
from tests.e2e.server import free_port
from tests.helpers import wait_for, wer

pytestmark = pytest.mark.e2e


class WhisperServer:
    """``python -m postcall.cli whisper-server`` on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postcall.cli", "whisper-server", "--port", str(self.port)],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            # /health answers 200 once the model is loaded.
            wait_for(self._healthy, timeout=120, interval=0.2, what=f"whisper-server {self.url}")
        except BaseException:
            self.stop()
            raise

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"whisper-server exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, whisper_model_dir: str
) -> Iterator[WhisperServer]:
    root = tmp_path_factory.mktemp("whisper-e2e")
    srv = WhisperServer(
        {"WHISPER_MODEL": whisper_model_dir, "POSTCALL_DATA_DIR": str(root / "data")},
        root / "whisper-server.log",
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def jfk(testdata: Path) -> Path:
    return testdata / "jfk.flac"


def test_engine_transcribes_through_the_server(server: WhisperServer, jfk: Path) -> None:
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


def test_openai_style_requests(server: WhisperServer, jfk: Path) -> None:
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
