"""A 2-hour meeting in the console: thousands of segments open and play without a long
task over 200 ms (measured in the page with a PerformanceObserver of 'longtask')."""

from __future__ import annotations

import json
import os
import random
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest

from postcall import formats
from postcall.domain import (
    Participant,
    Segment,
    TranscriptDocument,
    TranscriptionResult,
    Word,
)
from postcall.service import document_key
from tests.browser.conftest import KEY, Site, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

HOURS = 2.0
MAX_LONG_TASK_MS = 200.0
ATTEMPTS = 2
"""A long task is wall time: on a machine whose cores other work keeps busy, the page
can be descheduled mid-task. A second, fresh page load is measured when the first saw
a task over the limit; one clean run is required (a real freeze fails every run)."""
NAMES = ["Alice Moreau", "Bilal Khan", "Chen Wei", "Dana Okafor"]
VOCABULARY = [
    "we",
    "should",
    "ship",
    "the",
    "new",
    "release",
    "on",
    "friday",
    "after",
    "the",
    "review",
    "of",
    "the",
    "budget",
    "and",
    "the",
    "roadmap",
    "for",
    "next",
    "quarter",
    "customers",
    "asked",
    "about",
    "latency",
    "so",
    "let",
    "us",
    "measure",
    "it",
    "again",
    "before",
    "we",
    "decide",
    "anything",
    "about",
    "the",
    "migration",
    "plan",
    "or",
    "the",
    "hiring",
]

LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTasks.push(entry.duration);
}).observe({ type: "longtask", buffered: true });
"""


def silent_wav(path: Path, seconds: float, rate: int = 8000) -> Path:
    """A long silent WAV (8-bit, 8 kHz: 58 MB for two hours), written in blocks."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(rate)
        block = b"\x80" * rate * 60
        for _ in range(int(seconds // 60)):
            out.writeframes(block)
    return path


def meeting(seconds: float, transcription_id: str, recording_id: str) -> TranscriptDocument:
    """A synthetic meeting: four speakers taking turns of 2-7 s, a word every ~0.4 s."""
    rng = random.Random(7)
    segments = []
    t = 0.5
    while t < seconds - 8:
        length = rng.uniform(2.0, 7.0)
        words = []
        w = t
        while w < t + length:
            d = rng.uniform(0.2, 0.45)
            words.append(Word(w, w + d, rng.choice(VOCABULARY), 0.9))
            w += d + rng.uniform(0.02, 0.12)
        text = " ".join(x.text for x in words)
        segments.append(
            Segment(t, words[-1].end, text.capitalize() + ".", tuple(words), rng.choice(NAMES))
        )
        t = words[-1].end + rng.uniform(0.2, 1.2)
    return TranscriptDocument(
        transcription_id=transcription_id,
        recording_id=recording_id,
        language="en",
        duration=seconds,
        segments=tuple(segments),
        participants=tuple(Participant(str(i + 1), n) for i, n in enumerate(NAMES)),
    )


def test_a_two_hour_meeting_opens_and_plays_without_long_tasks(
    page: Any, api_site: Site, tmp_path: Path
) -> None:
    seconds = HOURS * 3600
    media = silent_wav(tmp_path / "meeting.wav", seconds)
    participants = [{"id": str(i + 1), "name": n} for i, n in enumerate(NAMES)]
    with (
        httpx.Client(
            base_url=api_site.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120
        ) as c,
        media.open("rb") as fh,
    ):
        meta = json.dumps({"participants": participants, "title": "Quarterly planning"})
        rec = c.post(
            "/v1/recordings",
            files={"file": ("meeting.wav", fh, "audio/wav")},
            data={"id": "planning", "metadata": meta},
        )
        assert rec.status_code == 201, rec.text
        tr = c.post("/v1/recordings/planning/transcribe", json={"language": "en"}).json()

    # The test is the worker: it claims the job and completes it with the document.
    comps = api_site.components()
    job = comps.store.claim("browser-test", lease_s=600, max_attempts=3)
    assert job is not None and job.id == tr["transcriptionId"]
    doc = meeting(seconds, job.id, "planning")
    key = document_key(job.id)
    comps.blobs.put_bytes(key, formats.to_json(doc).encode())
    result = TranscriptionResult("en", seconds, len(doc.segments), key)
    assert comps.store.complete(job.id, "browser-test", result)
    comps.store.close()
    words = sum(len(s.words) for s in doc.segments)
    assert len(doc.segments) > 1000 and words > 15_000

    page.add_init_script(LONG_TASKS)
    sign_in(page, api_site.url)
    worst: list[float] = []
    for attempt in range(ATTEMPTS):
        tasks, opened = open_and_play(page, api_site, doc, tmp_path / f"long-{attempt}.png")
        worst.append(max(tasks, default=0.0))
        print(
            f"2-hour transcript: {len(doc.segments)} segments, {words} words; attempt "
            f"{attempt + 1}: {len(tasks)} long tasks, worst {worst[-1]:.0f} ms (while "
            f"opening: {opened:.0f} ms); load average {os.getloadavg()[0]:.1f}"
        )
        if worst[-1] < MAX_LONG_TASK_MS:
            break
    assert min(worst) < MAX_LONG_TASK_MS, worst


def open_and_play(
    page: Any, site: Site, doc: TranscriptDocument, shot: Path
) -> tuple[list[float], float]:
    """Open the meeting, play from its middle, click a word, search it; the long tasks
    the page saw (ms), and the worst of them while it opened."""
    page.goto(f"{site.url}/#/recordings/planning")
    page.reload()  # a fresh page: the observer starts with it
    page.wait_for_function(
        f"document.querySelectorAll('.seg').length === {len(doc.segments)}", timeout=120_000
    )
    page.wait_for_function("document.querySelector('audio').readyState >= 1", timeout=60_000)
    opened = float(page.evaluate("Math.max(0, ...window.__longTasks)"))

    # Play from the middle: the spoken word is highlighted and scrolled into view.
    middle = next(s for s in doc.segments if s.start > doc.duration / 2)
    page.evaluate(
        "(t) => { const a = document.querySelector('audio'); a.currentTime = t; a.play(); }",
        middle.start + 0.01,
    )
    page.wait_for_function(
        "(t) => document.querySelector('audio').currentTime > t", arg=middle.start + 1.5
    )
    now = page.locator(".w.now")
    assert now.count() == 1
    assert now.is_visible()
    active = page.evaluate("document.querySelector('.seg.active .time').dataset.t")
    assert middle.start - 0.01 <= float(active) <= middle.start + 10
    # A click on another visible word seeks there.
    later = page.locator(".seg.active + .seg .w").first
    later.click()
    index = int(later.get_attribute("data-i"))
    flat = [w for s in doc.segments for w in s.words]
    page.wait_for_function(
        f"Math.abs(document.querySelector('audio').currentTime - {flat[index].start}) < 0.5",
        timeout=10_000,
    )
    # Search across the whole meeting.
    page.get_by_label("Search the transcript").fill("migration")
    page.get_by_text(" of ").first.wait_for()
    page.wait_for_timeout(1500)  # playing on while the page is measured
    page.evaluate("document.querySelector('audio').pause()")
    page.get_by_label("Search the transcript").fill("")
    page.wait_for_function("document.querySelector('.seg.hit') === null")
    page.locator(".w.now").scroll_into_view_if_needed()
    page.mouse.move(0, 0)
    page.screenshot(path=str(shot))
    return [float(t) for t in page.evaluate("window.__longTasks")], opened
