"""Small test helpers: word error rate and polling with a deadline (never a bare sleep)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TypeVar

import jiwer

T = TypeVar("T")

_NUMBERS = {"1": "one", "2": "two", "3": "three", "4": "four", "5": "five"}


def normalize(text: str) -> str:
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
