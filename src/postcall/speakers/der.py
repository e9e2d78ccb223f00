"""Diarization error rate (md-eval's definition) and RTTM reading, for tests and benchmarks."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from postcall.speakers.diarize import Turn


def read_rttm(
    path: str | os.PathLike[str], file_id: str | None = None
) -> list[tuple[float, float, str]]:
    """The SPEAKER lines of an RTTM file as (start, end, speaker), in file order."""
    turns: list[tuple[float, float, str]] = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            fields = line.split()
            if len(fields) < 8 or fields[0] != "SPEAKER":
                continue
            if file_id is not None and fields[1] != file_id:
                continue
            start, duration = float(fields[3]), float(fields[4])
            turns.append((start, start + duration, fields[7]))
    return turns


def der(
    reference: Sequence[tuple[float, float, str]],
    hypothesis: Sequence[Turn],
    *,
    collar: float = 0.25,
    uem: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Diarization error rate of ``hypothesis`` against ``reference`` turns.

    DER = (missed speech + false alarm + speaker confusion) / reference speech, all
    in seconds of the scored time, with speakers counted per overlapping voice (as
    NIST md-eval). Hypothesis speakers map one-to-one onto reference speakers so as
    to maximise their common time (the Hungarian method). ``collar`` seconds on each
    side of every reference boundary are not scored (md-eval's ``-c``; pyannote's
    ``collar`` is the total, twice this). ``uem`` limits scoring to (start, end);
    by default it spans both inputs. Returns the rate and its parts, in seconds.
    """
    ref = _by_speaker((s, e, str(k)) for s, e, k in reference)
    hyp = _by_speaker((t.start, t.end, str(t.speaker)) for t in hypothesis)
    if uem is None:
        bounds = [t for spans in (*ref.values(), *hyp.values()) for span in spans for t in span]
        uem = (min(bounds, default=0.0), max(bounds, default=0.0))
    scored = [uem]
    if collar > 0:
        edges = sorted({t for spans in ref.values() for span in spans for t in span})
        scored = _subtract(scored, _union([(t - collar, t + collar) for t in edges]))
    # Elementary segments: between consecutive boundaries, who speaks does not change.
    cuts = np.unique(
        [t for spans in (*ref.values(), *hyp.values(), scored) for s in spans for t in s]
    )
    mids = (cuts[:-1] + cuts[1:]) / 2
    lengths = np.diff(cuts) * _active(scored, mids)
    on_ref = np.array([_active(v, mids) for v in ref.values()]).reshape(len(ref), mids.size)
    on_hyp = np.array([_active(v, mids) for v in hyp.values()]).reshape(len(hyp), mids.size)
    overlap = (on_hyp * lengths) @ on_ref.T.astype(np.float64)
    correct = np.zeros(mids.size)
    for h, r in _assignment(overlap) if overlap.size else []:
        correct += on_hyp[h] & on_ref[r]
    n_ref, n_hyp = on_ref.sum(axis=0), on_hyp.sum(axis=0)
    total = float(lengths @ n_ref)
    missed = float(lengths @ np.maximum(0, n_ref - n_hyp))
    false_alarm = float(lengths @ np.maximum(0, n_hyp - n_ref))
    confusion = float(lengths @ (np.minimum(n_ref, n_hyp) - correct))
    errors_s = missed + false_alarm + confusion
    rate = errors_s / total if total > 0 else (0.0 if errors_s == 0 else math.inf)
    return {
        "der": rate,
        "missed": missed,
        "false_alarm": false_alarm,
        "confusion": confusion,
        "total": total,
    }


Spans = list[tuple[float, float]]


def _by_speaker(turns: Iterator[tuple[float, float, str]] | Any) -> dict[str, Spans]:
    grouped: dict[str, Spans] = {}
    for start, end, speaker in turns:
        if end > start:
            grouped.setdefault(speaker, []).append((float(start), float(end)))
    return {k: _union(v) for k, v in grouped.items()}


def _union(spans: Spans) -> Spans:
    out: Spans = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _subtract(spans: Spans, remove: Spans) -> Spans:
    """``spans`` minus ``remove``; both sorted and disjoint (as ``_union`` gives)."""
    out: Spans = []
    j = 0
    for start, end in spans:
        while j < len(remove) and remove[j][1] <= start:
            j += 1
        t, k = start, j
        while k < len(remove) and remove[k][0] < end:
            if remove[k][0] > t:
                out.append((t, remove[k][0]))
            t = max(t, remove[k][1])
            k += 1
        if t < end:
            out.append((t, end))
    return out


def _active(spans: Spans, times: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Whether each of ``times`` falls inside ``spans`` (sorted and disjoint)."""
    if not spans:
        return np.zeros(times.shape, dtype=bool)
    starts = np.array([s for s, _ in spans])
    ends = np.array([e for _, e in spans])
    index = np.searchsorted(starts, times, side="right") - 1
    return (index >= 0) & (times < ends[np.maximum(index, 0)])


def _assignment(gain: npt.NDArray[np.float64]) -> list[tuple[int, int]]:
    """Row → column pairs maximising the total ``gain`` (Hungarian method, O(n³)).

    Rectangular matrices are padded with zeros; pairs with padding are dropped.
    """
    rows, cols = gain.shape
    n = max(rows, cols)
    cost = np.zeros((n, n))
    cost[:rows, :cols] = -gain
    # Jonker-Volgenant style shortest augmenting paths with potentials u, v.
    u = np.zeros(n + 1)
    v = np.zeros(n + 1)
    match = np.zeros(n + 1, dtype=np.int64)  # match[col] = row (1-based), 0 = free
    for row in range(1, n + 1):
        match[0] = row
        col0 = 0
        best = np.full(n + 1, np.inf)
        way = np.zeros(n + 1, dtype=np.int64)
        used = np.zeros(n + 1, dtype=bool)
        while True:
            used[col0] = True
            r = match[col0]
            delta, col1 = np.inf, 0
            for col in range(1, n + 1):
                if used[col]:
                    continue
                reduced = cost[r - 1, col - 1] - u[r] - v[col]
                if reduced < best[col]:
                    best[col], way[col] = reduced, col0
                if best[col] < delta:
                    delta, col1 = best[col], col
            for col in range(n + 1):
                if used[col]:
                    u[match[col]] += delta
                    v[col] -= delta
                else:
                    best[col] -= delta
            col0 = col1
            if match[col0] == 0:
                break
        while col0:
            col1 = way[col0]
            match[col0] = match[col1]
            col0 = col1
    pairs = [(int(match[c]) - 1, c - 1) for c in range(1, n + 1)]
    return sorted((r, c) for r, c in pairs if r < rows and c < cols)
