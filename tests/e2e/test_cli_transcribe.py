"""``postcall transcribe`` as a user runs it: out of the box with the bundled model, and
leaving nothing behind outside postcall's own data (onnxruntime's telemetry, a device id
and queued events under ~/.cache, stays off)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def transcribe(
    path: Path, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postcall.cli", "transcribe", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_a_transcription_writes_nothing_under_home(
    tmp_path: Path, testdata: Path, whisper_model_dir: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(home), WHISPER_MODEL=whisper_model_dir, XDG_CACHE_HOME=str(home / ".cache"))
    done = transcribe(testdata / "jfk.flac", env)
    assert done.returncode == 0, done.stderr
    assert "country" in done.stdout
    assert [p for p in home.rglob("*")] == []


def test_transcribe_uses_the_bundled_model_when_none_is_set(
    tmp_path: Path, testdata: Path, whisper_model_dir: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WHISPER_MODEL"}
    env["HOME"] = str(tmp_path)
    done = transcribe(testdata / "jfk.flac", env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "country" in done.stdout
    assert f"model: {whisper_model_dir}" in done.stderr
