"""Decoding windows for batched inference: packing, splicing, the way back, resegmenting."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postcall.domain import Segment, Word
from postcall.engines.windows import plan_windows, quietest_point, splice, split_segment

RATE = 16000


def tone(seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_regions_are_packed_and_cut_only_in_pauses() -> None:
    audio = np.zeros(100 * RATE, dtype=np.float32)
    # Ten 5 s regions with 3 s pauses: spliced pauses are 0.3 s, so five fit in 30 s.
    speech = [(int(i * 8 * RATE), int((i * 8 + 5) * RATE)) for i in range(10)]
    windows = plan_windows(speech, audio, max_s=30.0, max_gap_s=0.3)
    assert [len(w) for w in windows] == [5, 5]
    assert [r for w in windows for r in w] == speech  # every region, once, in order


def test_a_region_longer_than_a_window_is_cut_at_its_quietest_moment() -> None:
    # 50 s of "speech" with one quiet 0.2 s dip at 22 s: the cut must land in the dip.
    audio = tone(50.0)
    dip = slice(int(22.0 * RATE), int(22.2 * RATE))
    audio[dip] = 0.001
    windows = plan_windows([(0, audio.size)], audio, max_s=30.0)
    assert len(windows) == 2
    cut = windows[0][-1][1]
    assert 22.0 * RATE <= cut <= 22.2 * RATE
    assert windows[1][0] == (cut, audio.size)


def test_quietest_point_finds_the_silent_stretch() -> None:
    audio = tone(10.0)
    audio[int(7.5 * RATE) : int(7.6 * RATE)] = 0.0
    point = quietest_point(audio, 5 * RATE, 10 * RATE)
    assert 7.5 * RATE <= point <= 7.6 * RATE


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.05, 35.0), st.floats(0.0, 6.0)), min_size=1, max_size=8),
    st.floats(0.0, 1.0),
)
def test_splice_maps_every_kept_sample_back_to_its_origin(
    layout: list[tuple[float, float]], max_gap: float
) -> None:
    # Regions of random length separated by random pauses; the audio is a ramp, so a
    # sample's value tells where it came from.
    speech, position = [], 0
    for length, pause in layout:
        position += int(pause * RATE)
        speech.append((position, position + int(length * RATE) + 1))
        position = speech[-1][1]
    audio = np.arange(position, dtype=np.float32)
    windows = plan_windows(speech, audio, max_s=30.0, max_gap_s=max_gap)
    spliced = splice(audio, windows, max_gap_s=max_gap)
    assert all(end - start <= 30.0 + 1e-6 for start, end in spliced.clips)
    # Every region sample is in the spliced audio, and maps back to its own position.
    # The ramp stays increasing once spliced, so membership is a binary search.
    ends = np.array([p for s, e in speech for p in (s, e - 1)], dtype=np.float32)
    found = np.searchsorted(spliced.audio, ends)
    assert (spliced.audio[np.minimum(found, spliced.audio.size - 1)] == ends).all()
    for i in range(0, spliced.audio.size, 997):
        origin = spliced.to_original(i / RATE)
        assert origin * RATE == pytest.approx(float(spliced.audio[i]), abs=1.0)


def test_split_segment_cuts_at_sentences_pauses_and_length() -> None:
    words = [
        Word(0.0, 0.5, "Hello", 0.9),
        Word(0.6, 1.2, "everyone.", 0.9),
        Word(1.3, 1.8, "Can", 0.9),
        Word(1.9, 2.2, "you", 0.9),
        Word(2.3, 2.8, "hear", 0.9),
        Word(4.0, 4.5, "me?", 0.9),  # after a 1.2 s pause
    ]
    whole = Segment(0.0, 30.0, "Hello everyone. Can you hear me?", tuple(words))
    parts = split_segment(whole, pause_s=0.8)
    assert [p.text for p in parts] == ["Hello everyone.", "Can you hear", "me?"]
    assert [(p.start, p.end) for p in parts] == [(0.0, 1.2), (1.3, 2.8), (4.0, 4.5)]
    long_run = tuple(Word(i * 0.5, i * 0.5 + 0.4, f"w{i}", 0.9) for i in range(60))
    pieces = split_segment(Segment(0.0, 30.0, "", long_run), max_s=12.0)
    assert all(p.end - p.start <= 12.0 for p in pieces)
    assert [w for p in pieces for w in p.words] == list(long_run)


def test_a_segment_without_words_is_kept_whole() -> None:
    segment = Segment(1.0, 3.0, "text", ())
    assert split_segment(segment) == [segment]
