"""Small test helpers: word error rate, words scored against reference turns, and
polling with a deadline (never a bare sleep)."""

from __future__ import annotations

import json
import re
import time
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jiwer

T = TypeVar("T")

_NUMBERS = {"1": "one", "2": "two", "3": "three", "4": "four", "5": "five"}


def normalize(text: str) -> str:
    """Lower-case words without punctuation; accents folded ("Montréal" is "montreal",
    not "montr al") and a typographic apostrophe read as ``'``."""
    text = unicodedata.normalize("NFKD", text.replace("\u2019", "'"))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    words = [_NUMBERS.get(w, w) for w in text.split()]
    return " ".join(words)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate after lower-casing and dropping punctuation."""
    return float(jiwer.wer(normalize(reference), normalize(hypothesis)))


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, interval: float = 0.1, what: str = ""
) -> T:
    """Call ``probe`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what or probe}")
        time.sleep(interval)


@dataclass(frozen=True)
class TurnScore:
    """Recognised words measured against reference turns (one alignment of the words,
    in time order, to the turns' words, in order)."""

    wer: float
    hits: list[int]  # per turn: its reference words matched exactly
    inside: float  # share of matched words whose middle lies within their own turn
    words_out: int
    # per turn: the words recognised whose middle lies within it, matched or not (a turn
    # with hits of 0 but words said was heard and misread, one with none was dropped)
    said: list[int]


def score_turns(
    turns: Sequence[tuple[float, float, str]],
    words: Sequence[tuple[str, float, float]],
    *,
    margin: float = 0.5,
) -> TurnScore:
    """Score ``words`` (text, start s, end s) against ``turns`` (start s, end s, text):
    WER, hits per turn, the share of matched words (exact or substituted) that lie
    inside their own turn, within ``margin`` seconds, and the words said in each turn."""
    ref: list[tuple[str, int]] = []
    for i, (_, _, text) in enumerate(turns):
        ref += [(token, i) for token in normalize(text).split()]
    hyp: list[tuple[str, float]] = []
    for text, a, b in sorted(words, key=lambda w: w[1]):
        hyp += [(token, (a + b) / 2) for token in normalize(text).split()]
    out = jiwer.process_words(" ".join(r[0] for r in ref), " ".join(h[0] for h in hyp) or "-")
    hits = [0] * len(turns)
    inside = matched = 0
    for chunk in out.alignments[0]:
        if chunk.type not in ("equal", "substitute"):
            continue
        for k in range(chunk.ref_end_idx - chunk.ref_start_idx):
            i = ref[chunk.ref_start_idx + k][1]
            mid = hyp[chunk.hyp_start_idx + k][1]
            matched += 1
            inside += turns[i][0] - margin <= mid <= turns[i][1] + margin
            hits[i] += chunk.type == "equal"
    mids = sorted(mid for _, mid in hyp)
    said = [bisect_right(mids, b) - bisect_left(mids, a) for a, b, _ in turns]
    return TurnScore(
        wer=float(out.wer),
        hits=hits,
        inside=inside / matched if matched else 0.0,
        words_out=len(hyp),
        said=said,
    )


def create_recording(client: httpx.Client, files: list[Path], **fields: Any) -> dict[str, Any]:
    """``POST /v1/recordings`` with ``files`` (one or one per track) and form ``fields``
    (objects sent as JSON); the created recording, asserted 201."""
    handles = [p.open("rb") for p in files]
    try:
        data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
        r = client.post(
            "/v1/recordings",
            files=[("file", (p.name, h)) for p, h in zip(files, handles, strict=True)],
            data=data,
        )
    finally:
        for h in handles:
            h.close()
    assert r.status_code == 201, r.text
    return dict(r.json())
