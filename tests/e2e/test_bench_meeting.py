"""bench/meeting.py in a tiny mode (a 20-second meeting), so a change that breaks the
benchmark is caught by ``make test``; its figures are not asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import speech

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(speech.available() is not None, reason=f"needs {speech.available()}"),
]
ROOT = Path(__file__).resolve().parents[2]


def test_the_meeting_benchmark_runs_end_to_end(tmp_path: Path, whisper_model_dir: str) -> None:
    command = [sys.executable, str(ROOT / "bench" / "meeting.py"), "--set", "dev"]
    command += ["--minutes", "0.33", "--runs", "oracle,batched,postcall", "--out", str(tmp_path)]
    command += ["--model", whisper_model_dir]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["run"] for r in summary["rows"]] == [
        "(o) each turn alone",
        "(b) plain batched",
        "(c) postcall",
    ]
    assert summary["turns"] >= 3
    for row in summary["rows"]:
        assert row["wer_pct"] >= 0 and row["x_real_time"] > 0 and row["long_turns"] >= 1
    assert (tmp_path / "meeting-dev.json").is_file()
