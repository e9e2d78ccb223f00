"""The remote Whisper engine against a real HTTP server that misbehaves on purpose.

A small FastAPI app of this module plays the Whisper service (OpenAI-style and
whisper.cpp-style), served by uvicorn on a free port in a thread. A script decides
what each request gets: an error status, a hang past the client's timeout, or an
answer. The last tests run postcall's own Whisper app (``create_whisper_app``) with a
scripted engine, in-process and behind the real engine.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.testclient import TestClient

from postcall.engines.base import EngineOptions, EngineResult
from postcall.engines.whisper_http import HttpWhisperEngine
from postcall.engines.whisper_wire import encode_wav, parse_response
from postcall.errors import EngineError, EngineUnavailable, ModelUnavailable
from tests import media
from tests.e2e.server import free_port
from tests.fakes import ScriptedEngine
from tests.helpers import wait_for

FAST = {"timeout_s": 2.0, "backoff_s": 0.01}
AUDIO = (0.1 * np.sin(np.arange(16000) / 16000 * 2 * np.pi * 220)).astype(np.float32)

OPENAI_BODY: dict[str, Any] = {
    "task": "transcribe",
    "language": "english",
    "duration": 4.0,
    "text": "Ask not what your country can do. Ask what you can do.",
    "segments": [
        {
            "id": 0,
            "seek": 0,
            "start": 0.0,
            "end": 2.0,
            "text": " Ask not what your country can do.",
            "tokens": [1, 2],
            "temperature": 0.0,
            "avg_logprob": -0.2,
            "compression_ratio": 1.1,
            "no_speech_prob": 0.01,
        },
        {
            "id": 1,
            "seek": 200,
            "start": 2.4,
            "end": 4.0,
            "text": " Ask what you can do.",
            "tokens": [3],
            "temperature": 0.0,
            "avg_logprob": -0.2,
            "compression_ratio": 1.1,
            "no_speech_prob": 0.01,
        },
    ],
    # OpenAI: words at the top level, no probability.
    "words": [
        {"word": "Ask", "start": 0.0, "end": 0.3},
        {"word": "not", "start": 0.3, "end": 0.5},
        {"word": "what", "start": 0.5, "end": 0.7},
        {"word": "your", "start": 0.7, "end": 0.9},
        {"word": "country", "start": 0.9, "end": 1.4},
        {"word": "can", "start": 1.4, "end": 1.6},
        # ends a little after its segment (2.0): it still belongs to the first one
        {"word": "do", "start": 1.7, "end": 2.1, "probability": 0.5},
        {"word": "Ask", "start": 2.4, "end": 2.7},
        {"word": "what", "start": 2.7, "end": 2.9},
        {"word": "you", "start": 2.9, "end": 3.1},
        {"word": "can", "start": 3.1, "end": 3.4},
        {"word": "do", "start": 3.4, "end": 3.9},
    ],
}

# The shape of whisper.cpp's server answer (examples/server/server.cpp, verbose_json):
# the language as a name, segment "tokens" as ids, "words" that are really BPE tokens
# with a leading space at word starts, and a "[BLANK_AUDIO]" segment for silence.
WHISPERCPP_BODY: dict[str, Any] = {
    "task": "transcribe",
    "language": "english",
    "duration": 4.0,
    "text": " And so my fellow Americans, ask not.\n [BLANK_AUDIO]\n",
    "segments": [
        {
            "id": 0,
            "text": " And so my fellow Americans, ask not.",
            "start": 0.0,
            "end": 3.0,
            "tokens": [400, 370, 452, 7177, 6280, 11, 1029, 406, 13],
            "words": [
                {"word": " And", "start": 0.0, "end": 0.32, "t_dtw": -1, "probability": 0.9},
                {"word": " so", "start": 0.32, "end": 0.6, "t_dtw": -1, "probability": 0.95},
                {"word": " my", "start": 0.6, "end": 0.9, "t_dtw": -1, "probability": 0.97},
                {"word": " fellow", "start": 0.9, "end": 1.3, "t_dtw": -1, "probability": 0.99},
                {"word": " Americ", "start": 1.3, "end": 1.8, "t_dtw": -1, "probability": 0.6},
                {"word": "ans", "start": 1.8, "end": 2.1, "t_dtw": -1, "probability": 0.8},
                {"word": ",", "start": 2.1, "end": 2.1, "t_dtw": -1, "probability": 0.7},
                {"word": " ask", "start": 2.2, "end": 2.5, "t_dtw": -1, "probability": 0.9},
                {"word": " not", "start": 2.5, "end": 2.9, "t_dtw": -1, "probability": 0.9},
                {"word": ".", "start": 2.9, "end": 3.0, "t_dtw": -1, "probability": 0.9},
            ],
            "temperature": 0.0,
            "avg_logprob": -0.1,
            "no_speech_prob": 0.02,
        },
        {
            "id": 1,
            "text": " [BLANK_AUDIO]",
            "start": 3.0,
            "end": 4.0,
            "tokens": [],
            "temperature": 0.0,
            "avg_logprob": 0.0,
            "no_speech_prob": 0.9,
        },
    ],
    "detected_language": "english",
    "detected_language_probability": 0.97,
    "language_probabilities": {"en": 0.97},
}


# --- the misbehaving service ------------------------------------------------------------


@dataclass
class Seen:
    """One request as the service received it."""

    path: str
    fields: dict[str, list[str]]
    wav: tuple[int, int, int, int]  # channels, sample width, rate, frames
    at: float


@dataclass
class Script:
    """What the service answers, one entry per request; then ``default``."""

    steps: list[Any] = field(default_factory=list)
    default: Any = None
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def fake_whisper(script: Script) -> FastAPI:
    app = FastAPI()

    async def handle(request: Request) -> Response:
        form = await request.form()
        upload = form["file"]
        assert not isinstance(upload, str)
        with wave.open(io.BytesIO(await upload.read())) as wav:
            shape = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes())
        fields: dict[str, list[str]] = {}
        for key, value in form.multi_items():
            if isinstance(value, str):
                fields.setdefault(key, []).append(value)
        with script.lock:
            script.seen.append(Seen(request.url.path, fields, shape, time.monotonic()))
            step = script.steps.pop(0) if script.steps else script.default
            script.in_flight += 1
            script.most_in_flight = max(script.most_in_flight, script.in_flight)
        try:
            return await play(step)
        finally:
            with script.lock:
                script.in_flight -= 1

    async def play(step: Any) -> Response:
        if step == "hang":
            deadline = time.monotonic() + 10
            while not script.release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return JSONResponse({"error": "released"}, status_code=500)
        if isinstance(step, tuple) and step[0] == "slow":
            await asyncio.sleep(step[1])
            return JSONResponse(step[2])
        if isinstance(step, Response):
            return step
        return JSONResponse(step)

    app.add_api_route("/v1/audio/transcriptions", handle, methods=["POST"])
    app.add_api_route("/inference", handle, methods=["POST"])
    return app


class ThreadedServer:
    """uvicorn serving ``app`` on a free port in a thread (started and stopped by tests)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=10, interval=0.01, what="uvicorn")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[ThreadedServer, Script]]:
    script = Script()
    server = ThreadedServer(fake_whisper(script))
    yield server, script
    script.release.set()
    server.stop()


@pytest.fixture
def fake(service: tuple[ThreadedServer, Script]) -> Iterator[tuple[str, Script]]:
    """The service's URL and a fresh script (answering OPENAI_BODY by default)."""
    server, script = service
    script.steps.clear()
    script.seen.clear()
    script.default = OPENAI_BODY
    script.release.clear()
    script.most_in_flight = 0
    yield server.url, script
    script.release.set()


def engine(url: str, **kwargs: Any) -> HttpWhisperEngine:
    return HttpWhisperEngine(url, **{**FAST, **kwargs})


def error(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def texts(result: EngineResult) -> list[list[str]]:
    return [[w.text for w in s.words] for s in result.segments]


# --- the OpenAI protocol -------------------------------------------------------------


def test_openai_request_and_parsed_answer(fake: tuple[str, Script]) -> None:
    url, script = fake
    with engine(url + "/v1/") as eng:
        result = eng.transcribe(AUDIO, EngineOptions(language="en"))
    assert len(script.seen) == 1
    seen = script.seen[0]
    assert seen.path == "/v1/audio/transcriptions"
    assert seen.fields["model"] == ["whisper-1"]
    assert seen.fields["response_format"] == ["verbose_json"]
    assert sorted(seen.fields["timestamp_granularities[]"]) == ["segment", "word"]
    assert seen.fields["language"] == ["en"]
    assert seen.wav == (1, 2, 16000, AUDIO.size)
    assert result.language == "en"  # "english" in the answer
    assert [s.text for s in result.segments] == [
        "Ask not what your country can do.",
        "Ask what you can do.",
    ]
    assert texts(result) == [
        ["Ask", "not", "what", "your", "country", "can", "do"],
        ["Ask", "what", "you", "can", "do"],
    ]
    first = result.segments[0]
    assert (first.start, first.end) == (0.0, 2.0)
    assert first.words[0].probability == 1.0  # missing -> 1.0
    assert first.words[-1].probability == 0.5


def test_openai_detection_and_no_words(fake: tuple[str, Script]) -> None:
    url, script = fake
    with engine(url, model="large-v3") as eng:
        result = eng.transcribe(AUDIO, EngineOptions(language=None, word_timestamps=False))
    fields = script.seen[0].fields
    assert "language" not in fields  # detection: the field is left out
    assert fields["model"] == ["large-v3"]
    assert fields["timestamp_granularities[]"] == ["segment"]
    assert "prompt" not in fields
    assert result.language == "en"
    assert all(s.words == () for s in result.segments)


@pytest.mark.parametrize("api", ["openai", "whispercpp"])
def test_the_prompt_is_sent(fake: tuple[str, Script], api: str) -> None:
    url, script = fake
    if api == "whispercpp":
        script.default = WHISPERCPP_BODY
    with engine(url, api=api) as eng:
        eng.transcribe(AUDIO, EngineOptions(prompt="Kubernetes, Ada Lovelace"))
    assert script.seen[0].fields["prompt"] == ["Kubernetes, Ada Lovelace"]


def test_retries_503_twice_then_answers(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.steps = [error(503, {"error": {"message": "loading"}})] * 2
    with engine(url, retries=4) as eng:
        result = eng.transcribe(AUDIO, EngineOptions())
    assert len(script.seen) == 3
    assert len(result.segments) == 2


def test_hang_past_the_timeout_is_retried(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.steps = ["hang"]
    started = time.monotonic()
    with engine(url, timeout_s=0.3, retries=2) as eng:
        result = eng.transcribe(AUDIO, EngineOptions())
    assert time.monotonic() - started >= 0.3
    assert len(script.seen) == 2
    assert len(result.segments) == 2


def test_always_500_is_engine_unavailable(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.default = error(500, {"error": {"message": "CUDA out of memory"}})
    with engine(url, retries=2) as eng, pytest.raises(EngineUnavailable) as caught:
        eng.transcribe(AUDIO, EngineOptions())
    assert len(script.seen) == 3
    message = caught.value.message
    assert f"{url}/v1/audio/transcriptions" in message
    assert "after 3 attempts" in message
    assert "CUDA out of memory" in message
    assert "WHISPER_URL" in message
    assert caught.value.code == "engine_unavailable"
    assert caught.value.retryable


def test_400_is_engine_error_without_retry(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.steps = [error(400, {"error": {"message": "Invalid file format.", "type": "x"}})]
    with engine(url) as eng, pytest.raises(EngineError, match="Invalid file format"):
        eng.transcribe(AUDIO, EngineOptions())
    assert len(script.seen) == 1


def test_429_waits_as_long_as_retry_after_says(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.steps = [error(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})]
    with engine(url) as eng:
        eng.transcribe(AUDIO, EngineOptions())
    assert len(script.seen) == 2
    assert script.seen[1].at - script.seen[0].at >= 0.95


def test_backoff_grows_between_attempts(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.default = error(502, "bad gateway")
    with engine(url, retries=3, backoff_s=0.1) as eng, pytest.raises(EngineUnavailable):
        eng.transcribe(AUDIO, EngineOptions())
    at = [s.at for s in script.seen]
    gaps = [b - a for a, b in itertools.pairwise(at)]
    # Waits are backoff_s * 2**n with jitter in [half, full]: 0.05-0.1, 0.1-0.2, 0.2-0.4.
    assert len(gaps) == 3
    for n, gap in enumerate(gaps):
        assert gap >= 0.1 * 2**n / 2


def test_closed_port_is_engine_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with engine(url, retries=2) as eng, pytest.raises(EngineUnavailable) as caught:
        eng.transcribe(AUDIO, EngineOptions())
    assert "after 3 attempts" in caught.value.message
    assert "cannot connect" in caught.value.message
    assert time.monotonic() - started < 5


def test_answer_that_is_not_json_is_engine_error(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.steps = [Response("<html>login</html>", media_type="text/html")]
    with engine(url) as eng, pytest.raises(EngineError, match="not JSON"):
        eng.transcribe(AUDIO, EngineOptions())


def test_secrets_stay_out_of_errors_and_logs(
    fake: tuple[str, Script], caplog: pytest.LogCaptureFixture
) -> None:
    url, script = fake
    secret = "sk-very-secret-key"
    script.default = error(500, {"error": {"message": f"bad key {secret}"}})
    authed = url.replace("http://", "http://user:hunter2@")
    caplog.set_level(logging.DEBUG, logger="postcall")
    with engine(authed, retries=1, api_key=secret) as eng:
        assert "hunter2" not in repr(eng)
        with pytest.raises(EngineUnavailable) as caught:
            eng.transcribe(AUDIO, EngineOptions())
    for text in (caught.value.message, caplog.text):
        assert secret not in text and "hunter2" not in text
    assert "retrying" in caplog.text


def test_one_engine_serves_many_threads_at_once(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.default = ("slow", 0.2, OPENAI_BODY)
    results: list[EngineResult] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(eng.transcribe(AUDIO, EngineOptions()))
        except BaseException as exc:
            errors.append(exc)

    with engine(url) as eng:
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
    assert not errors
    assert len(results) == 8 and all(len(r.segments) == 2 for r in results)
    assert script.most_in_flight > 1  # the requests really overlapped


def endpoint_of(url: str, api: Any = "openai") -> str:
    with HttpWhisperEngine(url, api=api) as eng:
        return eng.endpoint


def test_url_forms() -> None:
    openai = "http://h:9/v1/audio/transcriptions"
    for url in ("http://h:9/", "http://h:9/v1", "http://h:9/v1/", openai):
        assert endpoint_of(url) == openai
    for url in ("http://h:9", "http://h:9/inference"):
        assert endpoint_of(url, "whispercpp") == "http://h:9/inference"
    assert endpoint_of("https://h/proxy/v1") == "https://h/proxy/v1/audio/transcriptions"
    with pytest.raises(ValueError, match="http"):
        HttpWhisperEngine("h:9000")
    with pytest.raises(ValueError, match="Whisper API"):
        HttpWhisperEngine("http://h", api="grpc")  # type: ignore[arg-type]


# --- the whisper.cpp protocol ------------------------------------------------------------


def test_whispercpp_request_and_tokens_joined_into_words(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.default = WHISPERCPP_BODY
    with engine(url + "/inference", api="whispercpp") as eng:
        result = eng.transcribe(AUDIO, EngineOptions(language=None))
    seen = script.seen[0]
    assert seen.path == "/inference"
    assert seen.fields["response_format"] == ["verbose_json"]
    assert seen.fields["temperature"] == ["0"]
    assert seen.fields["language"] == ["auto"]
    assert "model" not in seen.fields
    assert seen.wav == (1, 2, 16000, AUDIO.size)
    assert result.language == "en"
    assert [s.text for s in result.segments] == ["And so my fellow Americans, ask not."]
    words = result.segments[0].words
    assert [w.text for w in words] == ["And", "so", "my", "fellow", "Americans,", "ask", "not."]
    americans = words[4]
    assert (americans.start, americans.end) == (1.3, 2.1)
    assert americans.probability == pytest.approx((0.6 + 0.8 + 0.7) / 3)


def test_whispercpp_language_is_sent(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.default = WHISPERCPP_BODY
    with engine(url, api="whispercpp") as eng:
        eng.transcribe(AUDIO, EngineOptions(language="de"))
    assert script.seen[0].fields["language"] == ["de"]


def test_whispercpp_error_with_status_200(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.steps = [{"error": "failed to read audio data"}]
    with engine(url, api="whispercpp") as eng, pytest.raises(EngineError, match="read audio"):
        eng.transcribe(AUDIO, EngineOptions())
    assert len(script.seen) == 1


def test_whispercpp_full_json_tokens_with_offsets() -> None:
    # whisper-cli's -ojf shape: "transcription", times in ms under "offsets", token
    # objects with "text" and "p", special tokens included.
    body = {
        "result": {"language": "en"},
        "transcription": [
            {
                "offsets": {"from": 0, "to": 1500},
                "text": " Hello there.",
                "tokens": [
                    {"text": "[_BEG_]", "offsets": {"from": 0, "to": 0}, "id": 50364, "p": 0.9},
                    {"text": " Hel", "offsets": {"from": 0, "to": 400}, "id": 1, "p": 0.8},
                    {"text": "lo", "offsets": {"from": 400, "to": 700}, "id": 2, "p": 0.6},
                    {"text": " there", "offsets": {"from": 800, "to": 1300}, "id": 3, "p": 0.9},
                    {"text": ".", "offsets": {"from": 1300, "to": 1400}, "id": 4, "p": 0.9},
                    {
                        "text": "[_TT_75]",
                        "offsets": {"from": 1500, "to": 1500},
                        "id": 50439,
                        "p": 0.5,
                    },
                ],
            },
        ],
    }
    result = parse_response(body, fallback_language="en", join_tokens=True)
    assert result.language == "en"
    (segment,) = result.segments
    assert (segment.start, segment.end, segment.text) == (0.0, 1.5, "Hello there.")
    assert [(w.text, w.start, w.end) for w in segment.words] == [
        ("Hello", 0.0, 0.7),
        ("there.", 0.8, 1.4),
    ]


def test_parse_tolerates_missing_word_times_and_plain_json() -> None:
    body = {
        "language": "German",
        "segments": [
            {
                "start": 1.0,
                "end": 2.0,
                "text": " Guten Tag",
                "words": [{"word": " Guten", "start": -1, "end": -1}, {"word": " Tag"}],
            },
        ],
    }
    result = parse_response(body, join_tokens=True)
    assert result.language == "de"
    words = result.segments[0].words
    assert [w.text for w in words] == ["Guten", "Tag"]
    assert all(1.0 <= w.start <= w.end <= 2.0 for w in words)
    plain = parse_response({"text": " hi"}, fallback_language=None)
    assert (plain.language, [s.text for s in plain.segments]) == ("und", ["hi"])


def test_encode_wav_roundtrip() -> None:
    samples = np.array([0.0, 0.5, -0.5, 1.5, -2.0], dtype=np.float32)
    with wave.open(io.BytesIO(encode_wav(samples))) as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    assert pcm.tolist() == [0, 16384, -16384, 32767, -32767]


# --- postcall's own Whisper app ------------------------------------------------------------


@pytest.fixture(scope="module")
def wav_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tone = (0.3 * np.sin(np.arange(3 * 16000) / 16000 * 2 * np.pi * 220)).astype(np.float32)
    path = tmp_path_factory.mktemp("whisper") / "tone.wav"
    return media.write_audio(Path(path), tone).read_bytes()


def whisper_client(engine: Any, max_upload_bytes: int = 10_000_000) -> TestClient:
    from postcall.api.whisper import create_whisper_app

    app = create_whisper_app(
        engine, model_name="/models/tiny.en", max_upload_bytes=max_upload_bytes
    )
    return TestClient(app)


def post(client: TestClient, data: bytes, **fields: Any) -> Any:
    return client.post(
        "/v1/audio/transcriptions", files={"file": ("a.wav", data, "audio/wav")}, data=fields
    )


def test_app_formats(wav_bytes: bytes) -> None:
    scripted = ScriptedEngine()
    with whisper_client(scripted) as client:
        assert client.get("/health").json()["status"] == "ok"
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [
            "tiny.en",
            "whisper-1",
        ]
        r = post(
            client,
            wav_bytes,
            model="whisper-1",
            response_format="verbose_json",
            **{"timestamp_granularities[]": ["word", "segment"]},
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-model"] == "whisper-1"
        body = r.json()
        assert body["task"] == "transcribe" and body["language"] == "en"
        assert body["duration"] == pytest.approx(3.0, abs=0.01)
        assert body["text"] == "w0 w1 w2"
        (segment,) = body["segments"]
        assert {"id", "start", "end", "text", "avg_logprob", "no_speech_prob"} <= set(segment)
        assert [w["word"] for w in body["words"]] == ["w0", "w1", "w2"]
        assert body["words"][0] == {"word": "w0", "start": 0.1, "end": 0.9, "probability": 0.9}
        assert scripted.seen_options[-1].word_timestamps
        assert post(client, wav_bytes).json() == {"text": "w0 w1 w2"}
        assert not scripted.seen_options[-1].word_timestamps  # not asked for, not computed
        assert scripted.seen_options[-1].language is None  # no language field: detect
        r = post(client, wav_bytes, response_format="text", language="de")
        assert r.text == "w0 w1 w2\n" and scripted.seen_options[-1].language == "de"
        srt = post(client, wav_bytes, response_format="srt").text
        assert srt.startswith("1\n00:00:00,100 --> 00:00:02,900\nw0 w1 w2")
        assert post(client, wav_bytes, response_format="vtt").text.startswith("WEBVTT\n")


def test_app_errors(wav_bytes: bytes) -> None:
    with whisper_client(ScriptedEngine(), max_upload_bytes=len(wav_bytes) - 1) as client:
        r = post(client, wav_bytes)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "payload_too_large"
    with whisper_client(ScriptedEngine()) as client:
        r = post(client, b"this is not audio at all")
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["code"] == "unsupported_media"
        assert post(client, wav_bytes, response_format="xml").status_code == 400
        assert post(client, wav_bytes, language="klingon").json()["error"]["param"] == "language"
        assert client.post("/v1/audio/transcriptions", data={"a": "b"}).status_code == 400
        assert client.get("/nowhere").json()["error"]["code"] == "not_found"


class BrokenModel:
    """An engine whose model cannot be loaded."""

    def load(self) -> None:
        raise ModelUnavailable("WHISPER_MODEL='nope' is not a model directory")

    def transcribe(self, audio: Any, options: EngineOptions) -> EngineResult:
        self.load()
        raise AssertionError("unreachable")


def test_app_model_unavailable_is_503(wav_bytes: bytes) -> None:
    with whisper_client(BrokenModel()) as client:
        health = wait_for(
            lambda: (
                client.get("/health")
                if client.get("/health").json()["status"] != "loading"
                else None
            ),
            timeout=5,
            interval=0.02,
        )
        assert health.status_code == 503 and health.json()["status"] == "error"
        r = post(client, wav_bytes)
        assert r.status_code == 503
        assert r.json()["error"] == {
            "message": "WHISPER_MODEL='nope' is not a model directory",
            "type": "server_error",
            "param": None,
            "code": "model_unavailable",
        }


def test_engine_against_postcall_whisper_app() -> None:
    """The remote engine and postcall's own server speak the same protocol."""
    from postcall.api.whisper import create_whisper_app

    scripted = ScriptedEngine(language="de")
    server = ThreadedServer(create_whisper_app(scripted, model_name="m", max_upload_bytes=10**7))
    try:
        audio = np.concatenate([AUDIO, AUDIO, np.zeros(8000, dtype=np.float32)])
        with engine(server.url) as eng:
            result = eng.transcribe(audio, EngineOptions(language="de"))
    finally:
        server.stop()
    assert result.language == "de"
    assert texts(result) == [["w0", "w1"]]
    assert scripted.seen_options[-1].language == "de"
    assert scripted.seen_options[-1].word_timestamps


# --- completeness -------------------------------------------------------------------


def openai_answer(words: list[tuple[str, float, float]]) -> dict[str, Any]:
    """An OpenAI-style answer with one segment holding ``words`` (text, start, end)."""
    return {
        "task": "transcribe",
        "language": "english",
        "text": " ".join(w for w, _, _ in words),
        "segments": [
            {
                "id": 0,
                "start": words[0][1],
                "end": words[-1][2],
                "text": " " + " ".join(w for w, _, _ in words),
                "avg_logprob": -0.2,
                "no_speech_prob": 0.01,
            }
        ],
        "words": [{"word": w, "start": a, "end": b} for w, a, b in words],
    }


def test_speech_the_service_skipped_is_sent_again_alone(
    fake: tuple[str, Script], testdata: Path
) -> None:
    # Two utterances 1.5 s apart; the service answers the first request with the first
    # utterance's words only, as a decoder that stopped early does.
    first = media.load_mono16k(testdata / "jfk.flac")
    second = media.load_mono16k(testdata / "librispeech/1221-135766-0002.wav")
    gap = np.zeros(round(1.5 * 16000), dtype=np.float32)
    audio = np.concatenate([first, gap, second])
    start_second = (first.size + gap.size) / 16000
    said = "And so my fellow Americans ask not what your country can do for you ask what you"
    jfk = [*said.split(), "can", "do", "for", "your", "country"]
    read = "Yet these thoughts affected Hester Prynne less with hope than apprehension"
    hester = read.split()
    step = 10.2 / len(jfk)  # the words spread over where jfk.flac speaks (0.3-10.5 s)
    url, script = fake
    script.steps = [
        openai_answer([(w, 0.3 + step * i, 0.3 + step * (i + 0.8)) for i, w in enumerate(jfk)]),
        openai_answer([(w, 0.2 + 0.4 * i, 0.5 + 0.4 * i) for i, w in enumerate(hester)]),
    ]
    script.default = openai_answer([("unexpected", 0.0, 0.5)])
    with engine(url) as eng:
        result = eng.transcribe(audio, EngineOptions(language="en"))
    assert len(script.seen) == 2, [s.wav for s in script.seen]
    assert script.seen[1].wav[3] < audio.size / 2  # a stretch, not the chunk again
    words = {w.text: w for s in result.segments for w in s.words}
    assert "Americans" in words and "thoughts" in words
    # Placed on the chunk's timeline, inside the second utterance.
    assert start_second - 0.5 <= words["thoughts"].start <= audio.size / 16000
