"""The transcript checked against the audio, not trusted.

A decoder that reads several utterances in one window may skip one of them, or put a
word seconds away from where it was said. Given the speech regions that were decoded
(sample ranges of the audio) and the words that came back (seconds):

* ``unrepeated`` drops a run of words the decoder said twice over one stretch of audio
  (a sentence repeated word for word, the copy squeezed into a fraction of its time);
* ``place`` gives every word to one region, the one its middle falls in, else the
  nearest one, and keeps its times inside that region: a word is never placed in a
  pause;
* ``unheard`` finds the stretches of a region that no word accounts for: a whole
  region that came back empty or with far fewer words than its length implies, a
  second or more inside one (an utterance the decoder skipped after its neighbour),
  audio a word was stretched over;
* ``recover`` reads those again (packed a few to a short window first, then alone
  what that still skipped) and puts the new words in (``replaced``);
* ``doubted`` finds the regions whose reading the model itself doubts (the mean
  probability of its words is low) and ``doubted_stretches`` those and the doubted
  runs of words inside other regions, to be read again with more context;
  ``replaced_if_said`` puts that reading in where it holds a spoken word;
* ``segments`` turns the words of each region into sentence-sized segments.

Pure functions: no model, no I/O.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from itertools import groupby

from postcall.domain import Segment, Word
from postcall.engines.windows import split_segment

log = logging.getLogger(__name__)

RATE = 16000
Region = tuple[int, int]

# A stretch of speech this long (s) with no word in it was dropped by the decoder; a
# shorter one may be a cough or a breath.
MIN_UNHEARD_S = 1.0
# A word longer than this (s) was stretched by the alignment over audio the decoder
# skipped: it accounts for none of it.
MAX_WORD_S = 1.0
# ... and so was a short word that lasts longer than this and this much a letter (s).
WORD_BASE_S = 0.3
S_PER_LETTER = 0.1
# Readings of unheard speech: packed first, then alone for what a reading skipped.
REREAD_ROUNDS = 3
# A word found again this close (s) to the same word already read is that word again.
TOUCH_S = 0.05
# Speech runs at 2-3 words a second: a word accounts for the audio this close to it (s).
WORD_REACH_S = 0.4
# A region this long (s) that came back with fewer than one word per ``SPARSE_S_PER_WORD``
# seconds holds far fewer words than its length implies (a word or two, often one of
# its neighbour's put there by the alignment): the whole region is read again.
SPARSE_MIN_S = 2.0
SPARSE_S_PER_WORD = 2.0
# A region whose words have a mean probability under this was read in doubt.
DOUBTED_MEAN_P = 0.5
# ... and so was a run of this many seconds or more of a region's words that are each
# doubtful (a spoken word under ``DOUBTED_MEAN_P``, or a mark such as "..." that the
# model puts over what it cannot read), holding at least one spoken word. A region
# doubted whole is read again only when it lasts this long too: what the step is for is
# drawn-out speech that a short context misreads. On the seven development meetings 19
# of the 38 stretches read in doubt were regions shorter than this, 11 of them one
# unsure word, and 13 of their 19 readings again lost to the first; each cost a reading
# in Whisper's whole 30 s. Without them: the same mean WER (16.84 %) and turns with no
# word matched (8), in 108 s of CPU time on one thread against 115 s.
DOUBTED_RUN_S = 2.0
# A decoder that loops repeats a run of words; a copy of at least this many words that
# the alignment fits into at most ``REPEAT_SHARE`` of the time of the run before it
# was not said again (a speaker who repeats himself takes about as long).
MIN_REPEAT_WORDS = 3
REPEAT_SHARE = 0.5


def unrepeated(words: Sequence[Word]) -> list[Word]:
    """``words`` (in order) without the runs of ``MIN_REPEAT_WORDS`` or more that repeat
    the run just before them word for word in less than ``REPEAT_SHARE`` of its time."""
    out = list(words)
    keys = [_key(w) for w in out]
    i = 0
    while i < len(out):
        for n in range(MIN_REPEAT_WORDS, (len(out) - i) // 2 + 1):
            if keys[i + n] != keys[i] or keys[i : i + n] != keys[i + n : i + 2 * n]:
                continue
            first, again = out[i : i + n], out[i + n : i + 2 * n]
            if again[-1].end - again[0].start <= REPEAT_SHARE * (first[-1].end - first[0].start):
                del out[i + n : i + 2 * n], keys[i + n : i + 2 * n]
                break
        else:
            i += 1
    return out


def _key(word: Word) -> str:
    return "".join(c for c in word.text.lower() if c.isalnum() or c == "'")


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


def unheard(
    regions: Sequence[Region],
    words: Sequence[Sequence[Word]],
    *,
    min_s: float = MIN_UNHEARD_S,
    reach_s: float = WORD_REACH_S,
    rate: int = RATE,
    read_alone: Collection[Region] = (),
) -> list[tuple[int, Region]]:
    """The stretches of speech no word accounts for: (region index, sample range) for
    every stretch of at least ``min_s`` inside a region that lies more than ``reach_s``
    from every word of it (a word counts for at most ``reach_s`` around its edges and
    twice that around its middle, and a ``stretched`` word for nothing, so that words
    the alignment stretched over a long region, or a neighbour's short words put over a
    skipped turn, do not hide what was dropped). A region with no words at all is one
    such stretch, and so is a region of ``SPARSE_MIN_S`` or more with far fewer words
    than its length implies, unless it was already ``read_alone`` whole: then the
    stretches inside it that its words do not reach are what is left (a second turn in
    the same region that its reading skipped)."""
    out: list[tuple[int, Region]] = []
    least = round(min_s * rate)
    for i, ((a, b), got) in enumerate(zip(regions, words, strict=True)):
        kept = [w for w in got if not stretched(w)]
        seconds = (b - a) / rate
        sparse = bool(kept) and seconds >= SPARSE_MIN_S and len(kept) < seconds / SPARSE_S_PER_WORD
        if sparse and (a, b) not in read_alone:
            out.append((i, (a, b)))
            continue
        # (covered from, covered to, the word's own start, the word's own end), samples
        covered = []
        for w in kept:
            mid = (w.start + w.end) / 2
            lo = max(w.start - reach_s, mid - 2 * reach_s)
            hi = min(w.end + reach_s, mid + 2 * reach_s)
            edges = (round(lo * rate), round(hi * rate), round(w.start * rate), round(w.end * rate))
            covered.append(edges)
        at, said_to = a, a
        for lo, hi, start, end in [*sorted(covered), (b, b, b, b)]:
            if min(lo, b) - at >= least:
                # The stretch read again runs from the word before to the word after,
                # so that no word at its edges is cut.
                # (A word stretched past its reach does not shorten the stretch.)
                out.append((i, (max(a, min(said_to, at)), min(max(start, lo), b))))
            if hi > at:
                at, said_to = hi, max(said_to, end)
    return out


def stretched(word: Word) -> bool:
    """Whether the alignment stretched ``word`` over audio the decoder skipped: it lasts
    longer than ``MAX_WORD_S``, or than ``WORD_BASE_S`` and ``S_PER_LETTER`` a letter."""
    letters = sum(c.isalnum() for c in word.text)
    return word.end - word.start > min(MAX_WORD_S, WORD_BASE_S + S_PER_LETTER * letters)


def merged(first: Sequence[Word], found: Sequence[Word]) -> list[Word]:
    """A region's words with those found again in its unheard stretches, in order. A
    word found again that repeats a word of ``first`` it touches is dropped: a stretch
    read again from the end of the word before it may hear that word once more (its
    copy squeezed against the stretch's edge)."""
    kept = [w for w in found if not any(_touching_copy(w, o) for o in first)]
    return sorted([*first, *kept], key=lambda w: (w.start, w.end))


def _touching_copy(word: Word, other: Word) -> bool:
    return (
        _key(word) == _key(other)
        and word.start <= other.end + TOUCH_S
        and other.start <= word.end + TOUCH_S
    )


def recover(
    regions: Sequence[Region],
    placed: Sequence[Sequence[Word]],
    read_again: Callable[[list[Region], bool], Sequence[Word]],
    *,
    rounds: int = REREAD_ROUNDS,
    rate: int = RATE,
) -> list[list[Word]]:
    """``placed`` (the words of each region) completed: the stretches no word accounts
    for are read again by ``read_again(spans, packed)`` (the words of the spans, on the
    same timeline; ``packed`` in the first round, where several stretches may share a
    decoding window, each on its own after that) and each new reading ``replaced`` what
    its stretch held; what a reading still leaves unheard (an utterance it skipped in
    turn) is read again, ``rounds`` times at most. A stretch read alone that comes back
    unheard whole would read the same again: what follows the last word of that
    reading is read instead (the decoder read the tail of one speaker's sentence at the
    stretch's start, and stopped before the next speaker's turn). On the ten
    development meetings this heard one more turn (a whispered one, WER of that meeting
    18.33 % against 19.01 %) and changed nothing else."""
    starts = [a for a, _ in regions]
    out = [list(words) for words in placed]

    def owner(span: Region) -> int:
        return bisect_right(starts, span[0]) - 1

    spans = list(regions)
    read_alone: set[Region] = set()
    readings: dict[Region, Sequence[Word]] = {}  # what each stretch read alone gave
    for n in range(rounds):
        missing = unheard(spans, [out[owner(s)] for s in spans], rate=rate, read_alone=read_alone)
        # A stretch already read alone would read the same again: what follows the
        # last word that reading gave is read instead.
        spans = []
        for _, stretch in missing:
            span = (
                _after_reading(stretch, readings.get(stretch, ()), rate)
                if stretch in read_alone
                else stretch
            )
            if span is not None and span not in read_alone:
                spans.append(span)
        if not spans:
            break
        if n > 0:
            read_alone.update(spans)
        found = place(read_again(spans, n == 0), spans, rate)
        for span, again in zip(spans, found, strict=True):
            out[owner(span)] = replaced(out[owner(span)], span, again, rate)
            if n > 0:
                readings[span] = again
        log.debug("read %d unheard stretches of speech again", len(spans))
    return out


def _after_reading(span: Region, words: Sequence[Word], rate: int = RATE) -> Region | None:
    """What of ``span`` follows the last of ``words`` read in it, when that lasts
    ``MIN_UNHEARD_S`` or more."""
    if not words:
        return None
    start = max(span[0], round(max(w.end for w in words) * rate))
    return (start, span[1]) if span[1] - start >= round(MIN_UNHEARD_S * rate) else None


def replaced(
    words: Sequence[Word], span: Region, again: Sequence[Word], rate: int = RATE
) -> list[Word]:
    """A region's ``words`` with those whose middle lies in ``span`` replaced by the
    stretch's new reading, unless that holds fewer words (a stretched word of the first
    reading, that did not account for the stretch, gives way to what was said there)."""
    inside, outside = _parted(words, span, rate)
    if len(again) < len(inside):
        return list(words)
    return merged(outside, again)


def replaced_if_said(
    words: Sequence[Word], span: Region, again: Sequence[Word], rate: int = RATE
) -> list[Word]:
    """A region's ``words`` with those whose middle lies in ``span`` replaced by the
    stretch's new reading (its looped runs dropped: ``unrepeated``) where that holds a
    ``spoken`` word. The stretch was read in doubt, so the model's confidence in that
    reading is no reason to keep it: the reading again, with more context, is how the
    stretch would be read on its own. Keeping whichever of the two readings had the
    higher mean probability left more turns with no word matched on the development
    meetings (13 against 10 over ten of them, mean WER a little higher): the
    probabilities of two readings of hard speech are both low and differ by chance."""
    if not any(map(spoken, again)):
        return list(words)
    _, outside = _parted(words, span, rate)
    return merged(outside, unrepeated(again))


def _parted(words: Sequence[Word], span: Region, rate: int) -> tuple[list[Word], list[Word]]:
    """``words`` whose middle lies in ``span``, and the others."""
    lo, hi = span[0] / rate, span[1] / rate
    inside: list[Word] = []
    outside: list[Word] = []
    for word in words:
        (inside if lo <= (word.start + word.end) / 2 < hi else outside).append(word)
    return inside, outside


def spoken(word: Word) -> bool:
    """Whether ``word`` holds a letter or digit (not a lone "..." or "-")."""
    return any(c.isalnum() for c in word.text)


def confidence(words: Sequence[Word]) -> float | None:
    """The mean probability of the ``spoken`` words; None when there are none."""
    said = [w.probability for w in words if spoken(w)]
    return sum(said) / len(said) if said else None


def doubted(words_by_region: Sequence[Sequence[Word]], least: float = DOUBTED_MEAN_P) -> list[int]:
    """The regions whose words' mean probability is under ``least``."""
    return [
        i
        for i, words in enumerate(words_by_region)
        if (p := confidence(words)) is not None and p < least
    ]


def doubted_stretches(
    regions: Sequence[Region],
    words_by_region: Sequence[Sequence[Word]],
    *,
    least: float = DOUBTED_MEAN_P,
    min_run_s: float = DOUBTED_RUN_S,
    rate: int = RATE,
) -> list[tuple[int, Region]]:
    """What to read again in doubt, as (region index, span): each ``doubted`` region of
    ``min_run_s`` or more whole, and in the other regions each run of doubtful words
    (spoken under ``least`` or marks) that lasts ``min_run_s`` or more and holds a
    spoken word, from the end of the word before it to the start of the word after it
    (the region's edges at its ends). A drawn-out utterance read as a few unsure words
    among "..." marks, beside a neighbour's words read well, lowers its region's mean too
    little to be caught whole.
    """
    whole = set(doubted(words_by_region, least))
    out: list[tuple[int, Region]] = []
    for i, ((a, b), words) in enumerate(zip(regions, words_by_region, strict=True)):
        if i in whole and b - a >= min_run_s * rate:
            out.append((i, (a, b)))
            continue
        j = 0
        for unsure, group in groupby(words, key=lambda w: not spoken(w) or w.probability < least):
            run = list(group)
            k = j + len(run)
            if unsure and run[-1].end - run[0].start >= min_run_s and any(map(spoken, run)):
                lo = min(round(words[j - 1].end * rate) if j else a, round(run[0].start * rate))
                hi = max(
                    round(words[k].start * rate) if k < len(words) else b, round(run[-1].end * rate)
                )
                out.append((i, (max(a, lo), min(b, hi))))
            j = k
    return out


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
