"""Benchmark: one long meeting-like recording, postcall against plain faster-whisper.

The recording (at least 60 minutes, cached under bench/out/) is built as in
bench/pipeline.py: the English read-speech clips of ../shared/testdata in a seeded
random order with seeded random pauses of 0.3-3 s. In one run it measures, each in
processes of its own so that peak RSS belongs to that run alone:

(a) plain faster-whisper, sequential: ``WhisperModel.transcribe`` on the whole file,
    beam 5, its VAD filter, word timestamps;
(b) plain ``BatchedInferencePipeline.transcribe`` on the whole file (its VAD, 30 s
    windows, batch 8), beam 5, word timestamps;
(c) postcall with one ``postcall worker`` process;
(d) postcall with 2 and 4 ``postcall worker`` processes on the same one recording;
(e) every clip on its own (plain faster-whisper, sequential): the word error rate a
    perfect segmentation would give.

postcall runs the real thing: a SQLite store and a blob folder, the recording stored
and queued through the service, then ``postcall worker`` processes that run until
the transcript is finished; the clock runs from their start to its completion, the
model load included (about a second for tiny.en). Worker processes share the machine's
cores (POSTCALL_WHISPER_CPU_THREADS = cores / workers), so on a 2-core machine more
workers cannot finish sooner; what (d) shows here is the cost of the split: total
CPU seconds of all workers against one worker's. Speed is audio seconds per wall
second. The table goes to stdout and the figures as one JSON line (also to
bench/out/long.json).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import (  # a sibling script
    OUT,
    ROOT,
    TINY_CLIPS,
    build_recording,
    default_model,
    english_clips,
    measure,
    peak_rss_mb,
    usage,
)


def plain_batched(model_dir: str, path: str) -> dict[str, Any]:
    """(b), in this (child) process; the clock starts after the model loaded."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    threads = os.cpu_count() or 1
    model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads)
    batched = BatchedInferencePipeline(model)
    cpu, start = usage()[0], time.perf_counter()
    segments, _ = batched.transcribe(
        path, language="en", beam_size=5, word_timestamps=True, batch_size=8
    )
    text = " ".join(s.text.strip() for s in segments)
    wall = time.perf_counter() - start
    cpu_end, rss = usage()
    return {"text": text, "wall_s": wall, "cpu_s": cpu_end - cpu, "rss_mb": rss}


def postcall_workers(model_dir: str, wav: Path, workers: int) -> dict[str, Any]:
    """(c)/(d): store and queue the recording, then drain it with ``workers`` processes."""
    from postcall import wiring
    from postcall.domain import TranscriptionStatus
    from postcall.settings import Settings

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="postcall-bench-") as tmp:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "WHISPER_MODEL": model_dir,
            "STT_LANGUAGE": "en",
            "POSTCALL_DATA_DIR": tmp,
            "POSTCALL_WHISPER_CPU_THREADS": str(max(1, cores // workers)),
            "POSTCALL_WEBHOOK_DISPATCH": "false",
            "POSTCALL_LOG_LEVEL": "WARNING",
        }
        settings = Settings(data_dir=Path(tmp), whisper_model=model_dir)
        parts = wiring.build(settings, with_worker=False)
        with wav.open("rb") as fh:
            recording = parts.service.create_recording(
                "bench", fh, filename=wav.name, content_type="audio/wav"
            )
        job = parts.service.request_transcription("bench", recording.id, language="en")
        start = time.perf_counter()
        # Not --burst: a worker that starts while another one plans the split would find
        # nothing to claim yet and leave. They run until the transcript is finished.
        logs = [Path(tmp) / f"worker-{i}.log" for i in range(workers)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "postcall.cli", "worker"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log.open("wb"),
            )
            for log in logs
        ]
        deadline = time.monotonic() + 3 * 3600
        while True:
            status = parts.service.get_transcription("bench", job.id).status
            if status.terminal or time.monotonic() > deadline:
                break
            if any(p.poll() is not None for p in procs):
                break  # a worker died: reported below
            time.sleep(0.2)  # polling a store a few times a second; no event to wait on
        wall = time.perf_counter() - start
        cpu, peak = 0.0, 0.0
        for proc, log in zip(procs, logs, strict=True):
            if proc.returncode is not None:  # it ended on its own (and was reaped): a crash
                raise RuntimeError(f"worker failed: {log.read_text()[-2000:]}")
            live = peak_rss_mb(proc.pid)  # read while it lives (see peak_rss_mb)
            proc.send_signal(signal.SIGTERM)
            _, status_code, ru = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status_code)
            cpu += ru.ru_utime + ru.ru_stime
            peak = max(peak, ru.ru_maxrss / 1024 if live is None else live)
            if proc.returncode != 0:
                raise RuntimeError(f"worker failed: {log.read_text()[-2000:]}")
        done = parts.service.get_transcription("bench", job.id)
        if done.status is not TranscriptionStatus.COMPLETED:
            raise RuntimeError(f"transcription ended {done.status}: {done.error}")
        document = parts.service.load_document(done)
        parts.store.close()
        return {
            "text": document.text,
            "wall_s": wall,
            "cpu_s": cpu,
            "rss_mb": peak,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--workers", default="1,2,4", help="postcall worker counts")
    parser.add_argument("--model", default=None, help="CTranslate2 model directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-plain", action="store_true", help="skip (a) and (b)")
    parser.add_argument("--tiny", action="store_true", help="a 20-second check that it runs")
    parser.add_argument("--child", choices=["batched"], help=argparse.SUPPRESS)
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tiny:
        args.minutes, args.workers = 0.25, "1"
        os.environ["POSTCALL_BENCH_CLIPS"] = TINY_CLIPS
    model_dir = args.model or default_model()
    if args.child:
        print(json.dumps(plain_batched(model_dir, args.audio)), flush=True)
        return

    from tests.helpers import wer

    began = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    wav, names, seconds = build_recording(args.minutes, args.seed)
    refs = english_clips()
    reference = " ".join(refs[n] for n in names)
    print(
        f"model: {model_dir}  cores: {os.cpu_count()}  recording: {wav.relative_to(ROOT)} "
        f"({seconds / 60:.1f} min, {len(names)} clips)",
        flush=True,
    )
    clips = measure("clips", model_dir)
    ideal = 100 * wer(reference, " ".join(clips["texts"][n] for n in names))
    rows: list[dict[str, Any]] = []

    def add(label: str, got: dict[str, Any]) -> None:
        row = {
            "run": label,
            "x_real_time": round(seconds / got["wall_s"], 2),
            "wer_pct": round(100 * wer(reference, got["text"]), 2),
            "wer_gap_points": round(100 * wer(reference, got["text"]) - ideal, 2),
            "peak_rss_mb": round(got["rss_mb"], 1),
            "wall_s": round(got["wall_s"], 1),
            "cpu_s": round(got["cpu_s"], 1),
        }
        rows.append(row)
        print(f"  {row}", flush=True)

    if not args.skip_plain:
        add("(a) plain sequential", measure("plain", model_dir, wav))
        command = [sys.executable, __file__, "--child", "batched", "--model", model_dir]
        done = subprocess.run([*command, "--audio", str(wav)], check=True, capture_output=True)
        add("(b) plain batched", json.loads(done.stdout.decode().strip().splitlines()[-1]))
    for n in (int(w) for w in args.workers.split(",")):
        label = "(c) postcall, 1 worker" if n == 1 else f"(d) postcall, {n} workers"
        add(label, postcall_workers(model_dir, wav, n))

    print()
    print(
        f"{'run':<24} | {'x real time':>11} | {'WER %':>6} | {'gap pts':>7} | "
        f"{'peak RSS MB':>11} | {'wall s':>7} | {'CPU s':>7}"
    )
    print("-" * 90)
    for r in rows:
        print(
            f"{r['run']:<24} | {r['x_real_time']:>11.2f} | {r['wer_pct']:>6.2f} | "
            f"{r['wer_gap_points']:>+7.2f} | {r['peak_rss_mb']:>11.0f} | {r['wall_s']:>7.1f} | "
            f"{r['cpu_s']:>7.1f}"
        )
    print(f"{'(e) clip by clip':<24} | {'':>11} | {ideal:>6.2f} |")
    summary: dict[str, Any] = {
        "model": model_dir,
        "cores": os.cpu_count(),
        "minutes": round(seconds / 60, 2),
        "clip_by_clip_wer_pct": round(ideal, 2),
        "rows": rows,
    }
    by_run = {r["run"]: r for r in rows}
    one = by_run.get("(c) postcall, 1 worker")
    two = by_run.get("(d) postcall, 2 workers")
    if one and two:
        summary["cpu_2_workers_over_1"] = round(two["cpu_s"] / one["cpu_s"], 3)
        print(
            f"split overhead: 2 workers used {two['cpu_s']:.0f} CPU s against 1 worker's "
            f"{one['cpu_s']:.0f} ({100 * (two['cpu_s'] / one['cpu_s'] - 1):+.1f} %)"
        )
    summary["total_run_s"] = round(time.perf_counter() - began, 1)
    print(f"total run time: {summary['total_run_s']:.0f} s")
    line = json.dumps(summary)
    (OUT / ("long-tiny.json" if args.tiny else "long.json")).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
