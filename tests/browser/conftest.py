"""Fixtures of the browser tests: Debian's Chromium driven by Playwright (never a
browser Playwright downloads), and postcall servers on free ports."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from postcall import wiring
from postcall.settings import Settings
from tests.e2e.server import Server, model_server

KEY = "pc_browser_test_key"
CHROMIUM = ("chromium", "chromium-browser")


def chromium_path() -> str | None:
    for name in CHROMIUM:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        pytest.skip("chromium is not installed (make system-deps installs it as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (the test extra installs it)")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(
            executable_path=path,
            headless=True,
            args=["--autoplay-policy=no-user-gesture-required", "--mute-audio"],
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(
        viewport={"width": 1360, "height": 860}, device_scale_factor=1, accept_downloads=True
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"the page raised: {errors}"


class Site(NamedTuple):
    """A running server and its data folder (its SQLite store and blobs)."""

    server: Server
    data_dir: Path

    @property
    def url(self) -> str:
        return self.server.url

    def components(self) -> wiring.Components:
        """The server's store and blobs, opened from the test (no worker)."""
        return wiring.build(Settings(data_dir=self.data_dir), with_worker=False)


@pytest.fixture(scope="module")
def model_site(tmp_path_factory: pytest.TempPathFactory, whisper_model_dir: str) -> Iterator[Site]:
    """``postcall serve`` with the real model, an API key required."""
    root = tmp_path_factory.mktemp("site")
    server = model_server(root, whisper_model_dir, KEY)
    yield Site(server, root / "data")
    server.stop()


@pytest.fixture(scope="module")
def api_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """``postcall serve --no-worker``: the test itself plays the worker."""
    root = tmp_path_factory.mktemp("api-site")
    env = {"POSTCALL_DATA_DIR": str(root / "data"), "POSTCALL_API_KEYS": KEY}
    server = Server({**env, "POSTCALL_AUTH": "required"}, root / "server.log", "--no-worker")
    yield Site(server, root / "data")
    server.stop()


def sign_in(page: Any, url: str, key: str = KEY) -> None:
    page.goto(url)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Recordings").wait_for()
