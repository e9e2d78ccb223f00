"""Every benchmark in its tiny mode (seconds, not minutes), so a change that breaks one is
caught by ``make test``; the figures themselves are not asserted here. And the runner
behind ``make bench``: one failing benchmark does not hide the others' figures."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import speech

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _benchmarks() -> tuple[str, ...]:
    spec = importlib.util.spec_from_file_location("bench_all", ROOT / "bench" / "all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.BENCHMARKS)


BENCHMARKS = _benchmarks()


def run_tiny(name: str, model_dir: str) -> dict | list:
    command = [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--tiny"]
    env = {**os.environ, "WHISPER_MODEL": model_dir}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result: dict | list = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_runs_end_to_end_in_its_tiny_mode(name: str, whisper_model_dir: str) -> None:
    if name == "meeting" and speech.available() is not None:
        pytest.skip(f"needs {speech.available()}")
    got = run_tiny(name, whisper_model_dir)
    assert got, f"{name} printed an empty result"
    if name == "meeting":
        assert isinstance(got, dict)
        assert [r["run"] for r in got["rows"]] == [
            "(o) each turn alone",
            "(b) plain batched",
            "(c) postcall",
        ]
        assert got["turns"] >= 3
        for row in got["rows"]:
            assert row["wer_pct"] >= 0 and row["x_real_time"] > 0 and row["long_turns"] >= 1
            assert len(row["wall_s_each"]) == 1  # --tiny times each run once
        assert len(got["postcall_speed_over_batched_each"]) == 1
    if name == "load":
        assert isinstance(got, dict)
        assert {r["store"] for r in got["api"]} == {"sqlite", "redis"}
        for r in got["webhooks"]:
            assert r["delivered"] == r["expected"] > 0  # every event reached every receiver
        assert all(r["black_hole_connections"] > 0 for r in got["webhooks"] if r["black_hole"])
        for r in got["uploads"]:
            assert r["written_per_upload"] > 0.9  # the counter saw the uploads written


def test_make_bench_runs_every_benchmark_and_names_the_one_that_failed(tmp_path: Path) -> None:
    for name, code in (("first", 0), ("broken", 3), ("last", 0)):
        (tmp_path / f"{name}.py").write_text(
            f"import sys\nprint('figures of {name}')\nsys.exit({code})\n"
        )
    command = [sys.executable, str(ROOT / "bench" / "all.py"), "--dir", str(tmp_path)]
    done = subprocess.run(
        [*command, "--only", "first,broken,last"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    out = done.stdout
    assert "figures of first" in out and "figures of last" in out  # the one after ran too
    assert "FAILED (exit status 3)" in out
    assert out.strip().splitlines()[-1] == "failed: broken"
    unknown = subprocess.run([*command, "--only", "nope"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "no such benchmark: nope" in unknown.stderr


def test_a_run_in_a_child_reports_its_own_peak_memory_not_its_parents() -> None:
    # The benchmarks hold a whole recording while they start each run's process; on
    # Linux ru_maxrss would carry this parent's peak into the child across exec.
    if not Path("/proc/self/status").is_file():
        pytest.skip("peak memory is read from Linux's /proc")
    child = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pipeline import peak_rss_mb; "
        "print(peak_rss_mb())"
    )
    ballast = bytearray(400 * 2**20)  # 400 MB, written: resident in this process
    ballast[::4096] = b"x" * len(ballast[::4096])
    done = subprocess.run(
        [sys.executable, "-c", child, str(ROOT / "bench")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert len(ballast) == 400 * 2**20
    assert 0 < float(done.stdout.strip()) < 200  # a bare interpreter with numpy: ~30 MB
