"""The transcript checked against the audio, not trusted.

A decoder that reads several utterances in one window may skip one of them, or put a
word seconds away from where it was said. Given the speech regions that were decoded
(sample ranges of the audio) and the words that came back (seconds):

* ``place`` gives every word to one region, the one its middle falls in, else the
  nearest one, and keeps its times inside that region: a
  word is never placed in a pause or in another utterance;
* ``deficient`` names the regions that came back with no words, or with far fewer
  than their length implies (``min_words_per_s``): those are decoded again on their
  own (``better`` keeps whichever reading holds more words);
* ``segments`` turns the words of each region into sentence-sized segments.

Pure functions: no model, no I/O.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import replace

from postcall.domain import Segment, Word
from postcall.engines.windows import split_segment

RATE = 16000
Region = tuple[int, int]

# A region this long (s) is expected to hold words; shorter ones may be a cough.
MIN_CHECKED_S = 1.0
# Speech runs at 2-3 words a second; under this many per second of region, words were lost.
MIN_WORDS_PER_S = 0.8


def place(words: Sequence[Word], regions: Sequence[Region], rate: int = RATE) -> list[list[Word]]:
    """The words of each region (in order), every word moved inside its region."""
    starts = [a / rate for a, _ in regions]
    placed: list[list[Word]] = [[] for _ in regions]
    if not regions:
        return placed
    for word in sorted(words, key=lambda w: (w.start, w.end)):
        mid = (word.start + word.end) / 2
        i = max(0, bisect_right(starts, mid) - 1)
        # In the pause after region i, a word belongs to the nearer neighbour.
        after = i + 1 < len(regions) and mid >= regions[i][1] / rate
        if after and regions[i + 1][0] / rate - mid < mid - regions[i][1] / rate:
            i += 1
        lo, hi = regions[i][0] / rate, regions[i][1] / rate
        start = round(min(max(word.start, lo), hi), 3)
        end = round(min(max(word.end, start), hi), 3)
        placed[i].append(replace(word, start=start, end=end))
    return placed


def deficient(
    regions: Sequence[Region],
    words: Sequence[Sequence[Word]],
    *,
    min_s: float = MIN_CHECKED_S,
    min_words_per_s: float = MIN_WORDS_PER_S,
    rate: int = RATE,
) -> list[int]:
    """Indices of the regions of at least ``min_s`` whose words are fewer than
    ``min_words_per_s`` per second of the region."""
    out = []
    for i, ((a, b), got) in enumerate(zip(regions, words, strict=True)):
        seconds = (b - a) / rate
        if seconds >= min_s and len(got) < min_words_per_s * seconds:
            out.append(i)
    return out


def better(first: Sequence[Word], second: Sequence[Word]) -> list[Word]:
    """The reading of a region that holds more words (the first on a tie)."""
    return list(second) if len(second) > len(first) else list(first)


def segments(words_by_region: Sequence[Sequence[Word]]) -> list[Segment]:
    """Sentence-sized segments, none spanning two regions."""
    out: list[Segment] = []
    for words in words_by_region:
        if not words:
            continue
        text = " ".join(w.text for w in words).strip()
        whole = Segment(start=words[0].start, end=words[-1].end, text=text, words=tuple(words))
        out.extend(split_segment(whole))
    return out
