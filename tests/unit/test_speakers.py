"""Speaker attribution rules."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from postcall.domain import Segment, Word
from postcall.speakers.attribution import Turn, attribute, merge_streams, name_speakers


def seg(*words: tuple[float, float, str]) -> Segment:
    ws = tuple(Word(a, b, t, 0.9) for a, b, t in words)
    return Segment(ws[0].start, ws[-1].end, " ".join(w.text for w in ws), ws)


def test_merge_streams_interleaves_by_time() -> None:
    merged = merge_streams(
        {"alice": [seg((0, 1, "hi")), seg((5, 6, "bye"))], "bob": [seg((2, 3, "hello"))]}
    )
    assert [(s.speaker, s.text) for s in merged] == [
        ("alice", "hi"),
        ("bob", "hello"),
        ("alice", "bye"),
    ]


def test_words_follow_the_overlapping_turn_and_segments_split() -> None:
    s = seg((0.0, 0.4, "can"), (0.5, 0.9, "you"), (1.0, 1.3, "hear"), (2.1, 2.4, "yes"))
    out = attribute([s], [Turn(0, 1.5, "a"), Turn(2.0, 3.0, "b")])
    assert [(x.speaker, x.text) for x in out] == [("a", "can you hear"), ("b", "yes")]
    assert out[0].start == 0.0 and out[0].end == 1.3 and out[1].start == 2.1


def test_most_overlap_wins_in_overlapping_turns() -> None:
    out = attribute([seg((1.0, 2.0, "word"))], [Turn(0, 1.2, "a"), Turn(1.1, 3, "b")])
    assert out[0].speaker == "b"


def test_gaps_take_the_nearest_turn_then_the_previous_word() -> None:
    s = seg((0.2, 0.5, "one"), (3.2, 3.5, "two"), (10.0, 10.2, "three"))
    out = attribute([s], [Turn(0, 0.6, "a"), Turn(3.8, 4.5, "b")])
    # 'two' is 0.3 s before b's turn; 'three' is far from any turn: previous speaker.
    assert [(x.speaker, x.text) for x in out] == [("a", "one"), ("b", "two three")]


def test_no_turns_falls_back() -> None:
    out = attribute([seg((0, 1, "x"))], [], fallback="Speaker 1")
    assert out[0].speaker == "Speaker 1"


def test_unsplit_segment_keeps_its_text() -> None:
    s = Segment(0, 1, "Hello, world.", (Word(0, 0.5, "Hello,", 1), Word(0.5, 1, "world.", 1)))
    assert attribute([s], [Turn(0, 2, "a")])[0].text == "Hello, world."


def test_names_and_anonymous_speakers_in_order_of_appearance() -> None:
    segs = [seg((0, 1, "a")), seg((1, 2, "b")), seg((2, 3, "c")), seg((3, 4, "d"))]
    keyed = [
        Segment(s.start, s.end, s.text, s.words, k)
        for s, k in zip(segs, ["x", "u1", "y", "x"], strict=True)
    ]
    named = name_speakers(keyed, {"u1": "Alice"})
    assert [s.speaker for s in named] == ["Speaker 1", "Alice", "Speaker 2", "Speaker 1"]


@given(
    st.lists(st.tuples(st.floats(0, 100), st.floats(0.05, 2)), min_size=1, max_size=30),
    st.lists(st.tuples(st.floats(0, 100), st.floats(0.1, 10), st.sampled_from("abc")), max_size=10),
)
def test_attribution_keeps_every_word_once_in_order(
    words: list[tuple[float, float]], turns: list[tuple[float, float, str]]
) -> None:
    ws = sorted((a, a + d) for a, d in words)
    s = Segment(
        ws[0][0], ws[-1][1], "x", tuple(Word(a, b, f"w{i}", 1) for i, (a, b) in enumerate(ws))
    )
    out = attribute([s], [Turn(a, a + d, k) for a, d, k in turns])
    flat = [w for x in out for w in x.words]
    assert flat == list(s.words)
    assert all(x.speaker for x in out)
    for x in out:
        assert x.start == x.words[0].start and x.end == x.words[-1].end
