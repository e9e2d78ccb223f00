"""Benchmark: a meeting that contains the audio that breaks transcription pipelines.

The recording (cached under bench/out/) is built from real speech in ../shared/testdata
(read speech, a conversational corpus clip, falsetto, breathy, laughing and hesitant
voices, crowd-sourced one-word clips) and from sentences spoken by espeak-ng voices,
whispered and creaky ones included, each participant through its own conditions:

* levels spread from 0 to -40 dBFS peak (a remote participant on a bad microphone is
  40 dB below the one next to the recorder);
* a telephone line (300-3400 Hz at 8 kHz) and rooms (sox reverb);
* pauses of 0.2-0.5 s between a third of the turns, up to 3 s elsewhere, and a little
  cross-talk (a turn that starts before the previous one ends);
* a low noise floor (-75 dBFS) under everything.

Two disjoint sets: ``--set dev`` (its own sentences and half of the real clips) is the
one to try ideas on; ``--set report`` (the default) is the one whose figures are
reported. Nothing is tuned on the report set. A fixed ``--seed`` gives the same file.

In one run, each in a process of its own (so peak RSS is that run's alone), with the
same model, int8 on the CPU, language "en", beam 5, word timestamps:

(o) every turn transcribed alone at its level (plain faster-whisper, no VAD): the
    oracle, what a perfect segmentation would give;
(a) plain faster-whisper, sequential, its VAD filter;
(b) plain ``BatchedInferencePipeline``, batch 8;
(c) postcall (``transcribe_media`` + ``assemble``, as ``postcall transcribe`` runs it).

For each: WER against the whole reference; turns of at least 2 s with no word recognised
(no reference word of the turn matched), and turns of at least 2 s with no word in them
at all (dropped: a turn counted in the first but not here was heard and misread, one
counted here but not in the first had its words put outside it); the share of recognised
words that lie inside their own turn (within 0.5 s); speed (audio s per wall s, the
model loaded before the clock starts) and peak RSS. Plain batched and postcall, whose
speeds are compared, are timed ``--repeats`` times (5), taking turns, and their median
times are reported with each run's ratio beside the medians' (the machine's speed drifts
by 10-20 % between runs). The table goes to stdout, the figures as one JSON line (also
to bench/out/meeting-<set>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import (  # a sibling
    OUT,
    RATE,
    TESTDATA,
    default_model,
    document_words,
    load,
    transcribe_with_postcall,
    usage,
)

# Sentences for the synthetic voices: even lines for the report set, odd ones for dev.
SENTENCES = """\
Can everyone hear me, or should I move closer to the microphone?
Let's start with the numbers from the last quarter before we talk about hiring.
The migration finished on Tuesday night without any data loss.
I think we should push the release by one week to fix the login bug.
Our biggest customer asked for a discount on the annual contract.
Please send me the slides after the call so I can review them.
The new office opens in March, and the lease is signed for five years.
We lost about ten percent of the traffic when the cache went down.
Could you repeat the last part? The line was breaking up.
The budget for marketing stays the same as last year.
I will follow up with the legal team about the privacy policy.
Sales in the northern region grew faster than we expected.
Who is going to own the onboarding project from now on?
The test suite takes forty minutes, which is far too slow.
My connection is bad today, so I will turn off my camera.
We need two more engineers on the payments team before summer.
The design review is moved to Thursday afternoon at three.
Support tickets doubled after the price change in January.
I agree with the plan, but the timeline looks very tight to me.
The vendor promised a fix by the end of the month.
Let's take the rest of this discussion offline and move on.
The dashboard shows the error rate falling since the last deploy.
Does anyone have questions before we wrap up the meeting?
Thanks everyone, I will send the notes and the action items today.
The warehouse in Denver is running out of space for the new stock.
We should ask the customers what they think before we build it.
The contract renewal is due in six weeks, so we must start now.
I missed the first ten minutes, could somebody give me a quick summary?
The server bill went up because we forgot to turn off the old machines.
Let me share my screen and walk you through the proposal.
Our hiring pipeline has twelve candidates in the final round.
The audit found three problems with how we store passwords.
Can we get a decision on the pricing page by Friday?
The mobile app crashes on older phones when the battery is low.
I would rather ship a smaller feature on time than a big one late.
The training session for the new managers starts next Monday.
Revenue from the partner program covered the cost of the team.
We still have not heard back from the bank about the loan.
The interview panel liked her answers on system design.
Let's schedule a follow up call with the product team next week.
"""

# Each participant: where their voice comes from and what the line does to it.
# source "real" takes the next real clip; otherwise it is an espeak-ng voice.


@dataclass(frozen=True)
class Participant:
    name: str
    source: str  # "real" or an espeak-ng voice
    levels: tuple[float, float]  # peak dBFS range
    telephone: bool = False
    room: int = 0
    speed: int = 165


PARTICIPANTS = (
    Participant("near", "real", (-1, -6)),
    Participant("phone", "real", (-8, -14), telephone=True),
    Participant("room", "en-us+m3", (-12, -20), room=70),
    Participant("remote-quiet", "en+f2", (-34, -40), speed=150),
    Participant("whisperer", "en+whisper", (-10, -20), speed=140),
    Participant("creaky-phone", "en+croak", (-22, -30), telephone=True),
    Participant("far-real", "real", (-30, -40), room=40),
    Participant("fast", "en-gb+m7", (-3, -10), speed=200),
)


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: str
    text: str
    source: str
    level_dbfs: float


def real_clips(split: str) -> dict[str, str]:
    """Reference text by manifest name of the English clips with a transcript, halved:
    the report set and the dev set never share a clip."""
    clips: dict[str, str] = {}
    with (TESTDATA / "manifest.jsonl").open() as fh:
        for line in fh:
            entry = json.loads(line)
            name = entry["audio"]
            if entry.get("language") != "en" or "channel_texts" in entry:
                continue
            if not name.startswith(("jfk", "librispeech/", "ljspeech/", "voices/")):
                continue
            clips[name] = _reference(str(entry["text"]))
    names = sorted(clips)
    keep = names[0::2] if split == "report" else names[1::2]
    return {n: clips[n] for n in keep}


def _reference(text: str) -> str:
    """A manifest text as words that were spoken: no [laughter], <hes-forced> → forced."""
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"<hes-([^>]*)>", r"\1", text)
    return " ".join(text.split())


def build(split: str, minutes: float, seed: int, out: Path = OUT) -> tuple[Path, list[Turn]]:
    """Write (or reuse) the meeting under ``out``; return its path and its turns."""
    from tests import speech

    stem = f"hard_{split}_{minutes:g}min_seed{seed}"
    wav, sidecar = out / f"{stem}.wav", out / f"{stem}.json"
    if wav.exists() and sidecar.exists():
        return wav, [Turn(**t) for t in json.loads(sidecar.read_text())["turns"]]
    rng = random.Random(f"{split}-{seed}")
    reals = real_clips(split)
    real_audio = {n: speech.trim(load(TESTDATA / n)) for n in reals}
    real_order: list[str] = []
    lines = SENTENCES.strip().splitlines()
    sentences = lines[0::2] if split == "report" else lines[1::2]
    sentence_order: list[str] = []
    target = minutes * 60
    turns: list[Turn] = []
    pieces: list[tuple[int, np.ndarray]] = []
    t, previous = 0.0, ""
    while t < target:
        who = rng.choice([p for p in PARTICIPANTS if p.name != previous])
        previous = who.name
        if who.source == "real":
            if not real_order:
                real_order = sorted(reals)
                rng.shuffle(real_order)
            source = real_order.pop()
            text, samples = reals[source], real_audio[source]
        else:
            if not sentence_order:
                sentence_order = list(sentences)
                rng.shuffle(sentence_order)
            text = sentence_order.pop()
            source = who.source
            samples = speech.say(text, who.source, speed=who.speed)
        level = rng.uniform(*who.levels)
        samples = speech.degrade(samples, telephone=who.telephone, room=who.room)
        samples = speech.at_level(speech.trim(samples), level)
        if turns:
            r = rng.random()
            if r < 0.08 and turns[-1].end - turns[-1].start >= 2.0:  # cross-talk
                t = turns[-1].end - rng.uniform(0.2, 0.6)
            elif r < 0.4:
                t = turns[-1].end + rng.uniform(0.2, 0.5)
            else:
                t = turns[-1].end + rng.uniform(0.5, 3.0)
        start = round(t * RATE)
        pieces.append((start, samples))
        end = (start + samples.size) / RATE
        turns.append(Turn(start / RATE, end, who.name, text, source, round(level, 1)))
        t = end
    total = max(s + a.size for s, a in pieces) + RATE
    mix = speech.noise(total / RATE, -75.0, seed=seed)
    for s, a in pieces:
        mix[s : s + a.size] += a
    out.mkdir(parents=True, exist_ok=True)
    tmp = wav.with_suffix(".part")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.clip(np.round(mix * 32768.0), -32768, 32767).astype("<i2").tobytes())
    tmp.replace(wav)
    sidecar.write_text(json.dumps({"turns": [asdict(x) for x in turns]}))
    return wav, turns


# ------------------------------------------------------------------------------ runs

Words = list[tuple[str, float, float]]


def child(kind: str, model_dir: str, path: str, turns_file: str | None) -> dict[str, Any]:
    """One run in this (child) process; the clock starts after the model loaded."""
    threads = os.cpu_count() or 1
    got: dict[str, Any] = {}
    words: Words = []
    if kind == "postcall":
        from postcall import wiring
        from postcall.settings import Settings

        settings = Settings(whisper_model=model_dir)
        engine = wiring.build_engine(settings)
        engine.load()  # type: ignore[attr-defined]
        cpu, start = usage()[0], time.perf_counter()
        document, _ = transcribe_with_postcall(path, engine, settings.resolved_chunk_max_s)
        words = document_words(document)
    else:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads)
        common: dict[str, Any] = {"language": "en", "beam_size": 5, "word_timestamps": True}
        cpu, start = usage()[0], time.perf_counter()
        if kind == "plain":
            segments, _ = model.transcribe(path, vad_filter=True, **common)
        elif kind == "batched":
            segments, _ = BatchedInferencePipeline(model).transcribe(path, batch_size=8, **common)
        else:  # "oracle": every turn alone, cut from the recording itself (cross-talk too)
            assert turns_file is not None
            samples = load(Path(path))
            out = []
            for turn in json.loads(Path(turns_file).read_text())["turns"]:
                a, b = round(turn["start"] * RATE), round(turn["end"] * RATE)
                segs, _ = model.transcribe(samples[a:b], vad_filter=False, **common)
                out += [(w, turn["start"]) for s in segs for w in (s.words or ())]
            segments = []
            words = [(w.word.strip(), w.start + t0, w.end + t0) for w, t0 in out]
        for s in segments:
            words += [(w.word.strip(), w.start, w.end) for w in (s.words or ())]
    got["wall_s"] = time.perf_counter() - start
    cpu_end, got["rss_mb"] = usage()
    got["cpu_s"] = cpu_end - cpu
    got["words"] = words
    return got


def measure(kind: str, model_dir: str, wav: Path, turns_file: Path) -> dict[str, Any]:
    """Run ``child`` in a fresh interpreter and return what it printed (its last line)."""
    command = [sys.executable, __file__, "--child", kind, "--model", model_dir]
    command += ["--audio", str(wav), "--turns", str(turns_file)]
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# The runs whose speeds the acceptance compares; ``--repeats`` times each, in turns.
TIMED_AGAIN = ("batched", "postcall")

# --------------------------------------------------------------------------- scoring


def score(turns: list[Turn], words: Words, *, margin: float = 0.5) -> dict[str, Any]:
    """WER, turns of >= 2 s with no word matched and those with no word recognised in
    them at all, and the share of matched words that lie inside their own turn (within
    ``margin`` s), from one alignment of the words to the reference turns."""
    from tests.helpers import score_turns

    got = score_turns([(t.start, t.end, t.text) for t in turns], words, margin=margin)
    long_turns = [i for i, t in enumerate(turns) if t.end - t.start >= 2.0]
    return {
        "wer_pct": round(100 * got.wer, 2),
        "words_out": got.words_out,
        "empty_turns": [i for i in long_turns if got.hits[i] == 0],
        # the turns with no word recognised in them at all: dropped, not misread
        "silent_turns": [i for i in long_turns if got.said[i] == 0],
        "long_turns": len(long_turns),
        "inside_pct": round(100 * got.inside, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="split", choices=["report", "dev"], default="report")
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="CTranslate2 model directory")
    parser.add_argument("--runs", default="oracle,plain,batched,postcall")
    parser.add_argument("--out", type=Path, default=OUT, help="where the meeting is kept")
    parser.add_argument("--child", choices=["oracle", "plain", "batched", "postcall"])
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    parser.add_argument("--turns", help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help="a 20-second meeting, kept nowhere")
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="times plain batched and postcall are timed, in turns (medians reported)",
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    model_dir = args.model or default_model()
    if args.child:
        print(json.dumps(child(args.child, model_dir, args.audio, args.turns)), flush=True)
        return
    if args.tiny:
        args.split, args.minutes, args.runs = "dev", 0.33, "oracle,batched,postcall"
        args.repeats = 1
        if args.out == OUT:
            with tempfile.TemporaryDirectory(prefix="postcall-meeting-") as tmp:
                args.out = Path(tmp)
                run(args, model_dir)
            return
    run(args, model_dir)


def run(args: argparse.Namespace, model_dir: str) -> None:

    began = time.perf_counter()
    wav, turns = build(args.split, args.minutes, args.seed, args.out)
    seconds = max(t.end for t in turns)
    turns_file = wav.with_suffix(".json")
    levels = [t.level_dbfs for t in turns]
    print(
        f"model: {model_dir}  cores: {os.cpu_count()}  set: {args.split}  seed: {args.seed}\n"
        f"recording: {wav} ({seconds / 60:.1f} min, {len(turns)} turns "
        f"of {len({t.speaker for t in turns})} participants, peaks {max(levels):.0f} to "
        f"{min(levels):.0f} dBFS)",
        flush=True,
    )
    labels = {
        "oracle": "(o) each turn alone",
        "plain": "(a) plain sequential",
        "batched": "(b) plain batched",
        "postcall": "(c) postcall",
    }
    kinds = args.runs.split(",")
    results = {kind: [measure(kind, model_dir, wav, turns_file)] for kind in kinds}
    # The machine is shared and its speed drifts: the runs whose speeds are compared
    # are timed again, taking turns, and each one's median is reported.
    for _ in range(args.repeats - 1):
        for kind in (k for k in kinds if k in TIMED_AGAIN):
            results[kind].append(measure(kind, model_dir, wav, turns_file))
    rows: list[dict[str, Any]] = []
    oracle_empty: set[int] = set()
    for kind in kinds:
        got = results[kind][0]
        walls = [r["wall_s"] for r in results[kind]]
        wall = float(np.median(walls))
        row: dict[str, Any] = {"run": labels[kind], **score(turns, got["words"])}
        row.update(
            x_real_time=round(seconds / wall, 2),
            peak_rss_mb=round(max(r["rss_mb"] for r in results[kind]), 1),
            wall_s=round(wall, 1),
            cpu_s=round(float(np.median([r["cpu_s"] for r in results[kind]])), 1),
            wall_s_each=[round(w, 1) for w in walls],
        )
        if kind == "oracle":
            oracle_empty = set(row["empty_turns"])
        row["empty_where_oracle_heard"] = len(set(row["empty_turns"]) - oracle_empty)
        # and the other way round: misread turns are chance, on either side
        row["heard_where_oracle_empty"] = len(oracle_empty - set(row["empty_turns"]))
        rows.append(row)
        print(f"  {row['run']}: {json.dumps({k: v for k, v in row.items() if k != 'run'})}")
    print()
    print(
        f"{'run':<22} | {'WER %':>6} | {'empty turns >=2 s':>17} | {'no word out':>11} | "
        f"{'inside turn %':>13} | {'x real time':>11} | {'peak RSS MB':>11}"
    )
    print("-" * 110)
    for r in rows:
        empty = f"{len(r['empty_turns'])}/{r['long_turns']} ({r['empty_where_oracle_heard']})"
        print(
            f"{r['run']:<22} | {r['wer_pct']:>6.2f} | {empty:>17} | {len(r['silent_turns']):>11} | "
            f"{r['inside_pct']:>13.2f} | {r['x_real_time']:>11.2f} | {r['peak_rss_mb']:>11.0f}"
        )
    print(
        "(empty turns: of the turns of >= 2 s, those with no reference word matched; in "
        "brackets, those the oracle heard; no word out: turns of >= 2 s with no word "
        "recognised in them at all)"
    )
    if oracle_empty:
        for r in (r for r in rows if r["run"] != labels["oracle"]):
            print(
                f"{r['run']}: of the {len(oracle_empty)} turns the oracle matched no word of, "
                f"{r['heard_where_oracle_empty']} matched here"
            )
    by = {r["run"]: r for r in rows}
    summary: dict[str, Any] = {
        "set": args.split,
        "seed": args.seed,
        "minutes": round(seconds / 60, 2),
        "turns": len(turns),
        "rows": rows,
    }
    if labels["postcall"] in by and labels["batched"] in by:
        ratio = by[labels["postcall"]]["x_real_time"] / by[labels["batched"]]["x_real_time"]
        summary["postcall_speed_over_batched"] = round(ratio, 3)
        each = [
            b / p
            for b, p in zip(
                by[labels["batched"]]["wall_s_each"],
                by[labels["postcall"]]["wall_s_each"],
                strict=True,
            )
        ]
        summary["postcall_speed_over_batched_each"] = [round(r, 3) for r in each]
        print(
            f"postcall speed / plain batched: {ratio:.2f} (medians of {len(each)} runs each; "
            f"run by run {', '.join(f'{r:.2f}' for r in each)})"
        )
    summary["total_run_s"] = round(time.perf_counter() - began, 1)
    print(f"total run time: {summary['total_run_s']:.0f} s")
    line = json.dumps(summary)
    (args.out / f"meeting-{args.split}.json").write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
