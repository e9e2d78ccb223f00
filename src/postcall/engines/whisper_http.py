"""A remote Whisper HTTP service as an ``Engine``: OpenAI-compatible or whisper.cpp.

Each call sends one piece of audio, levelled as for the in-process engine
(``levels.levelled``), as a 16-bit PCM WAV and parses the service's ``verbose_json``
into segments and words; speech that no word of the answer accounts for is sent again
on its own and merged in (``completeness.recover``). Two protocols:

- ``openai``: ``POST {url}/v1/audio/transcriptions`` (OpenAI, ``postcall
  whisper-server``, speaches, LocalAI, …). OpenAI returns words at the top level;
  they are assigned to segments by time. Some servers nest them in the segments.
- ``whispercpp``: ``POST {url}/inference`` (whisper.cpp's ``whisper-server``). Its
  segments carry ``words`` that are really BPE tokens (`` Americ``, ``ans``, ``,``)
  with times; they are joined into words here.

Timeouts, connection failures, 5xx, 408 and 429 are retried with exponential backoff and
jitter (429 honours ``Retry-After``); a service that stays down raises
``EngineUnavailable``, a request it refuses (another 4xx) ``EngineError``. One
``httpx.Client`` with a connection pool is shared by every thread calling in.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import numpy.typing as npt

from postcall.domain import Word
from postcall.engines import completeness
from postcall.engines.base import EngineOptions, EngineResult
from postcall.engines.levels import levelled
from postcall.engines.speech import find_speech
from postcall.engines.whisper_wire import SAMPLE_RATE, Api, encode_wav, parse_response
from postcall.engines.windows import normalised
from postcall.errors import EngineError, EngineUnavailable

log = logging.getLogger(__name__)


_MAX_BACKOFF_S = 30.0  # one wait between attempts never exceeds this…
_MAX_RETRY_AFTER_S = 60.0  # …unless the service asked for more (429), up to this
_CONNECT_TIMEOUT_S = 10.0  # a refused or unroutable address should not take timeout_s


class HttpWhisperEngine:
    """The ``Engine`` port over a remote Whisper HTTP service (thread-safe).

    ``url`` is the service's base address; for ``openai`` a trailing ``/v1`` (or the
    full ``/v1/audio/transcriptions``) is accepted too, for ``whispercpp`` a trailing
    ``/inference``. A request is tried ``1 + retries`` times; ``backoff_s`` is the
    first wait between attempts, doubled each time, with jitter. ``model`` is the
    model name sent to OpenAI-style services (default ``whisper-1``). ``api_key``,
    when given, is sent as a bearer token. ``client`` replaces the engine's own
    connection pool (it is then not closed by ``close()``). ``concurrency``: chunks
    of one job sent at once (``parallelism``).
    """

    def __init__(
        self,
        url: str,
        *,
        api: Api = "openai",
        timeout_s: float = 300.0,
        retries: int = 4,
        model: str | None = None,
        backoff_s: float = 0.5,
        client: httpx.Client | None = None,
        api_key: str | None = None,
        concurrency: int = 4,
    ) -> None:
        if api not in ("openai", "whispercpp"):
            raise ValueError(f"unknown Whisper API {api!r}: use 'openai' or 'whispercpp'")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("need timeout_s > 0, retries >= 0 and backoff_s >= 0")
        self.api: Api = api
        self.parallelism = max(1, concurrency)  # chunks of one job sent at once
        self.endpoint = _endpoint(url, api)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.model = model or "whisper-1"
        # For messages and logs: the address without user, password or query string.
        self.display_url = _redact(self.endpoint)
        self._secrets = tuple(s for s in (api_key, urlsplit(url).password) if s)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, _CONNECT_TIMEOUT_S))
        self._owns_client = client is None
        self._client = client
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HttpWhisperEngine({self.display_url!r}, api={self.api!r})"

    def close(self) -> None:
        """Close the connection pool (when the engine created it)."""
        with self._client_lock:
            if self._owns_client and self._client is not None:
                self._client.close()
                self._client = None

    def _http(self) -> httpx.Client:
        """The shared client, made on first use (building its TLS context takes time)."""
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    timeout=self._timeout,
                    limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
                )
            return self._client

    def __enter__(self) -> HttpWhisperEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def transcribe(self, audio: npt.NDArray[np.float32], options: EngineOptions) -> EngineResult:
        """Send ``audio`` (levelled) to the service; ``EngineUnavailable`` when it stays
        down. Speech that no word of the answer accounts for is sent again on its own
        (``completeness.recover``), so a chunk the service skipped part of is not lost."""
        conditioned = levelled(audio)
        result = self._ask(conditioned, options)
        if not (options.word_timestamps and options.vad):
            return result
        # The regions to check: the speech found here, and wherever the service put
        # its segments (so every word it gave has a region, and keeps its time).
        spans = [
            (round(s.start * SAMPLE_RATE), round(s.end * SAMPLE_RATE)) for s in result.segments
        ]
        speech = find_speech(conditioned, audio)
        regions = normalised(speech + spans, max([audio.size, *(b for _, b in spans)]))
        placed = completeness.place([w for s in result.segments for w in s.words], regions)

        def read_alone(stretches: list[tuple[int, int]], _packed: bool) -> list[Word]:
            # One request a stretch, in every round: the service reads each alone.
            words: list[Word] = []
            for a, b in stretches:
                again = self._ask(conditioned[a:b], options)
                words += [
                    replace(w, start=w.start + a / SAMPLE_RATE, end=w.end + a / SAMPLE_RATE)
                    for s in again.segments
                    for w in s.words
                ]
            return words

        words = completeness.recover(regions, placed, read_alone)
        if words == placed:
            return result  # the service's own segments, with their punctuation
        return replace(result, segments=tuple(completeness.segments(words)))

    def _ask(self, audio: npt.NDArray[np.float32], options: EngineOptions) -> EngineResult:
        body = self._post(encode_wav(audio), self._fields(options))
        return parse_response(
            body,
            fallback_language=options.language,
            duration=audio.size / SAMPLE_RATE,
            words=options.word_timestamps,
            join_tokens=self.api == "whispercpp",
        )

    # --- the request -------------------------------------------------------------

    def _fields(self, options: EngineOptions) -> dict[str, str | list[str]]:
        fields: dict[str, str | list[str]] = {"response_format": "verbose_json"}
        if self.api == "openai":
            fields["model"] = self.model
            fields["timestamp_granularities[]"] = (
                ["word", "segment"] if options.word_timestamps else ["segment"]
            )
            if options.language:
                fields["language"] = options.language
        else:
            fields["temperature"] = "0"
            fields["language"] = options.language or "auto"
            # whisper.cpp's server cuts segments at 60 characters; on a word boundary,
            # not inside a word, with this.
            fields["split_on_word"] = "true"
        if options.prompt:
            fields["prompt"] = options.prompt  # both protocols call it so
        return fields

    def _post(self, wav: bytes, fields: Mapping[str, str | list[str]]) -> dict[str, Any]:
        attempts = self.retries + 1
        problem = ""
        for attempt in range(attempts):
            wait = 0.0
            try:
                response = self._http().post(
                    self.endpoint,
                    data=dict(fields),
                    files={"file": ("audio.wav", wav, "audio/wav")},
                    headers=self._headers,
                    timeout=self._timeout,
                )
            except httpx.TimeoutException as exc:
                problem = f"no answer within {self.timeout_s:g} s ({type(exc).__name__})"
            except httpx.TransportError as exc:
                problem = f"cannot connect ({type(exc).__name__}: {self._clean(str(exc))})"
            else:
                status = response.status_code
                if status < 300:
                    return self._json(response)
                message = self._clean(_service_message(response))
                if status in (408, 429) or status >= 500:
                    problem = f"HTTP {status}: {message}"
                    if status == 429:
                        wait = _retry_after(response.headers.get("retry-after"))
                else:
                    hint = (
                        f"; is WHISPER_URL right, and is it an {self.api!r} service "
                        "(POSTCALL_WHISPER_API)?"
                        if status in (404, 405)
                        else ""
                    )
                    raise EngineError(
                        f"the Whisper service at {self.display_url} refused the request "
                        f"(HTTP {status}): {message}{hint}"
                    )
            if attempt + 1 < attempts:
                wait = max(wait, self._backoff(attempt))
                log.warning(
                    "Whisper service %s: %s; retrying in %.2f s (attempt %d of %d)",
                    self.display_url,
                    problem,
                    wait,
                    attempt + 1,
                    attempts,
                )
                time.sleep(wait)
        raise EngineUnavailable(
            f"the Whisper service at {self.display_url} did not answer after {attempts} "
            f"attempts: {problem}; check WHISPER_URL"
        )

    def _backoff(self, attempt: int) -> float:
        # Exponential with "equal jitter": half fixed, half random, so that workers that
        # failed together do not all come back at the same instant.
        delay = min(self.backoff_s * 2.0**attempt, _MAX_BACKOFF_S)
        return delay / 2 + random.uniform(0, delay / 2)

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type")
            raise EngineError(
                f"the Whisper service at {self.display_url} answered with {kind}, not JSON: "
                f"{self._clean(response.text[:200])!r}; is WHISPER_URL (and "
                f"POSTCALL_WHISPER_API={self.api}) right?"
            ) from None
        if not isinstance(body, dict):
            raise EngineError(
                f"the Whisper service at {self.display_url} answered with a JSON "
                f"{type(body).__name__}, not an object"
            )
        # whisper.cpp reports some failures ("failed to read audio data") with HTTP 200.
        if "error" in body and "segments" not in body and "text" not in body:
            raise EngineError(
                f"the Whisper service at {self.display_url} failed: "
                f"{self._clean(_error_text(body['error']))}"
            )
        return body

    def _clean(self, text: str) -> str:
        """``text`` without the API key or URL password, should a service echo them."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


# --- parsing ----------------------------------------------------------------------


def _endpoint(url: str, api: Api) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"WHISPER_URL={_redact(url)!r} is not an http:// or https:// address")
    path = parts.path.rstrip("/")
    suffixes = ("/v1/audio/transcriptions", "/v1") if api == "openai" else ("/inference",)
    for suffix in suffixes:
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    path += "/v1/audio/transcriptions" if api == "openai" else "/inference"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _error_text(error: object) -> str:
    if isinstance(error, Mapping):
        return str(error.get("message") or error.get("detail") or error)
    return str(error)


def _service_message(response: httpx.Response) -> str:
    """The reason a service gives in an error response (OpenAI, whisper.cpp, FastAPI)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        for key in ("error", "detail", "message"):
            if body.get(key):
                return _error_text(body[key])[:500]
    text = " ".join(response.text.split())[:300]
    return text or response.reason_phrase or "no details"


def _retry_after(value: str | None) -> float:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or HTTP date)."""
    if not value:
        return 0.0
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 0.0
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)
