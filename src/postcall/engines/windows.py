"""Decoding windows for batched inference: speech regions packed into Whisper's 30 s.

Whisper decodes 30-second windows. Batched decoding runs several windows at once, so
the windows must be known up front; cutting a continuous stretch of speech at fixed
30 s marks drops the words that straddle each cut. ``plan_windows`` packs the speech
regions that a voice-activity detector found into windows of at most ``max_s``,
cutting only in the gaps between regions; a region longer than a window (someone
talking for a minute without a pause the detector would call silence) is cut at its
quietest moment in the second half of the window, which is almost always a gap
between two words.

Inside a window the pauses between regions are shortened to ``max_gap_s`` (the audio
is *spliced*): Whisper decoding without timestamps tends to stop at a long pause and
drop what follows it. ``Spliced.to_original`` maps the model's times back onto the
audio that was passed in. Pure functions over sample arrays: no model, no I/O.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

import numpy as np
import numpy.typing as npt

from postcall.domain import Segment, Word

RATE = 16000
# Loudness is compared over 20 ms frames when a long region must be cut.
_FRAME = 320


Region = tuple[int, int]


def plan_windows(
    speech: Sequence[Region],
    audio: npt.NDArray[np.float32],
    *,
    max_s: float = 30.0,
    max_gap_s: float = 0.3,
    rate: int = RATE,
) -> list[list[Region]]:
    """Pack speech regions (sample ranges) into windows of at most ``max_s`` once spliced.

    Each window is the list of regions it holds, in order. A window's spliced length is
    the sum of its regions plus each pause between them capped at ``max_gap_s``.
    Every sample of every region lands in exactly one window.
    """
    limit = int(max_s * rate)
    gap_cap = int(max_gap_s * rate)
    windows: list[list[Region]] = []
    length = 0
    for raw_start, raw_end in normalised(speech, audio.size):
        for start, end in _split_long(raw_start, raw_end, audio, limit):
            if windows and windows[-1]:
                grown = length + min(start - windows[-1][-1][1], gap_cap) + (end - start)
                if grown <= limit:
                    windows[-1].append((start, end))
                    length = grown
                    continue
            windows.append([(start, end)])
            length = end - start
    return windows


@dataclass(frozen=True)
class Spliced:
    """Windows laid end to end with their pauses shortened, and the way back."""

    audio: npt.NDArray[np.float32]
    clips: list[tuple[float, float]]  # each window's (start, end) in the spliced audio, s
    # Parallel arrays: a stretch starting at spliced sample ``spliced[i]`` comes from
    # original sample ``original[i]`` and lasts ``lengths[i]`` samples.
    spliced: list[int]
    original: list[int]
    lengths: list[int]
    rate: int = RATE

    def to_original(self, t: float) -> float:
        """The original time (s) of spliced time ``t`` (s); a time inside a shortened
        pause maps into the kept part of that pause."""
        sample = t * self.rate
        i = max(0, bisect_right(self.spliced, sample) - 1)
        if not self.spliced:
            return t
        into = min(max(sample - self.spliced[i], 0.0), float(self.lengths[i]))
        return (self.original[i] + into) / self.rate


def splice(
    audio: npt.NDArray[np.float32],
    windows: Sequence[Sequence[Region]],
    *,
    max_gap_s: float = 0.3,
    rate: int = RATE,
) -> Spliced:
    """Lay ``windows`` end to end, keeping at most ``max_gap_s`` of each inner pause."""
    gap_cap = int(max_gap_s * rate)
    parts: list[npt.NDArray[np.float32]] = []
    clips: list[tuple[float, float]] = []
    spliced: list[int] = []
    original: list[int] = []
    lengths: list[int] = []
    position = 0
    for window in windows:
        window_start = position
        previous_end: int | None = None
        for start, end in window:
            if previous_end is not None:
                kept = min(start - previous_end, gap_cap)
                # The kept pause is the start of the real one; what follows jumps.
                spliced.append(position)
                original.append(previous_end)
                lengths.append(kept)
                parts.append(audio[previous_end : previous_end + kept])
                position += kept
            spliced.append(position)
            original.append(start)
            lengths.append(end - start)
            parts.append(audio[start:end])
            position += end - start
            previous_end = end
        clips.append((window_start / rate, position / rate))
    samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return Spliced(samples.astype(np.float32, copy=False), clips, spliced, original, lengths, rate)


def split_segment(segment: Segment, *, max_s: float = 12.0, pause_s: float = 0.8) -> list[Segment]:
    """Cut a long segment (a whole decoding window) into sentence-sized segments by its
    words: after a sentence end, at a pause of ``pause_s`` or more, and before the
    segment would exceed ``max_s``. A segment without words is returned as it is."""
    words = segment.words
    if not words:
        return [segment]
    groups: list[list[Word]] = [[words[0]]]
    for previous, word in pairwise(words):
        current = groups[-1]
        sentence_end = previous.text.rstrip("\"')]").endswith((".", "?", "!"))
        paused = word.start - previous.end >= pause_s
        too_long = word.end - current[0].start > max_s
        if (sentence_end and previous.end - current[0].start >= 1.0) or paused or too_long:
            groups.append([word])
        else:
            current.append(word)
    if len(groups) == 1:
        return [segment]
    return [
        replace(
            segment,
            start=group[0].start,
            end=group[-1].end,
            text=" ".join(w.text for w in group).strip(),
            words=tuple(group),
        )
        for group in groups
    ]


def normalised(speech: Sequence[Region], size: int) -> list[Region]:
    """Regions clipped to the audio, sorted, with overlapping ones (padding) joined."""
    merged: list[Region] = []
    for start, end in sorted((max(0, s), min(size, e)) for s, e in speech):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _split_long(start: int, end: int, audio: npt.NDArray[np.float32], limit: int) -> list[Region]:
    """Cut one region into pieces of at most ``limit`` samples at its quietest frames."""
    pieces: list[Region] = []
    while end - start > limit:
        cut = quietest_point(audio, start + limit // 2, start + limit)
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


def quietest_point(audio: npt.NDArray[np.float32], lo: int, hi: int) -> int:
    """The middle of the quietest 20 ms stretch of ``audio[lo:hi]`` (a sample index)."""
    span = audio[lo:hi]
    usable = span.size - span.size % _FRAME
    if usable < 3 * _FRAME:
        return hi
    energy = np.mean(span[:usable].astype(np.float64).reshape(-1, _FRAME) ** 2, axis=1)
    # Smoothed over three frames, so that one quiet frame inside a vowel does not win.
    smooth = np.convolve(energy, np.ones(3) / 3, mode="valid")
    return lo + (int(np.argmin(smooth)) + 1) * _FRAME + _FRAME // 2
