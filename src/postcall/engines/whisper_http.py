"""A remote Whisper HTTP service as an ``Engine``: OpenAI-compatible or whisper.cpp.

Each call sends one piece of audio as a 16-bit PCM WAV and parses the service's
``verbose_json`` into segments and words. Two protocols:

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
import io
import logging
import math
import random
import re
import threading
import time
import wave
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import numpy.typing as npt

from postcall.domain import Segment, Word
from postcall.engines.base import EngineOptions, EngineResult
from postcall.errors import EngineError, EngineUnavailable
from postcall.languages import WHISPER_LANGUAGES

log = logging.getLogger(__name__)

Api = Literal["openai", "whispercpp"]

SAMPLE_RATE = 16000
_MAX_BACKOFF_S = 30.0  # one wait between attempts never exceeds this…
_MAX_RETRY_AFTER_S = 60.0  # …unless the service asked for more (429), up to this
_CONNECT_TIMEOUT_S = 10.0  # a refused or unroutable address should not take timeout_s
_NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
_BLANK_MARKERS = frozenset({"[BLANK_AUDIO]"})  # whisper.cpp's text for a silent segment
# whisper.cpp's special tokens when they leak into text: [_BEG_], [_TT_150], <|en|>.
_SPECIAL_TOKEN = re.compile(r"^\s*(\[_[A-Z]+_?\d*\]|<\|[^|]*\|>)\s*$")
_PUNCTUATION = re.compile(r"^[\W_]+$")

# Whisper's language names (what OpenAI and whisper.cpp answer with), to codes.
_LANGUAGE_NAMES: dict[str, str] = {
    "english": "en",
    "chinese": "zh",
    "german": "de",
    "spanish": "es",
    "russian": "ru",
    "korean": "ko",
    "french": "fr",
    "japanese": "ja",
    "portuguese": "pt",
    "turkish": "tr",
    "polish": "pl",
    "catalan": "ca",
    "dutch": "nl",
    "arabic": "ar",
    "swedish": "sv",
    "italian": "it",
    "indonesian": "id",
    "hindi": "hi",
    "finnish": "fi",
    "vietnamese": "vi",
    "hebrew": "he",
    "ukrainian": "uk",
    "greek": "el",
    "malay": "ms",
    "czech": "cs",
    "romanian": "ro",
    "danish": "da",
    "hungarian": "hu",
    "tamil": "ta",
    "norwegian": "no",
    "thai": "th",
    "urdu": "ur",
    "croatian": "hr",
    "bulgarian": "bg",
    "lithuanian": "lt",
    "latin": "la",
    "maori": "mi",
    "malayalam": "ml",
    "welsh": "cy",
    "slovak": "sk",
    "telugu": "te",
    "persian": "fa",
    "latvian": "lv",
    "bengali": "bn",
    "serbian": "sr",
    "azerbaijani": "az",
    "slovenian": "sl",
    "kannada": "kn",
    "estonian": "et",
    "macedonian": "mk",
    "breton": "br",
    "basque": "eu",
    "icelandic": "is",
    "armenian": "hy",
    "nepali": "ne",
    "mongolian": "mn",
    "bosnian": "bs",
    "kazakh": "kk",
    "albanian": "sq",
    "swahili": "sw",
    "galician": "gl",
    "marathi": "mr",
    "punjabi": "pa",
    "sinhala": "si",
    "khmer": "km",
    "shona": "sn",
    "yoruba": "yo",
    "somali": "so",
    "afrikaans": "af",
    "occitan": "oc",
    "georgian": "ka",
    "belarusian": "be",
    "tajik": "tg",
    "sindhi": "sd",
    "gujarati": "gu",
    "amharic": "am",
    "yiddish": "yi",
    "lao": "lo",
    "uzbek": "uz",
    "faroese": "fo",
    "haitian creole": "ht",
    "pashto": "ps",
    "turkmen": "tk",
    "nynorsk": "nn",
    "maltese": "mt",
    "sanskrit": "sa",
    "luxembourgish": "lb",
    "myanmar": "my",
    "tibetan": "bo",
    "tagalog": "tl",
    "malagasy": "mg",
    "assamese": "as",
    "tatar": "tt",
    "hawaiian": "haw",
    "lingala": "ln",
    "hausa": "ha",
    "bashkir": "ba",
    "javanese": "jw",
    "sundanese": "su",
    "cantonese": "yue",
    # aliases openai-whisper accepts
    "burmese": "my",
    "valencian": "ca",
    "flemish": "nl",
    "haitian": "ht",
    "letzeburgesch": "lb",
    "pushto": "ps",
    "panjabi": "pa",
    "moldavian": "ro",
    "moldovan": "ro",
    "sinhalese": "si",
    "castilian": "es",
    "mandarin": "zh",
}


def language_code(value: object) -> str | None:
    """A Whisper language code for ``value`` ("en" or "english"), None when absent."""
    if not isinstance(value, str) or not value.strip():
        return None
    name = value.strip().lower()
    if name in WHISPER_LANGUAGES:
        return name
    return _LANGUAGE_NAMES.get(name, name)


def encode_wav(audio: npt.NDArray[np.float32], sample_rate: int = SAMPLE_RATE) -> bytes:
    """``audio`` (float mono in [-1, 1]) as a 16-bit PCM WAV file, in memory."""
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


class HttpWhisperEngine:
    """The ``Engine`` port over a remote Whisper HTTP service (thread-safe).

    ``url`` is the service's base address; for ``openai`` a trailing ``/v1`` (or the
    full ``/v1/audio/transcriptions``) is accepted too, for ``whispercpp`` a trailing
    ``/inference``. A request is tried ``1 + retries`` times; ``backoff_s`` is the
    first wait between attempts, doubled each time, with jitter. ``model`` is the
    model name sent to OpenAI-style services (default ``whisper-1``). ``api_key``,
    when given, is sent as a bearer token. ``client`` replaces the engine's own
    connection pool (it is then not closed by ``close()``).
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
    ) -> None:
        if api not in ("openai", "whispercpp"):
            raise ValueError(f"unknown Whisper API {api!r}: use 'openai' or 'whispercpp'")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("need timeout_s > 0, retries >= 0 and backoff_s >= 0")
        self.api: Api = api
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
        """Send ``audio`` to the service; ``EngineUnavailable`` when it stays down."""
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


@dataclass
class _RawSegment:
    start: float
    end: float
    text: str
    pieces: list[_Piece] | None


@dataclass
class _Piece:
    """A word or a whisper.cpp token, before it becomes a ``Word``."""

    text: str
    start: float | None
    end: float | None
    probability: float


def parse_response(
    body: Mapping[str, Any],
    *,
    fallback_language: str | None = None,
    duration: float | None = None,
    words: bool = True,
    join_tokens: bool = False,
) -> EngineResult:
    """An ``EngineResult`` from a ``verbose_json`` answer of either protocol.

    Segments are read from ``segments`` (or whisper.cpp's full-JSON ``transcription``),
    with times in seconds (``start``/``end``) or milliseconds (``offsets``). Words come
    from each segment's ``words`` or ``tokens`` (objects only), else from top-level
    ``words`` assigned to segments by time. ``join_tokens`` joins BPE tokens into words
    (a token without a leading space continues the word before it). A missing word
    probability counts as 1.0. The language is the answer's, as a code, else
    ``fallback_language``, else ``und``. An answer with only ``text`` becomes one
    segment over ``duration`` seconds (the audio's length).
    """
    language = (
        language_code(body.get("language"))
        or language_code(body.get("detected_language"))
        or fallback_language
        or "und"
    )
    raw_segments = body.get("segments")
    if raw_segments is None:
        raw_segments = body.get("transcription")
    if not isinstance(raw_segments, list):
        text = body.get("text")
        if isinstance(text, str) and text.strip() and raw_segments is None:
            # A json (not verbose_json) answer: the text, without times.
            length = _number(body.get("duration")) or duration or 0.0
            return EngineResult(language, (Segment(0.0, length, text.strip()),))
        if raw_segments is None and isinstance(text, str):
            return EngineResult(language, ())
        raise EngineError("the Whisper service's answer has no list of segments")
    join = join_tokens and language not in _NO_SPACE_LANGUAGES
    segments: list[_RawSegment] = []
    for raw in raw_segments:
        if not isinstance(raw, Mapping):
            continue
        start, end = _span(raw)
        text = str(raw.get("text") or "").strip()
        if not text or text in _BLANK_MARKERS or start is None:
            continue
        end = max(end if end is not None else start, start)
        segments.append(_RawSegment(start, end, text, _pieces(raw)))
    top_level = body.get("words")
    if isinstance(top_level, list) and all(s.pieces is None for s in segments):
        _assign(segments, [p for p in map(_piece, top_level) if p is not None])
    return EngineResult(
        language=language,
        segments=tuple(
            Segment(
                start=s.start,
                end=s.end,
                text=s.text,
                words=_words(s.pieces or [], s.start, s.end, join) if words else (),
            )
            for s in segments
        ),
    )


def _span(raw: Mapping[str, Any]) -> tuple[float | None, float | None]:
    start, end = _number(raw.get("start")), _number(raw.get("end"))
    offsets = raw.get("offsets")
    if start is None and isinstance(offsets, Mapping):
        begin, finish = _number(offsets.get("from")), _number(offsets.get("to"))
        start = begin / 1000 if begin is not None else None
        end = finish / 1000 if finish is not None else None
    return start, end


def _pieces(raw: Mapping[str, Any]) -> list[_Piece] | None:
    """The segment's own words or tokens (None when it carries none as objects)."""
    for key in ("words", "tokens"):
        items = raw.get(key)
        if isinstance(items, list) and any(isinstance(i, Mapping) for i in items):
            return [p for p in map(_piece, items) if p is not None]
    return None


def _piece(item: object) -> _Piece | None:
    if not isinstance(item, Mapping):
        return None
    text = item.get("word", item.get("text"))
    if not isinstance(text, str) or not text.strip() or _SPECIAL_TOKEN.match(text):
        return None
    start, end = _span(item)
    probability = _number(item.get("probability", item.get("p")))
    return _Piece(
        text=text,
        start=start if start is not None and start >= 0 else None,
        end=end if end is not None and end >= 0 else None,
        probability=1.0 if probability is None else min(max(probability, 0.0), 1.0),
    )


def _assign(segments: Sequence[_RawSegment], pieces: list[_Piece]) -> None:
    """Put top-level words into the segment whose span holds (or is nearest) them."""
    if not segments:
        return
    starts = [s.start for s in segments]
    for segment in segments:
        segment.pieces = []
    for piece in pieces:
        if piece.start is None:
            continue
        mid = (piece.start + (piece.end if piece.end is not None else piece.start)) / 2
        i = max(0, bisect_right(starts, mid) - 1)
        after = i + 1
        if (
            mid > segments[i].end
            and after < len(segments)
            and segments[after].start - mid < mid - segments[i].end
        ):
            i = after
        owner = segments[i].pieces
        assert owner is not None
        owner.append(piece)


def _words(pieces: list[_Piece], seg_start: float, seg_end: float, join: bool) -> tuple[Word, ...]:
    """Words from pieces: tokens joined when ``join``; missing times filled in."""
    groups: list[list[_Piece]] = []
    for piece in pieces:
        # A BPE token without a leading space continues the word before it, and
        # punctuation ("," "?") always belongs to the word before it.
        glued = join and not piece.text[:1].isspace()
        if groups and (glued or _PUNCTUATION.match(piece.text.strip())):
            groups[-1].append(piece)
        else:
            groups.append([piece])
    found: list[Word] = []
    previous_end = seg_start
    for group in groups:
        text = "".join(p.text for p in group).strip()
        starts = [p.start for p in group if p.start is not None]
        ends = [p.end for p in group if p.end is not None]
        start = starts[0] if starts else previous_end
        end = ends[-1] if ends else max(start, min(previous_end, seg_end))
        end = max(end, start)
        probability = sum(p.probability for p in group) / len(group)
        found.append(Word(start=start, end=end, text=text, probability=probability))
        previous_end = end
    return tuple(found)


# --- small helpers ------------------------------------------------------------------


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


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


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
