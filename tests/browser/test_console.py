"""The console in a real browser: sign in, upload a real clip and read its transcript,
seek by clicking a word, rename a speaker, retry a failed job."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from postcall.domain import (
    Transcription,
    TranscriptionOptions,
    TranscriptionStatus,
    new_id,
    utcnow,
)
from tests.browser.conftest import KEY, Site, sign_in
from tests.conftest import clip
from tests.helpers import wer

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def upload_clip(site: Site, testdata: Path, name: str, **form: str) -> dict[str, Any]:
    with site.server.client(KEY) as c, (testdata / name).open("rb") as fh:
        r = c.post("/v1/recordings", files={"file": (name, fh)}, data=form)
        assert r.status_code == 201, r.text
        return dict(r.json())


def test_sign_in_upload_read_seek_and_rename(
    page: Any, model_site: Site, testdata: Path, tmp_path: Path
) -> None:
    reference = clip("jfk.flac")["text"]
    page.goto(model_site.url)
    # A wrong key is refused; the right one opens the recordings.
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("That key is not valid").wait_for()
    sign_in(page, model_site.url)
    assert page.evaluate("sessionStorage.getItem('postcall.key')") == KEY
    assert page.evaluate("localStorage.length") == 0

    # Upload by the file picker of the drop zone, with a participant's name.
    page.get_by_label("Participants").fill("Speaker of the house")
    page.get_by_label("Recording id").fill("jfk-inaugural")
    page.locator("input[type=file]").set_input_files(str(testdata / "jfk.flac"))
    row = page.locator("tr.row[data-id='jfk-inaugural']")
    row.wait_for()
    row.locator(".badge.completed").wait_for(timeout=180_000)
    page.screenshot(path=str(tmp_path / "list.png"))

    row.click()
    page.locator(".seg .w").first.wait_for()
    text = page.locator(".transcript").inner_text()
    spoken = " ".join(page.locator(".seg .text").all_inner_texts())
    assert wer(reference, spoken) < 0.25, spoken
    assert "Speaker of the house" in text

    # Clicking a word seeks the player to that word's start.
    with httpx.Client(base_url=model_site.url, headers={"Authorization": f"Bearer {KEY}"}) as c:
        trs = c.get("/v1/recordings/jfk-inaugural/transcriptions").json()["data"]
        doc = c.get(f"/v1/transcriptions/{trs[0]['transcriptionId']}/transcript").json()
    words = [w for seg in doc["segments"] for w in seg["words"]]
    page.wait_for_function("document.querySelector('audio').readyState >= 1")
    target = page.locator(".seg .w").nth(6)
    target.click()
    current = page.evaluate("document.querySelector('audio').currentTime")
    assert current == pytest.approx(words[6]["start"], abs=0.3)
    page.wait_for_function("document.querySelector('.w.now') !== null")
    page.evaluate("document.querySelector('audio').pause()")
    page.screenshot(path=str(tmp_path / "transcript.png"))

    # Renaming the speaker persists (after a reload) and reaches the SRT download.
    page.get_by_role("button", name="Rename Speaker of the house").click()
    page.get_by_label("New name").fill("John F. Kennedy")
    page.get_by_label("New name").press("Enter")
    page.locator(".seg .who", has_text="John F. Kennedy").first.wait_for()
    page.reload()
    page.locator(".seg .who", has_text="John F. Kennedy").first.wait_for()
    assert page.locator(".speakers .name").all_inner_texts() == ["John F. Kennedy"]
    with page.expect_download() as got:
        page.get_by_role("button", name="SRT").click()
    srt = Path(got.value.path()).read_text()
    assert "John F. Kennedy:" in srt and "Speaker of the house" not in srt
    assert re.search(r"00:00:0\d,\d{3} --> ", srt)

    # Search within the transcript marks the matches.
    page.get_by_label("Search the transcript").fill("country")
    page.get_by_text("1 of 1").or_(page.get_by_text(re.compile(r"\d+ of \d+"))).first.wait_for()
    assert page.locator(".seg.hit").count() >= 1
    page.get_by_label("Search the transcript").fill("")
    page.wait_for_function("document.querySelector('.seg.hit') === null")
    page.mouse.move(0, 0)
    page.screenshot(path=str(tmp_path / "renamed.png"))


def test_retry_of_a_failed_transcription(
    page: Any, model_site: Site, testdata: Path, tmp_path: Path
) -> None:
    rec = upload_clip(model_site, testdata, "jfk.flac", id="jfk-retry")
    # A transcription that failed (as when its worker's engine broke), written into the
    # server's own store: its worker claims only queued jobs, so it stays failed.
    comps = model_site.components()
    now = utcnow()
    failed = Transcription(
        id=new_id("tr"),
        recording_id=rec["id"],
        tenant="default",
        status=TranscriptionStatus.FAILED,
        options=TranscriptionOptions(language="en"),
        created_at=now,
        updated_at=now,
        attempts=3,
    )
    comps.store.add_transcription(failed)
    comps.store.close()
    sign_in(page, model_site.url)
    page.goto(f"{model_site.url}/#/recordings/jfk-retry")
    page.locator(".badge.failed").wait_for()
    page.screenshot(path=str(tmp_path / "failed.png"))
    page.get_by_role("button", name="Retry").click()
    page.locator(".seg .w").first.wait_for(timeout=180_000)
    spoken = " ".join(page.locator(".seg .text").all_inner_texts())
    assert wer(clip("jfk.flac")["text"], spoken) < 0.25, spoken
    with httpx.Client(base_url=model_site.url, headers={"Authorization": f"Bearer {KEY}"}) as c:
        listed = c.get("/v1/recordings/jfk-retry/transcriptions").json()["data"]
    assert [t["transcriptionId"] for t in listed] == [failed.id]
    assert listed[0]["status"] == "completed"


def test_docs_render_with_nothing_from_outside(page: Any, api_site: Site) -> None:
    outside: list[str] = []

    def only_postcall(route: Any) -> None:
        if route.request.url.startswith(api_site.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_postcall)
    page.goto(f"{api_site.url}/docs")
    page.locator(".swagger-ui .info .title", has_text="postcall").wait_for()
    page.get_by_text("/v1/recordings/{recording_id}/media", exact=True).first.wait_for()
    page.goto(api_site.url)
    page.get_by_label("API key").wait_for()
    assert outside == []
