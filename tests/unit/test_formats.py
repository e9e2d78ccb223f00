"""Tests for postcall.formats: SRT and VTT checked by independent parsers."""

from __future__ import annotations

import html
import json
import math
import re
from datetime import timedelta
from typing import Any

import pytest
import srt
import webvtt
from hypothesis import given, settings
from hypothesis import strategies as st

from postcall.domain import Participant, Segment, TranscriptDocument, Word
from postcall.errors import InvalidInput
from postcall.formats import (
    FORMATS,
    document_from_dict,
    document_to_dict,
    format_timestamp,
    render,
    to_json,
    to_srt,
    to_text_lines,
    to_vtt,
)

MAX_TIME = 30 * 3600.0


def make_doc(*segments: Segment, participants: tuple[Participant, ...] = ()) -> TranscriptDocument:
    return TranscriptDocument(
        transcription_id="tr_1",
        recording_id="rec_1",
        language="en",
        duration=max((s.end for s in segments), default=0.0),
        segments=segments,
        participants=participants,
    )


MEETING = make_doc(
    Segment(1.2, 4.0, "Can everyone hear me?", speaker="Alice"),
    Segment(5.0, 7.5, "Yes, loud and clear.", speaker="Bob"),
)


# --- independent expectations -------------------------------------------------------


def expected_ms(seconds: float) -> int:
    return max(0, math.floor(seconds * 1000 + 0.5))


def expected_span(seg: Segment) -> tuple[int, int]:
    start = expected_ms(seg.start)
    return start, max(expected_ms(seg.end), start + 1)


def one_line(text: str) -> str:
    return " ".join(text.split())


def expected_label(seg: Segment) -> str:
    return one_line(seg.speaker or "") or "Speaker 1"


def as_ms(value: timedelta) -> int:
    return round(value.total_seconds() * 1000)


# --- strategies -------------------------------------------------------------------

unicode_text = st.text(st.characters(codec="utf-8"), max_size=40)
tricky = st.sampled_from(["<", ">", "&", "-->", "&amp;", "<b>", "\n", "\n\n", " ", "1\n", "é漢🙂"])
texts = st.lists(st.one_of(unicode_text, tricky), max_size=6).map("".join)
speakers = st.one_of(st.none(), st.sampled_from(["Alice", "Bob", "Dr. <Who>", "A & B"]), texts)


@st.composite
def segments(draw: st.DrawFn) -> Segment:
    start = draw(st.floats(0, MAX_TIME, allow_nan=False))
    end = start + draw(st.floats(-5, 600, allow_nan=False))
    return Segment(start, end, draw(texts), speaker=draw(speakers))


documents = st.lists(segments(), max_size=12).map(lambda segs: make_doc(*segs))


# --- timestamps ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.0, "00:00:00,000"),
        (1.2, "00:00:01,200"),
        (59.9994, "00:00:59,999"),
        (59.9995, "00:01:00,000"),
        (3599.9996, "01:00:00,000"),
        (3725.4, "01:02:05,400"),
        (360000.0, "100:00:00,000"),
        (-3.0, "00:00:00,000"),
    ],
)
def test_format_timestamp(seconds: float, expected: str) -> None:
    assert format_timestamp(seconds) == expected
    assert format_timestamp(seconds, ".") == expected.replace(",", ".")


@given(st.integers(0, 200 * 3600 * 1000))
def test_format_timestamp_fields_in_range(ms: int) -> None:
    hours, minutes, secs, millis = map(int, re.split("[:,]", format_timestamp(ms / 1000)))
    assert minutes < 60 and secs < 60 and millis < 1000
    assert ((hours * 60 + minutes) * 60 + secs) * 1000 + millis == ms


# --- text lines ---------------------------------------------------------------------


def test_text_lines_exact() -> None:
    expected = "[00:00:01] Alice: Can everyone hear me?\n[00:00:05] Bob: Yes, loud and clear."
    assert to_text_lines(MEETING) == expected
    assert render(MEETING, "txt") == expected


def test_text_lines_hours_roll_over_and_keep_counting() -> None:
    doc = make_doc(
        Segment(3725.4, 3726.0, "later", speaker="Alice"),
        Segment(360_001.9, 360_002.0, "much later", speaker="Alice"),
    )
    assert to_text_lines(doc) == "[01:02:05] Alice: later\n[100:00:01] Alice: much later"


def test_text_lines_default_speaker_and_cleaning() -> None:
    doc = make_doc(Segment(0.999, 2.0, "  Hello\nthere\r\n  world  ", speaker=None))
    assert to_text_lines(doc) == "[00:00:00] Speaker 1: Hello there world"


def test_text_lines_empty_document() -> None:
    assert to_text_lines(make_doc()) == ""


# --- SRT ----------------------------------------------------------------------------


def test_srt_exact() -> None:
    assert to_srt(MEETING) == (
        "1\n00:00:01,200 --> 00:00:04,000\nAlice: Can everyone hear me?\n\n"
        "2\n00:00:05,000 --> 00:00:07,500\nBob: Yes, loud and clear.\n"
    )


def test_srt_degenerate_segments_get_positive_duration() -> None:
    doc = make_doc(Segment(2.0, 2.0, "zero"), Segment(5.0, 4.0, "negative"))
    cues = list(srt.parse(to_srt(doc)))
    assert [(as_ms(c.start), as_ms(c.end)) for c in cues] == [(2000, 2001), (5000, 5001)]
    assert cues[0].content == "Speaker 1: zero"


@settings(deadline=None)
@given(documents)
def test_srt_parses_with_srt_package(doc: TranscriptDocument) -> None:
    cues = list(srt.parse(to_srt(doc)))
    assert len(cues) == len(doc.segments)
    for number, (cue, seg) in enumerate(zip(cues, doc.segments, strict=True), start=1):
        assert cue.index == number
        assert (as_ms(cue.start), as_ms(cue.end)) == expected_span(seg)
        assert abs(as_ms(cue.start) / 1000 - seg.start) <= 0.0005 + 1e-6
        assert cue.end > cue.start
        assert cue.content == f"{expected_label(seg)}: {one_line(seg.text)}".rstrip()


# --- VTT ----------------------------------------------------------------------------


def test_vtt_exact_and_escaped() -> None:
    doc = make_doc(Segment(1.0, 2.5, "a <b> & c --> d", speaker="A & <B>"))
    assert to_vtt(doc) == (
        "WEBVTT\n\n00:00:01.000 --> 00:00:02.500\n"
        "<v A &amp; &lt;B&gt;>a &lt;b&gt; &amp; c --&gt; d\n"
    )
    assert webvtt.from_string(to_vtt(make_doc())).captions == []


@settings(deadline=None)
@given(documents)
def test_vtt_parses_with_webvtt_py(doc: TranscriptDocument) -> None:
    captions = webvtt.from_string(to_vtt(doc), strict=True).captions
    assert len(captions) == len(doc.segments)
    for caption, seg in zip(captions, doc.segments, strict=True):
        start, end = expected_span(seg)
        assert caption.start_time.in_milliseconds() == start
        assert caption.end_time.in_milliseconds() == end
        match = re.fullmatch(r"<v ([^<>]+)>([^<>]*)", caption.raw_text)
        assert match is not None, caption.raw_text
        assert caption.voice == match.group(1)
        assert html.unescape(match.group(1)) == expected_label(seg)
        assert html.unescape(match.group(2)) == one_line(seg.text)


# --- JSON ---------------------------------------------------------------------------


def test_document_to_dict_shape() -> None:
    doc = TranscriptDocument(
        transcription_id="tr_1",
        recording_id="rec_1",
        language="en",
        duration=7.50049,
        segments=(
            Segment(1.23456, 4.0, "Hi", (Word(1.23456, 1.5, "Hi", 0.987654),), "Bob"),
            Segment(5.0, 6.0, "Hey", speaker=None),
            Segment(6.0, 7.5, "Yo", speaker="Alice"),
            Segment(7.5, 7.6, "Ok", speaker="Bob"),
        ),
        participants=(Participant("7", "Bob", True, "zoom", {"email": "b@x.org"}),),
    )
    data = document_to_dict(doc)
    assert data["duration"] == 7.5
    assert data["speakers"] == ["Bob", "Alice"]
    assert data["participants"] == [
        {
            "id": "7",
            "name": "Bob",
            "is_host": True,
            "platform": "zoom",
            "extra_data": {"email": "b@x.org"},
        }
    ]
    assert data["segments"][0] == {
        "id": 0,
        "start": 1.235,
        "end": 4.0,
        "speaker": "Bob",
        "text": "Hi",
        "words": [{"start": 1.235, "end": 1.5, "text": "Hi", "probability": 0.9877}],
    }
    assert [s["id"] for s in data["segments"]] == [0, 1, 2, 3]
    assert data["segments"][1]["speaker"] is None
    assert json.loads(render(doc, "json")) == data


def rounded(digits: int, low: float = 0, high: float = MAX_TIME) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False).map(lambda x: round(x, digits))


json_values = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), unicode_text)
words = st.builds(Word, rounded(3), rounded(3), unicode_text, rounded(4, 0, 1))
json_segments = st.builds(
    Segment, rounded(3), rounded(3), texts, st.lists(words, max_size=4).map(tuple), speakers
)
participants = st.builds(
    Participant,
    unicode_text,
    unicode_text,
    st.booleans(),
    st.none() | unicode_text,
    st.dictionaries(unicode_text, json_values, max_size=3),
)
json_documents = st.builds(
    TranscriptDocument,
    unicode_text,
    unicode_text,
    unicode_text,
    rounded(3),
    st.lists(json_segments, max_size=8).map(tuple),
    st.lists(participants, max_size=3).map(tuple),
)


@given(json_documents)
def test_json_round_trip(doc: TranscriptDocument) -> None:
    assert document_from_dict(json.loads(to_json(doc))) == doc


def test_json_keeps_non_ascii() -> None:
    doc = make_doc(Segment(0.0, 1.0, "Grüße 漢字", speaker="Zoë"))
    assert "Grüße 漢字" in to_json(doc)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"segments": None}, "document.segments"),
        ({"duration": "10"}, "document.duration"),
        ({"segments": [{"start": 0, "end": 1}]}, "segments[0].text"),
        ({"segments": [{"start": 0, "end": 1, "text": "x", "speaker": 3}]}, "segments[0].speaker"),
        ({"participants": [{"id": "1"}]}, "participants[0].name"),
    ],
)
def test_document_from_dict_rejects_malformed(change: dict[str, Any], where: str) -> None:
    data = {**document_to_dict(MEETING), **change}
    with pytest.raises(InvalidInput) as info:
        document_from_dict(data)
    assert info.value.field == "document"
    assert where in info.value.message


# --- dispatch -----------------------------------------------------------------------


def test_formats_and_media_types() -> None:
    assert FORMATS == {
        "txt": "text/plain; charset=utf-8",
        "srt": "application/x-subrip",
        "vtt": "text/vtt; charset=utf-8",
        "json": "application/json",
        "recall": "application/json",
    }


def test_recall_download_shape() -> None:
    from datetime import UTC, datetime

    from postcall.domain import Participant

    doc = TranscriptDocument(
        transcription_id="tr_1",
        recording_id="rec_1",
        language="en",
        duration=10.0,
        segments=(
            Segment(
                1.0, 2.0, "Hi all", (Word(1.0, 1.4, "Hi", 0.9), Word(1.5, 2.0, "all", 0.8)), "Alice"
            ),
            Segment(2.5, 3.0, "and", (Word(2.5, 3.0, "and", 0.9),), "Alice"),
            Segment(4.0, 5.0, "Hello", (Word(4.0, 5.0, "Hello", 0.9),), "Speaker 2"),
        ),
        participants=(Participant("u1", "Alice", is_host=True, platform="zoom"),),
        started_at=datetime(2026, 1, 1, 9, 0, tzinfo=UTC),
    )
    blocks = json.loads(render(doc, "recall"))
    assert [b["participant"]["name"] for b in blocks] == ["Alice", "Speaker 2"]
    assert blocks[0]["participant"] == {
        "id": "u1",
        "name": "Alice",
        "is_host": True,
        "platform": "zoom",
        "extra_data": {},
    }
    assert [w["text"] for w in blocks[0]["words"]] == ["Hi", "all", "and"]
    first = blocks[0]["words"][0]
    assert first["start_timestamp"] == {"relative": 1.0, "absolute": "2026-01-01T09:00:01+00:00"}
    assert first["end_timestamp"]["relative"] == 1.4
    undated = json.loads(render(TranscriptDocument("t", "r", "en", 1.0, doc.segments), "recall"))
    assert undated[0]["words"][0]["start_timestamp"]["absolute"] is None


def test_render_dispatches() -> None:
    assert render(MEETING, "srt") == to_srt(MEETING)
    assert render(MEETING, "vtt") == to_vtt(MEETING)
    assert render(MEETING, "json") == to_json(MEETING)
    assert render(MEETING, "SRT") == to_srt(MEETING)


def test_render_unknown_format() -> None:
    with pytest.raises(InvalidInput) as info:
        render(MEETING, "docx")
    assert info.value.field == "format"
    assert "docx" in info.value.message
    for name in FORMATS:
        assert name in info.value.message
