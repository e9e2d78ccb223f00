"""Benchmark: who said what on calls and meetings that look like real ones.

Recordings (cached under bench/out/calls-<set>/) are built from real speech in
../shared/testdata (LJ Speech, LibriSpeech, the conversational corpus clip) and from
sentences spoken by espeak-ng voices, each participant with its own level, line and
room, and with what breaks diarization:

* ``call-*``: two people taking turns with short gaps (0.05-0.6 s) and back-channels
  ("yeah", "right", "mm-hmm", "okay"; a short stretch of the listener's own speech for
  a real voice) in the gaps and over the other's speech; ``call-phone`` through a
  telephone line (300-3400 Hz at 8 kHz), ``call-quiet`` with one side 22-28 dB quieter
  and in a room;
* ``meeting-3``, ``meeting-4``, ``meeting-6``: three to six people in rooms (sox
  reverb), levels 0 to -20 dB apart, some cross-talk (a turn starting before the
  previous one ends) and back-channels, over room noise.

Two disjoint sets: ``--set dev`` (odd LJ clips, the other LibriSpeech clip, odd
sentences, its own espeak voices) is where the diarizer's settings are chosen;
``--set report`` (the default; even clips and sentences, other voices) is only measured.
The AMI excerpts stay in bench/diarize.py as a sanity check and are not used here.

For every recording: the words of postcall's real pipeline (``transcribe_media`` and
``assemble`` with the bundled tiny.en model, or ``WHISPER_MODEL``; cached next to the
recording), then each system's turns, scored by DER (missed speech, false alarm,
confusion; 0.25 s collar, overlaps per voice), the speaker count against the truth,
and the share of recognised words given to the right speaker (``speakers.attribute``
on the turns; hypothesis speakers mapped one-to-one onto the reference as DER maps
them; a word's true speaker is the reference turn that overlaps it most). Systems:
``diarize`` with today's defaults and ``diarize, before`` (the settings shipped before
this benchmark), each with the count estimated and given, and ``one speaker`` (the
reference speech as one speaker). Pooled rows sum errors over calls, meetings, all.
The table goes to stdout, then one JSON line (also bench/out/calls-<set>.json).
``--speaker-model PATH`` (and ``--speaker-features``) embeds with a local ONNX speaker
model instead of the bundled encoder, as ``POSTCALL_SPEAKER_MODEL`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import wave
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from meeting import SENTENCES  # noqa: E402  (a sibling)
from pipeline import (  # noqa: E402
    OUT,
    RATE,
    TESTDATA,
    default_model,
    document_words,
    load,
    transcribe_with_postcall,
)

from postcall.speakers import attribution as sp  # noqa: E402
from postcall.speakers import der as dm  # noqa: E402
from postcall.speakers import diarize as dz  # noqa: E402
from postcall.speakers.embedding import FEATURES, EmbedderConfig, load_embedder  # noqa: E402

Audio = npt.NDArray[np.float32]
Reference = list[tuple[float, float, str]]
Words = list[tuple[str, float, float]]

PARTS = ("missed", "false_alarm", "confusion")  # of DER
BACKCHANNELS = ("yeah", "right", "mm-hmm", "okay", "uh-huh", "sure", "I see")

# The diarizer's settings before this benchmark existed (average-linkage clustering at a
# fixed cosine threshold, no re-segmentation), kept for the before/after comparison.
BEFORE = dz.DiarizeOptions(clustering="ahc", vad_local_gain=False)


@dataclass(frozen=True)
class Voice:
    """A participant's voice: real clips (``clips``) or an espeak-ng voice."""

    name: str
    clips: tuple[str, ...] = ()
    espeak: str = ""
    pitch: int = 50
    speed: int = 165


def _lj(parity: int) -> tuple[str, ...]:
    return tuple(f"ljspeech/LJ001-{i:04d}.flac" for i in range(1, 33) if i % 2 == parity)


# Disjoint material: no clip, sentence or espeak voice is in both sets.
VOICES: dict[str, list[Voice]] = {
    "dev": [
        Voice("lj", _lj(1)),
        Voice("libri-1221", ("librispeech/1221-135766-0002.wav",)),
        Voice("corpus", ("voices/cold_corpus3.wav",)),
        Voice("us-m3", espeak="en-us+m3", pitch=40),
        Voice("f2", espeak="en+f2", pitch=60, speed=155),
        Voice("gb-m7", espeak="en-gb+m7", speed=185),
        Voice("scot-f4", espeak="en-gb-scotland+f4", pitch=55),
        Voice("us-m5", espeak="en-us+m5", pitch=35, speed=150),
    ],
    "report": [
        Voice("lj", _lj(0)),
        Voice("libri-1221", ("librispeech/1221-135766-0001.wav",)),
        Voice("libri-1089", ("librispeech/1089-134686-0001.wav", "jfk.flac")),
        Voice("us-m1", espeak="en-us+m1", pitch=45),
        Voice("f3", espeak="en+f3", pitch=65, speed=160),
        Voice("gb-m4", espeak="en-gb+m4", speed=180),
        Voice("rp-f1", espeak="en-gb-x-rp+f1", pitch=55),
        Voice("us-m6", espeak="en-us+m6", pitch=30, speed=150),
    ],
}


@dataclass(frozen=True)
class Recipe:
    """One recording: who (indices into the set's voices), how long, what conditions."""

    name: str
    voices: tuple[int, ...]
    seconds: float
    telephone: bool = False
    quiet_db: float = 0.0  # the last voice this much quieter than the others
    room: bool = False  # every voice through its own room
    level_spread_db: float = 4.0
    crosstalk: float = 0.0  # share of turns that start before the previous one ends
    backchannels: float = 0.3  # chance of a back-channel per turn of the other side


RECIPES = (
    Recipe("call-clean", (0, 3), 60),
    Recipe("call-phone", (1, 4), 60, telephone=True, level_spread_db=8),
    Recipe("call-quiet", (5, 2), 60, quiet_db=25, room=True),
    Recipe("call-espeak", (6, 7), 50, telephone=True),
    Recipe("meeting-3", (0, 4, 6), 75, room=True, level_spread_db=12, crosstalk=0.1),
    Recipe("meeting-4", (1, 3, 5, 7), 90, room=True, level_spread_db=16, crosstalk=0.12),
    Recipe(
        "meeting-6",
        (0, 1, 3, 4, 5, 6),
        100,
        room=True,
        level_spread_db=20,
        crosstalk=0.15,
        backchannels=0.15,
    ),
)
TINY = Recipe("call-tiny", (0, 3), 20)


@dataclass(frozen=True)
class Utterance:
    start: float
    end: float
    speaker: str
    kind: str  # "turn" or "backchannel"


class Material:
    """Utterances of each voice, made on demand and cycled: espeak sentences, real pieces."""

    def __init__(self, split: str, rng: random.Random) -> None:
        from tests import speech

        self.speech = speech
        self.rng = rng
        lines = SENTENCES.strip().splitlines()
        self.sentences = lines[0::2] if split == "report" else lines[1::2]
        self.queues: dict[str, list[Audio]] = {}
        self.real: dict[str, Audio] = {}

    def turn(self, voice: Voice) -> Audio:
        queue = self.queues.get(voice.name)
        if not queue:
            queue = self.queues[voice.name] = self._pieces(voice)
        return queue.pop(0)

    def _pieces(self, voice: Voice) -> list[Audio]:
        if voice.espeak:
            order = list(self.sentences)
            self.rng.shuffle(order)
            return [self._say(text, voice) for text in order[:6]]
        pieces = [p for clip in voice.clips for p in _cut(self._real(voice, clip), self.rng)]
        self.rng.shuffle(pieces)
        return pieces

    def _real(self, voice: Voice, clip: str) -> Audio:
        if clip not in self.real:
            self.real[clip] = self.speech.trim(load(TESTDATA / clip))
        return self.real[clip]

    def _say(self, text: str, voice: Voice) -> Audio:
        said: Audio = self.speech.say(text, voice.espeak, speed=voice.speed, pitch=voice.pitch)
        return said

    def backchannel(self, voice: Voice) -> Audio:
        if voice.espeak:
            return self._say(self.rng.choice(BACKCHANNELS), voice)
        # A real voice says no "yeah" on cue: a short stretch of its own speech stands in.
        clip = self._real(voice, self.rng.choice(voice.clips))
        length = int(self.rng.uniform(0.35, 0.7) * RATE)
        start = self.rng.randrange(0, max(1, clip.size - length))
        return self.speech.trim(clip[start : start + length].copy())


def _cut(audio: Audio, rng: random.Random) -> list[Audio]:
    """``audio`` cut at its quietest 10 ms near every 1.5-7 s."""
    n = audio.size // 160
    power = np.mean(np.square(audio[: n * 160].reshape(n, 160), dtype=np.float64), axis=1)
    pieces, start = [], 0
    while audio.size - start > 3 * RATE:
        target = start + int(rng.uniform(1.5, 7.0) * RATE)
        if target >= audio.size - RATE:
            break
        lo, hi = (target - int(0.4 * RATE)) // 160, (target + int(0.4 * RATE)) // 160
        cut = (lo + int(np.argmin(power[lo:hi]))) * 160 + 80
        pieces.append(audio[start:cut])
        start = cut
    pieces.append(audio[start:])
    return pieces


def build(split: str, recipe: Recipe, seed: int, out: Path) -> tuple[Path, list[Utterance]]:
    """Write (or reuse) a recording under ``out``; return its path and reference turns."""
    wav, sidecar = out / f"{recipe.name}-seed{seed}.wav", out / f"{recipe.name}-seed{seed}.json"
    if wav.exists() and sidecar.exists():
        return wav, [Utterance(**u) for u in json.loads(sidecar.read_text())["reference"]]
    rng = random.Random(f"{split}-{recipe.name}-{seed}")
    material = Material(split, rng)
    speech = material.speech
    voices = [VOICES[split][i] for i in recipe.voices]
    levels = {v.name: -3.0 - rng.uniform(0, recipe.level_spread_db) for v in voices}
    if recipe.quiet_db:
        levels[voices[-1].name] = -3.0 - recipe.quiet_db
    rooms = {v.name: rng.randint(30, 80) for v in voices}
    pieces: list[tuple[int, Audio]] = []
    reference: list[Utterance] = []

    def place(start_s: float, voice: Voice, audio: Audio, kind: str) -> float:
        audio = speech.trim(audio)
        if recipe.room:
            audio = speech.degrade(audio, room=rooms[voice.name])
        level = levels[voice.name] - (rng.uniform(0, 4) if kind == "backchannel" else 0.0)
        audio = speech.at_level(audio, level)
        start = max(0, round(start_s * RATE))
        pieces.append((start, audio))
        span = speech.trim(audio)  # the reverberant tail below -40 dB is not speech
        end = (start + span.size) / RATE
        reference.append(Utterance(round(start / RATE, 3), round(end, 3), voice.name, kind))
        return (start + audio.size) / RATE

    t, previous = 0.3, -1
    while t < recipe.seconds:
        if len(voices) == 2:  # calls alternate, with the odd second turn in a row
            who = 1 - previous if previous >= 0 and rng.random() < 0.85 else max(previous, 0)
        else:
            who = rng.choice([i for i in range(len(voices)) if i != previous])
        voice = voices[who]
        audio = material.turn(voice)
        if rng.random() < recipe.crosstalk and reference:
            start = t - rng.uniform(0.3, 1.0)
        elif len(voices) == 2:
            start = t + rng.uniform(0.05, 0.6)
        else:
            start = t + rng.choice([rng.uniform(0.1, 0.6), rng.uniform(0.5, 2.0)])
        end = place(start, voice, audio, "turn")
        length = end - start
        # Listeners' back-channels: over the turn (after its first second) or just after.
        listeners = [v for i, v in enumerate(voices) if i != who]
        if length > 2.0 and rng.random() < recipe.backchannels:
            at = start + rng.uniform(1.0, length - 0.8)
            place(at, rng.choice(listeners), material.backchannel(rng.choice(listeners)), "bc")
        t = end
        if rng.random() < recipe.backchannels / 2:
            who_bc = rng.choice(listeners)
            t = place(t + rng.uniform(0.1, 0.3), who_bc, material.backchannel(who_bc), "bc")
        previous = who
    total = max(s + a.size for s, a in pieces) + RATE // 2
    floor = -58.0 if recipe.room else -70.0
    mix = speech.noise(total / RATE, floor, seed=seed)
    for s, a in pieces:
        mix[s : s + a.size] += a
    if recipe.telephone:
        mix = speech.degrade(mix, telephone=True)
    out.mkdir(parents=True, exist_ok=True)
    tmp = wav.with_suffix(".part")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.clip(np.round(mix * 32768.0), -32768, 32767).astype("<i2").tobytes())
    tmp.replace(wav)
    reference.sort(key=lambda u: (u.start, u.end))
    sidecar.write_text(json.dumps({"reference": [asdict(u) for u in reference]}))
    return wav, reference


# ------------------------------------------------------------------------------- words


def words_of(wav: Path, model_dir: str) -> Words:
    """The words of postcall's pipeline on ``wav`` (cached next to it for this model)."""
    cache = wav.with_suffix(".words.json")
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached["model"] == model_dir:
            return [tuple(w) for w in cached["words"]]  # type: ignore[misc]
    from postcall import wiring
    from postcall.settings import Settings

    settings = Settings(whisper_model=model_dir)
    engine = _engine(settings, wiring)
    document, _ = transcribe_with_postcall(wav, engine, settings.resolved_chunk_max_s)
    words = document_words(document)
    cache.write_text(json.dumps({"model": model_dir, "words": words}))
    return words


_ENGINES: dict[str, Any] = {}


def _engine(settings: Any, wiring: Any) -> Any:
    if settings.whisper_model not in _ENGINES:
        _ENGINES[settings.whisper_model] = wiring.build_engine(settings)
    return _ENGINES[settings.whisper_model]


# ----------------------------------------------------------------------------- scoring


def mapping(reference: Reference, turns: list[dz.Turn]) -> dict[int, str]:
    """Hypothesis speaker → reference speaker, one-to-one, maximising common time."""
    ref_names = sorted({k for _, _, k in reference})
    hyp_ids = sorted({t.speaker for t in turns})
    gain = np.zeros((len(hyp_ids), len(ref_names)))
    for i, h in enumerate(hyp_ids):
        for j, r in enumerate(ref_names):
            for t in turns:
                if t.speaker != h:
                    continue
                for s, e, k in reference:
                    if k == r:
                        gain[i, j] += max(0.0, min(e, t.end) - max(s, t.start))
    return {hyp_ids[i]: ref_names[j] for i, j in dm._assignment(gain)} if gain.size else {}


def words_right(reference: Reference, turns: list[dz.Turn], words: Words) -> tuple[int, int]:
    """(words given to their true speaker, words that have a true speaker)."""
    from postcall.domain import Segment, Word

    names = mapping(reference, turns)
    segments = [Segment(s, e, text, (Word(s, e, text, 1.0),)) for text, s, e in words]
    attributed = sp.attribute(
        segments, [sp.Turn(t.start, t.end, str(t.speaker)) for t in turns], fallback="-1"
    )
    right = total = 0
    for segment in attributed:
        word = segment.words[0]
        overlaps = [(min(e, word.end) - max(s, word.start), k) for s, e, k in reference]
        best = max(overlaps, default=(0.0, ""))
        if best[0] <= 0:
            continue  # a word where nobody spoke: not counted
        total += 1
        right += names.get(int(segment.speaker or "-1"), "") == best[1]
    return right, total


def one_speaker(reference: Reference) -> list[dz.Turn]:
    return [dz.Turn(s, e, 0) for s, e in dm._union([(s, e) for s, e, _ in reference])]


# --------------------------------------------------------------------------------- run


def systems(
    audio: Audio, reference: Reference, encoder: Any
) -> list[tuple[str, list[dz.Turn], float]]:
    """(system, turns, seconds it took) for every system scored."""
    n = len({k for _, _, k in reference})
    out: list[tuple[str, list[dz.Turn], float]] = []
    for label, options in (("diarize", dz.DiarizeOptions()), ("diarize, before", BEFORE)):
        for suffix, count in (("", None), (", count given", n)):
            started = time.perf_counter()
            turns = dz.diarize(audio, num_speakers=count, encoder=encoder, options=options)
            out.append((label + suffix, turns, time.perf_counter() - started))
    out.append(("one speaker (ref speech)", one_speaker(reference), 0.0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="split", choices=["report", "dev"], default="report")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated recording names")
    parser.add_argument("--model", default=None, help="CTranslate2 model directory")
    parser.add_argument("--out", type=Path, default=None, help="where recordings are kept")
    parser.add_argument("--tiny", action="store_true", help="one 20-second call, kept nowhere")
    parser.add_argument(
        "--speaker-model",
        type=Path,
        default=None,
        help="a local ONNX speaker-embedding model instead of the bundled encoder "
        "(as POSTCALL_SPEAKER_MODEL)",
    )
    parser.add_argument(
        "--speaker-features",
        default="fbank80",
        choices=list(FEATURES),
        help="its input (as POSTCALL_SPEAKER_FEATURES)",
    )
    args = parser.parse_args()
    model_dir = args.model or default_model()
    speaker = EmbedderConfig(model_path=args.speaker_model, features=args.speaker_features)
    if args.tiny:
        with tempfile.TemporaryDirectory(prefix="postcall-calls-") as tmp:
            run("dev", [TINY], args.seed, Path(tmp), model_dir, write=False, speaker=speaker)
        return
    recipes = [r for r in RECIPES if not args.only or r.name in args.only.split(",")]
    out = args.out or OUT / f"calls-{args.split}"
    run(args.split, recipes, args.seed, out, model_dir, write=True, speaker=speaker)


def run(
    split: str,
    recipes: list[Recipe],
    seed: int,
    out: Path,
    model_dir: str,
    *,
    write: bool,
    speaker: EmbedderConfig | None = None,
) -> None:
    began = time.perf_counter()
    encoder = load_embedder(speaker)
    dz.speech_regions(np.zeros(RATE, np.float32))  # load the VAD before timing
    print(
        f"set: {split}  seed: {seed}  model: {model_dir}  speaker model: {encoder.model_id}  "
        f"cores: {os.cpu_count()}",
        flush=True,
    )
    header = (
        f"{'recording':12s} {'system':34s} {'DER':>6s} {'miss':>6s} {'FA':>6s} {'conf':>6s} "
        f"{'ref s':>6s} {'spk':>5s} {'words':>6s} {'x RT':>5s}"
    )
    print(header)
    print("-" * len(header))
    rows: list[dict[str, Any]] = []
    for recipe in recipes:
        wav, utterances = build(split, recipe, seed, out)
        audio = load(wav)
        reference: Reference = [(u.start, u.end, u.speaker) for u in utterances]
        words = words_of(wav, model_dir)
        n_ref = len({k for _, _, k in reference})
        duration = audio.size / RATE
        for system, turns, took in systems(audio, reference, encoder):
            score = dm.der(reference, turns, collar=0.25, uem=(0.0, duration))
            right, total = words_right(reference, turns, words)
            n_hyp = len({t.speaker for t in turns})
            row = {
                "recording": recipe.name,
                "system": system,
                "duration_s": round(duration, 1),
                **{k: round(v, 4) for k, v in score.items()},
                "ref_speakers": n_ref,
                "hyp_speakers": n_hyp,
                "words_right": right,
                "words": total,
            }
            rows.append(row)
            speed = f"{duration / took:5.1f}" if took else ""
            print(
                f"{recipe.name:12s} {system:34s} {100 * score['der']:5.1f}% "
                f"{score['missed']:6.2f} {score['false_alarm']:6.2f} {score['confusion']:6.2f} "
                f"{score['total']:6.1f} {n_hyp:>2d}/{n_ref:<2d} "
                f"{100 * right / max(total, 1):5.1f}% {speed}",
                flush=True,
            )
    pooled = pool(rows)
    print()
    print(
        f"{'pooled':8s} {'system':34s} {'DER':>6s} {'miss':>6s} {'FA':>6s} {'conf':>6s} "
        f"{'count exact':>11s} {'words right':>11s}"
    )
    for group, by_system in pooled.items():
        for system, p in by_system.items():
            print(
                f"{group:8s} {system:34s} {p['der_pct']:5.1f}% {p['missed_pct']:5.1f}% "
                f"{p['false_alarm_pct']:5.1f}% {p['confusion_pct']:5.1f}% "
                f"{p['count_exact']:>11s} {p['words_right_pct']:10.1f}%"
            )
    summary = {
        "bench": "calls",
        "set": split,
        "seed": seed,
        "collar": 0.25,
        "pooled": pooled,
        "rows": rows,
        "total_run_s": round(time.perf_counter() - began, 1),
    }
    line = json.dumps(summary)
    if write:
        (OUT / f"calls-{split}.json").write_text(line + "\n")
    print(line)


def pool(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per group (calls, meetings, all) and system: errors summed over summed speech."""
    pooled: dict[str, dict[str, dict[str, Any]]] = {}
    for group, prefix in (("calls", "call-"), ("meetings", "meeting-"), ("all", "")):
        pooled[group] = {}
        for system in dict.fromkeys(r["system"] for r in rows):
            mine = [r for r in rows if r["system"] == system and r["recording"].startswith(prefix)]
            if not mine:
                continue
            total = sum(r["total"] for r in mine)
            part = {k: sum(r[k] for r in mine) / max(total, 1e-9) for k in PARTS}
            exact = sum(r["hyp_speakers"] == r["ref_speakers"] for r in mine)
            words = sum(r["words_right"] for r in mine) / max(1, sum(r["words"] for r in mine))
            pooled[group][system] = {
                "der_pct": round(100 * sum(part.values()), 2),
                **{f"{k}_pct": round(100 * v, 2) for k, v in part.items()},
                "count_exact": f"{exact}/{len(mine)}",
                "words_right_pct": round(100 * words, 2),
            }
        if not pooled[group]:
            del pooled[group]
    return pooled


if __name__ == "__main__":
    main()
