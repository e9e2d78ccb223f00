"""The console's voiceprints page in a real browser: enrol from a real speech sample,
see the API's message for too little speech, delete one, forget a participant, page
through the list; and a transcript shows what its job did with voiceprints.

Enrolment runs in the API process with the real speaker encoder, so these use the
server without a worker (no Whisper model)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from postcall import formats
from postcall.domain import (
    Participant,
    Segment,
    TranscriptDocument,
    TranscriptionResult,
    Voiceprint,
    VoiceprintNote,
    Word,
    new_id,
    utcnow,
)
from postcall.service import document_key
from tests import media, speech
from tests.browser.conftest import KEY, Site, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


@pytest.fixture(scope="module")
def samples(testdata: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """About 15 s of one LJ Speech reader, and 2 s of her (too little speech)."""
    root = tmp_path_factory.mktemp("samples")
    clips = [
        speech.trim(media.load_mono16k(testdata / f"ljspeech/LJ001-{i:04d}.flac"))
        for i in (4, 6, 10)
    ]
    long = media.concat_with_pauses(clips, [0.4])
    assert len(long) >= 8 * 16000
    return {
        "long": media.write_audio(root / "reader.wav", long),
        "short": media.write_audio(root / "short.wav", np.asarray(clips[0][: 2 * 16000])),
    }


def client(site: Site) -> httpx.Client:
    return httpx.Client(base_url=site.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)


def listed(site: Site, **params: str) -> list[dict[str, Any]]:
    with client(site) as c:
        r = c.get("/v1/voiceprints", params={"limit": "500", **params})
        assert r.status_code == 200, r.text
        return list(r.json()["data"])


def enrol(site: Site, sample: Path, participant_id: str, name: str) -> dict[str, Any]:
    with client(site) as c, sample.open("rb") as fh:
        r = c.post(
            "/v1/voiceprints",
            files={"file": (sample.name, fh)},
            data={"participant_id": participant_id, "name": name},
        )
    assert r.status_code == 201, r.text
    return dict(r.json())


def open_voiceprints(page: Any, site: Site) -> None:
    sign_in(page, site.url)
    page.get_by_role("link", name="Voiceprints").click()
    page.get_by_role("heading", name="Voiceprints").wait_for()
    assert page.get_by_role("link", name="Voiceprints").get_attribute("aria-current") == "page"


def test_enrol_from_a_sample_then_delete(
    page: Any, api_site: Site, samples: dict[str, Path], tmp_path: Path
) -> None:
    open_voiceprints(page, api_site)

    # Too little speech: the API's own message is shown by the form.
    with client(api_site) as c, samples["short"].open("rb") as fh:
        refused = c.post(
            "/v1/voiceprints",
            files={"file": ("short.wav", fh)},
            data={"participant_id": "u-short", "name": "Short"},
        )
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "too_little_speech"
    page.get_by_label("Participant id").fill("u-short")
    page.get_by_label("Name").fill("Short")
    page.get_by_label("Speech sample").set_input_files(str(samples["short"]))
    page.get_by_role("button", name="Enrol", exact=True).click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert alert.inner_text() == refused.json()["error"]["message"]
    assert listed(api_site, participant_id="u-short") == []

    # Enough speech: enrolled, listed with its name, participant and figures.
    page.get_by_label("Participant id").fill("u-reader")
    page.get_by_label("Name").fill("Linda Reader")
    page.get_by_label("Speech sample").set_input_files(str(samples["long"]))
    page.get_by_role("button", name="Enrol", exact=True).click()
    row = page.locator("tr", has_text="Linda Reader")
    row.wait_for(timeout=30_000)
    assert alert.is_hidden()
    [vp] = listed(api_site, participant_id="u-reader")
    assert vp["name"] == "Linda Reader" and vp["source"] == "sample"
    cells = row.locator("td").all_inner_texts()
    assert cells[1] == "u-reader" and cells[2] == f"{vp['seconds']:.1f} s"
    assert cells[3] == "sample" and cells[4] == vp["model"]
    assert row.get_attribute("data-id") == vp["id"]
    page.mouse.move(0, 0)
    page.screenshot(path=str(tmp_path / "voiceprints.png"))

    # Delete, cancelled, then confirmed: gone from the page and from the API.
    page.once("dialog", lambda d: d.dismiss())
    page.get_by_role("button", name="Delete the voiceprint of Linda Reader").click()
    assert row.is_visible() and len(listed(api_site, participant_id="u-reader")) == 1
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete the voiceprint of Linda Reader").click()
    row.wait_for(state="detached")
    assert listed(api_site, participant_id="u-reader") == []
    page.reload()
    page.get_by_role("heading", name="Voiceprints").wait_for()
    page.get_by_text("No voiceprints yet").wait_for()


def test_forget_a_participant_and_load_more(
    page: Any, api_site: Site, samples: dict[str, Path]
) -> None:
    enrol(api_site, samples["long"], "u-forget", "Forget Me")
    kept = enrol(api_site, samples["long"], "u-keep", "Keep Me")
    # 50 more, written into the server's store: the list shows 50 at a time.
    comps = api_site.components()
    base = utcnow() - timedelta(days=1)
    for i in range(50):
        at = base - timedelta(minutes=i)
        comps.store.put_voiceprint(
            Voiceprint(
                id=new_id("vp"),
                tenant="default",
                participant_id=f"u-old-{i:02d}",
                name=f"Old {i:02d}",
                embedding=tuple([1.0] + [0.0] * 255),
                model=kept["model"],
                seconds=6.0,
                source="sample",
                created_at=at,
                updated_at=at,
            )
        )
    comps.store.close()
    assert len(listed(api_site)) == 52

    open_voiceprints(page, api_site)
    rows = page.locator("tbody tr")
    more = page.get_by_role("button", name="Load more")
    more.wait_for()
    assert rows.count() == 50
    more.click()
    page.locator("tbody tr", has_text="Old 49").wait_for()
    assert rows.count() == 52 and more.is_hidden()

    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Forget participant u-forget").click()
    page.locator("tr", has_text="Forget Me").wait_for(state="detached")
    page.get_by_text("Participant u-forget forgotten: 1 voiceprint deleted").wait_for()
    assert listed(api_site, participant_id="u-forget") == []
    assert [v["id"] for v in listed(api_site, participant_id="u-keep")] == [kept["id"]]
    assert page.locator("tr", has_text="Keep Me").is_visible() and rows.count() == 51


def test_a_transcript_shows_its_voiceprint_notes(page: Any, api_site: Site, tmp_path: Path) -> None:
    wav = media.write_audio(tmp_path / "call.wav", media.silence(3.0))
    with client(api_site) as c, wav.open("rb") as fh:
        meta = json.dumps({"participants": [{"id": "agent", "name": "Ann"}]})
        r = c.post(
            "/v1/recordings",
            files={"file": ("call.wav", fh)},
            data={"id": "noted", "metadata": meta},
        )
        assert r.status_code == 201, r.text
        tr = c.post("/v1/recordings/noted/transcribe", json={}).json()

    # The test is the worker: it completes the job with notes of what it enrolled.
    comps = api_site.components()
    job = comps.store.claim("browser-test", lease_s=600, max_attempts=3)
    assert job is not None and job.id == tr["transcriptionId"]
    words = (Word(0.5, 0.9, "Hello", 0.9), Word(1.0, 1.4, "there", 0.9))
    doc = TranscriptDocument(
        transcription_id=job.id,
        recording_id="noted",
        language="en",
        duration=3.0,
        segments=(Segment(0.5, 1.4, "Hello there", words, "Ann"),),
        participants=(Participant("agent", "Ann"),),
    )
    key = document_key(job.id)
    comps.blobs.put_bytes(key, formats.to_json(doc).encode())
    notes = (
        VoiceprintNote("agent", "enrolled", "enrolled from 41.2 s of speech", "vp_x"),
        VoiceprintNote("customer", "skipped", "skipped: 1.2 s of speech, 5 s needed"),
    )
    assert comps.store.complete(
        job.id, "browser-test", TranscriptionResult("en", 3.0, 1, key, notes)
    )
    comps.store.close()

    sign_in(page, api_site.url)
    page.goto(f"{api_site.url}/#/recordings/noted")
    page.locator(".seg .w").first.wait_for()
    items = page.locator(".vp-notes li")
    assert items.count() == 2
    first = items.nth(0)
    assert first.locator(".badge").text_content() == "enrolled"
    assert " ".join(first.inner_text().split()[1:]) == "agent enrolled from 41.2 s of speech"
    assert "skipped: 1.2 s of speech, 5 s needed" in items.nth(1).inner_text()
    page.screenshot(path=str(tmp_path / "notes.png"))
