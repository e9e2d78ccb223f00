"""Rendering transcript documents: plain text lines, SubRip, WebVTT and JSON.

Pure functions, no I/O. The JSON shape (``document_to_dict``) is also how transcript
documents are stored, and ``document_from_dict`` loads them back.

Timestamps are computed on whole milliseconds (rounded half up from the float seconds)
before they are split into fields, so a time such as 59.9995 s becomes
``00:01:00,000`` and never ``00:00:60,000``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from postcall.domain import Participant, Segment, TranscriptDocument, Word
from postcall.errors import InvalidInput

FORMATS: dict[str, str] = {
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip",
    "vtt": "text/vtt; charset=utf-8",
    "json": "application/json",
    "recall": "application/json",
}
"""Supported output formats: format name -> media type."""

DEFAULT_SPEAKER = "Speaker 1"
"""The label shown for a segment without a speaker."""

# A cue must have a positive duration; zero-length or reversed segments get this one.
MIN_CUE_MS = 1

_T = TypeVar("_T")


def render(doc: TranscriptDocument, fmt: str) -> str:
    """Render ``doc`` in the format named ``fmt`` (one of ``FORMATS``, case-insensitive).

    Raises ``InvalidInput`` (field ``format``) for an unknown format.
    """
    renderer = _RENDERERS.get(fmt.strip().lower())
    if renderer is None:
        supported = ", ".join(FORMATS)
        raise InvalidInput(
            f"unsupported format {fmt!r}; supported formats: {supported}", field="format"
        )
    return renderer(doc)


# --- timestamps ---------------------------------------------------------------


def to_milliseconds(seconds: float) -> int:
    """Whole milliseconds for ``seconds``, rounded half up; negative times become 0."""
    return max(0, math.floor(seconds * 1000 + 0.5))


def format_timestamp(seconds: float, separator: str = ",") -> str:
    """``HH:MM:SS,mmm`` (SubRip) or, with ``separator="."``, ``HH:MM:SS.mmm`` (WebVTT).

    Hours keep counting past 99 (``100:00:00,000``).
    """
    return _format_ms(to_milliseconds(seconds), separator)


def _format_ms(ms: int, separator: str) -> str:
    secs, millis = divmod(ms, 1000)
    hours, rest = divmod(secs, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cue_span(segment: Segment) -> tuple[int, int]:
    """Start and end of a cue in milliseconds, with a positive duration."""
    start = to_milliseconds(segment.start)
    end = max(to_milliseconds(segment.end), start + MIN_CUE_MS)
    return start, end


# --- text cleaning --------------------------------------------------------------


def clean_text(text: str) -> str:
    """``text`` on one line: stripped, every run of whitespace (newlines too) one space."""
    return " ".join(text.split())


def speaker_label(segment: Segment) -> str:
    """The segment's speaker on one line, or ``Speaker 1`` when it has none."""
    return clean_text(segment.speaker or "") or DEFAULT_SPEAKER


def _vtt_escape(text: str) -> str:
    # WebVTT cue text: & and < start markup, and > must go so that "-->" cannot appear.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- the text formats ---------------------------------------------------------------


def to_text_lines(doc: TranscriptDocument) -> str:
    """One ``[HH:MM:SS] Speaker: text`` line per segment, joined by newlines.

    The time is the segment's start floored to whole seconds. This is the native API's
    ``text`` field and the ``txt`` format; there is no trailing newline.
    """
    lines = []
    for seg in doc.segments:
        secs = max(0, math.floor(seg.start))
        hours, rest = divmod(secs, 3600)
        minutes, secs = divmod(rest, 60)
        stamp = f"{hours:02d}:{minutes:02d}:{secs:02d}"
        lines.append(f"[{stamp}] {speaker_label(seg)}: {clean_text(seg.text)}".rstrip())
    return "\n".join(lines)


def to_srt(doc: TranscriptDocument) -> str:
    """SubRip: numbered cues from 1, ``Speaker: text``, a blank line between cues."""
    cues = []
    for index, seg in enumerate(doc.segments, start=1):
        start, end = _cue_span(seg)
        text = f"{speaker_label(seg)}: {clean_text(seg.text)}".rstrip()
        cues.append(f"{index}\n{_format_ms(start, ',')} --> {_format_ms(end, ',')}\n{text}\n")
    return "\n".join(cues)


def to_vtt(doc: TranscriptDocument) -> str:
    """WebVTT: a ``WEBVTT`` header, then one ``<v Speaker>text`` cue per segment."""
    cues = ["WEBVTT\n"]
    for seg in doc.segments:
        start, end = _cue_span(seg)
        voice = _vtt_escape(speaker_label(seg))
        text = _vtt_escape(clean_text(seg.text))
        cues.append(f"{_format_ms(start, '.')} --> {_format_ms(end, '.')}\n<v {voice}>{text}\n")
    return "\n".join(cues)


def to_json(doc: TranscriptDocument) -> str:
    """The document as JSON (``document_to_dict``), non-ASCII characters kept as is."""
    return json.dumps(document_to_dict(doc), ensure_ascii=False)


_RENDERERS: dict[str, Callable[[TranscriptDocument], str]] = {
    "txt": to_text_lines,
    "srt": to_srt,
    "vtt": to_vtt,
    "json": to_json,
}


# --- the JSON document ------------------------------------------------------------


def to_recall(doc: TranscriptDocument) -> str:
    """The Recall.ai transcript download shape: one block per speaker turn.

    ``[{participant: {id, name, is_host, platform, extra_data}, words: [{text,
    start_timestamp: {relative, absolute}, end_timestamp: {…}}]}]``; ``absolute`` is
    ISO 8601 from the recording's start when known, else null.
    """
    by_name = {p.name: p for p in doc.participants}

    def stamp(t: float) -> dict[str, Any]:
        absolute = None
        if doc.started_at is not None:
            try:
                absolute = (doc.started_at + timedelta(seconds=t)).isoformat()
            except OverflowError:  # a start time at the calendar's edge (stored long ago)
                absolute = None
        return {"relative": round(t, 3), "absolute": absolute}

    blocks: list[dict[str, Any]] = []
    for seg in doc.segments:
        name = speaker_label(seg)
        p = by_name.get(name)
        participant = {
            "id": p.id if p else name,
            "name": name,
            "is_host": p.is_host if p else False,
            "platform": p.platform if p else None,
            "extra_data": dict(p.extra_data) if p else {},
        }
        words = [
            {"text": w.text, "start_timestamp": stamp(w.start), "end_timestamp": stamp(w.end)}
            for w in (seg.words or (Word(seg.start, seg.end, seg.text, 1.0),))
        ]
        if blocks and blocks[-1]["participant"]["name"] == name:
            blocks[-1]["words"].extend(words)
        else:
            blocks.append({"participant": participant, "words": words})
    return json.dumps(blocks, ensure_ascii=False)


_RENDERERS["recall"] = to_recall


def _started_at(raw: object) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


def document_to_dict(doc: TranscriptDocument) -> dict[str, Any]:
    """The document as JSON-ready data; times rounded to 3 decimals, probabilities to 4.

    ``speakers`` lists the speaker names in order of first appearance; segment ids are
    their positions. ``document_from_dict`` is the inverse.
    """
    return {
        "transcriptionId": doc.transcription_id,
        "recordingId": doc.recording_id,
        "language": doc.language,
        "duration": round(doc.duration, 3),
        "startedAt": doc.started_at.isoformat() if doc.started_at else None,
        "speakers": list(doc.speakers),
        "participants": [
            {
                "id": p.id,
                "name": p.name,
                "is_host": p.is_host,
                "platform": p.platform,
                "extra_data": dict(p.extra_data),
            }
            for p in doc.participants
        ],
        "segments": [
            {
                "id": i,
                "start": round(seg.start, 3),
                "end": round(seg.end, 3),
                "speaker": seg.speaker,
                "text": seg.text,
                "words": [
                    {
                        "start": round(w.start, 3),
                        "end": round(w.end, 3),
                        "text": w.text,
                        "probability": round(w.probability, 4),
                    }
                    for w in seg.words
                ],
            }
            for i, seg in enumerate(doc.segments)
        ],
    }


def document_from_dict(data: Mapping[str, Any]) -> TranscriptDocument:
    """Load a document from ``document_to_dict`` data (``speakers`` and ids are derived).

    Raises ``InvalidInput`` (field ``document``) naming the first malformed entry.
    """
    return TranscriptDocument(
        transcription_id=_get(data, "transcriptionId", str, "document"),
        recording_id=_get(data, "recordingId", str, "document"),
        language=_get(data, "language", str, "document"),
        duration=_number(data, "duration", "document"),
        started_at=_started_at(data.get("startedAt")),
        segments=tuple(
            _segment(item, f"segments[{i}]")
            for i, item in enumerate(_list(data, "segments", "document"))
        ),
        participants=tuple(
            _participant(item, f"participants[{i}]")
            for i, item in enumerate(_list(data, "participants", "document", required=False))
        ),
    )


def _segment(item: object, where: str) -> Segment:
    entry = _mapping(item, where)
    speaker = entry.get("speaker")
    if speaker is not None and not isinstance(speaker, str):
        raise _malformed(f"{where}.speaker", "must be a string or null")
    return Segment(
        start=_number(entry, "start", where),
        end=_number(entry, "end", where),
        text=_get(entry, "text", str, where),
        words=tuple(
            _word(w, f"{where}.words[{j}]")
            for j, w in enumerate(_list(entry, "words", where, required=False))
        ),
        speaker=speaker,
    )


def _word(item: object, where: str) -> Word:
    entry = _mapping(item, where)
    return Word(
        start=_number(entry, "start", where),
        end=_number(entry, "end", where),
        text=_get(entry, "text", str, where),
        probability=_number(entry, "probability", where),
    )


def _participant(item: object, where: str) -> Participant:
    entry = _mapping(item, where)
    platform = entry.get("platform")
    if platform is not None and not isinstance(platform, str):
        raise _malformed(f"{where}.platform", "must be a string or null")
    extra = entry.get("extra_data") or {}
    return Participant(
        id=_get(entry, "id", str, where),
        name=_get(entry, "name", str, where),
        is_host=bool(entry.get("is_host", False)),
        platform=platform,
        extra_data=dict(_mapping(extra, f"{where}.extra_data")),
    )


def _malformed(where: str, problem: str) -> InvalidInput:
    return InvalidInput(f"malformed transcript document: {where} {problem}", field="document")


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _malformed(where, "must be an object")
    return value


def _get(entry: Mapping[str, Any], key: str, kind: type[_T], where: str) -> _T:
    value = entry.get(key)
    if not isinstance(value, kind):
        raise _malformed(f"{where}.{key}", f"must be a {kind.__name__}")
    return value


def _number(entry: Mapping[str, Any], key: str, where: str) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _malformed(f"{where}.{key}", "must be a number")
    return float(value)


def _list(
    entry: Mapping[str, Any], key: str, where: str, *, required: bool = True
) -> Sequence[Any]:
    value = entry.get(key)
    if value is None and not required:
        return ()
    if not isinstance(value, list | tuple):
        raise _malformed(f"{where}.{key}", "must be a list")
    return value
