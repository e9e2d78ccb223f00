"""The wire formats of Whisper HTTP services: WAV out, OpenAI verbose_json or
whisper.cpp's verbose_json back, parsed into segments with word timings.

Pure functions; ``postcall.engines.whisper_http`` does the HTTP.
"""

from __future__ import annotations

import io
import math
import re
import wave
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from postcall.domain import Segment, Word
from postcall.engines.base import EngineResult
from postcall.errors import EngineError
from postcall.languages import WHISPER_LANGUAGES

SAMPLE_RATE = 16000
Api = Literal["openai", "whispercpp"]

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


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
