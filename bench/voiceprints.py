"""Benchmark: known voices named in diarized recordings (voiceprints).

Each scenario enrols two people from their own clean streams (as a separate-streams
recording with enrolment on does) and then diarizes a later mixed recording of those
two and a third, unknown person taking turns (gaps of 0.2-0.8 s), from other clips or
sentences of the same voices. The diarized speakers are matched to the voiceprints
(``postcall.speakers.voiceprints.match``) exactly as a diarize job does.

Voices are real (LJ Speech, LibriSpeech, the conversational corpus clip, JFK) and
espeak-ng voices. Two disjoint sets: ``--set dev`` (odd LJ clips, LibriSpeech
1221-135766-0002 and the corpus clip, odd sentences, its own espeak voices) is where
the threshold (``DEFAULT_THRESHOLD``) was chosen; ``--set report`` (even LJ clips,
LibriSpeech 1221-135766-0001 and 1089-134686-0001, JFK, even sentences, other espeak
voices) is only measured. The e2e test (tests/e2e/test_voiceprints_e2e.py) uses
report-set material.

Printed: the cosine similarity of every diarized speaker with every voiceprint, split
into true pairs (the speaker is mostly that participant) and impostor pairs; with
``--set dev`` the threshold that separates them (the midpoint of the gap, or, when they
overlap, the value with the fewest errors, a false name counted twice); and at the
threshold in use (``--threshold``, default ``DEFAULT_THRESHOLD``): the share of the
enrolled people's speech under their own name, and of the unknown person's speech
under an enrolled name. One JSON line at the end (also bench/out/voiceprints-<set>.json).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calls import Voice, _lj  # noqa: E402  (siblings)
from meeting import SENTENCES  # noqa: E402
from pipeline import OUT, TESTDATA, load  # noqa: E402

from postcall.speakers import diarize as dz  # noqa: E402
from postcall.speakers import voiceprints as vp  # noqa: E402
from postcall.speakers.embedding import SpeakerEmbedder, load_embedder  # noqa: E402

Audio = npt.NDArray[np.float32]
RATE = 16000


VOICES: dict[str, list[Voice]] = {
    "dev": [
        Voice("lj", _lj(1)),
        Voice("libri-1221", ("librispeech/1221-135766-0002.wav",)),
        Voice("corpus", ("voices/cold_corpus3.wav",)),
        Voice("us-m3", espeak="en-us+m3", pitch=40),
        Voice("f2", espeak="en+f2", pitch=60, speed=155),
        Voice("scot-f4", espeak="en-gb-scotland+f4", pitch=55),
    ],
    "report": [
        Voice("lj", _lj(0)),
        Voice("libri-1221", ("librispeech/1221-135766-0001.wav",)),
        Voice("libri-1089", ("librispeech/1089-134686-0001.wav",)),
        Voice("jfk", ("jfk.flac",)),
        Voice("us-m1", espeak="en-us+m1", pitch=45),
        Voice("f3", espeak="en+f3", pitch=65, speed=160),
    ],
}
# Who is enrolled (the first two) and who is unknown (the third), per scenario.
SCENARIOS: dict[str, list[tuple[int, int, int]]] = {
    "dev": [(0, 1, 2), (0, 3, 4), (1, 4, 0), (2, 5, 3), (3, 0, 5), (4, 2, 1)],
    "report": [(0, 1, 3), (0, 4, 2), (1, 5, 0), (4, 0, 5), (5, 1, 4), (0, 2, 3)],
}
ENROL_S = 8.0  # seconds of each enrolled voice's speech used to enrol it


def pieces(voice: Voice, split: str, rng: random.Random) -> list[Audio]:
    """A voice's utterances: its clips cut at pauses, or espeak-ng sentences."""
    from tests import speech

    if voice.espeak:
        lines = SENTENCES.strip().splitlines()
        lines = lines[0::2] if split == "report" else lines[1::2]
        rng.shuffle(lines)
        return [
            speech.say(t, voice.espeak, speed=voice.speed, pitch=voice.pitch) for t in lines[:8]
        ]
    out: list[Audio] = []
    for clip in voice.clips:
        audio = speech.trim(load(TESTDATA / clip))
        step = int(rng.uniform(2.5, 5.0) * RATE)
        out += [audio[i : i + step] for i in range(0, audio.size, step) if audio.size - i > RATE]
    return out


def split_enrolment(utterances: list[Audio]) -> tuple[Audio, list[Audio]]:
    """The first ``ENROL_S`` of a voice for its enrolment stream, the rest for the mix."""
    enrol: list[Audio] = []
    while utterances and sum(u.size for u in enrol) < ENROL_S * RATE:
        enrol.append(utterances.pop(0))
        enrol.append(np.zeros(int(0.3 * RATE), np.float32))
    return np.concatenate(enrol), utterances


def scenario(
    split: str, which: tuple[int, int, int], seed: int
) -> tuple[dict[str, Audio], Audio, list[tuple[float, float, str]]]:
    """Enrolment streams of the first two voices; a mix of all three with its turns."""
    rng = random.Random(f"{split}-{which}-{seed}")
    voices = [VOICES[split][i] for i in which]
    material = {v.name: pieces(v, split, rng) for v in voices}
    streams = {}
    for v in voices[:2]:
        streams[v.name], material[v.name] = split_enrolment(material[v.name])
    mix: list[Audio] = []
    truth: list[tuple[float, float, str]] = []
    t, previous = 0.0, ""
    budget = {v.name: 4 for v in voices}  # turns per voice in the mix
    while any(budget.values()):
        options = [n for n, left in budget.items() if left and n != previous and material[n]]
        if not options:
            options = [n for n, left in budget.items() if left and material[n]]
            if not options:
                break
        who = rng.choice(options)
        budget[who] -= 1
        piece = material[who].pop(0)
        gap = np.zeros(int(rng.uniform(0.2, 0.8) * RATE), np.float32)
        mix += [gap, piece]
        t += gap.size / RATE
        truth.append((t, t + piece.size / RATE, who))
        t += piece.size / RATE
        previous = who
    return streams, np.concatenate(mix), truth


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def run_scenario(
    split: str, which: tuple[int, int, int], seed: int, embedder: SpeakerEmbedder
) -> dict[str, Any]:
    from datetime import UTC, datetime

    from postcall.domain import Voiceprint

    streams, mix, truth = scenario(split, which, seed)
    opts = dz.DiarizeOptions()
    prints = []
    for name, audio in streams.items():
        regions = dz.speech_regions(
            audio,
            threshold=opts.vad_threshold,
            highpass_hz=opts.highpass_hz,
            peak_dbfs=opts.vad_peak_dbfs,
            local_gain=opts.vad_local_gain,
        )
        sample = vp.embed_speech(embedder, audio, regions)
        assert sample is not None
        now = datetime.now(UTC)
        prints.append(
            Voiceprint(
                f"vp_{name}",
                "t",
                name,
                name,
                tuple(float(x) for x in sample.embedding),
                embedder.model_id,
                sample.seconds,
                "bench",
                now,
                now,
            )
        )
    turns = dz.diarize(mix)
    labelled = [(t.start, t.end, f"spk{t.speaker}") for t in turns]
    samples = {}
    for label, regions in vp.speaker_regions(labelled).items():
        sample = vp.embed_speech(embedder, mix, regions)
        if sample is not None:
            samples[label] = sample
    pairs = []
    for label, sample in samples.items():
        mine = [(a, b) for a, b, s in labelled if s == label]
        held: dict[str, float] = {}
        for a, b, who in truth:
            held[who] = held.get(who, 0.0) + sum(overlap((a, b), m) for m in mine)
        mostly = max(held, key=lambda k: held[k])
        for p in prints:
            sim = float(np.dot(sample.embedding, np.asarray(p.embedding, np.float32)))
            pairs.append(
                {
                    "speaker": label,
                    "seconds": sample.seconds,
                    "truth": mostly,
                    "print": p.participant_id,
                    "similarity": sim,
                    "same": mostly == p.participant_id,
                }
            )
    return {
        "voices": [VOICES[split][i].name for i in which],
        "truth": truth,
        "turns": labelled,
        "samples": samples,
        "prints": prints,
        "pairs": pairs,
        "model": embedder.model_id,
    }


def named_shares(result: dict[str, Any], threshold: float) -> tuple[float, float, float, float]:
    """(enrolled speech under its own name, enrolled speech in all; unknown speech under
    an enrolled name, unknown speech in all), in seconds."""
    found = vp.match(
        result["samples"], result["prints"], model_id=result["model"], threshold=threshold
    )
    names = {label: m.voiceprint.participant_id for label, m in found.items()}
    enrolled = {p.participant_id for p in result["prints"]}
    right = total = wrong = unknown = 0.0
    for a, b, who in result["truth"]:
        for ta, tb, label in result["turns"]:
            share = overlap((a, b), (ta, tb))
            if not share:
                continue
            if who in enrolled:
                right += share if names.get(label) == who else 0.0
            elif names.get(label) is not None:
                wrong += share
        if who in enrolled:
            total += b - a
        else:
            unknown += b - a
    return right, total, wrong, unknown


def choose_threshold(pairs: list[dict[str, Any]]) -> float:
    same = sorted(p["similarity"] for p in pairs if p["same"])
    other = sorted(p["similarity"] for p in pairs if not p["same"])
    if not same or not other:
        return vp.DEFAULT_THRESHOLD
    if other[-1] < same[0]:
        return round((other[-1] + same[0]) / 2, 3)
    best, best_cost = vp.DEFAULT_THRESHOLD, float("inf")
    for cut in np.arange(0.5, 0.95, 0.005):
        cost = sum(s < cut for s in same) + 2 * sum(o >= cut for o in other)
        if cost < best_cost:
            best, best_cost = float(cut), cost
    return round(best, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("dev", "report"), default="report")
    parser.add_argument("--threshold", type=float, default=vp.DEFAULT_THRESHOLD)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="one scenario, a few seconds")
    args = parser.parse_args()
    embedder = load_embedder()
    runs = [(which, seed) for seed in range(args.seeds) for which in SCENARIOS[args.set]][
        : 1 if args.tiny else None
    ]
    started = time.monotonic()
    results = [run_scenario(args.set, which, seed, embedder) for which, seed in runs]
    pairs = [p for r in results for p in r["pairs"]]
    same = sorted(round(p["similarity"], 3) for p in pairs if p["same"])
    other = sorted(round(p["similarity"], 3) for p in pairs if not p["same"])
    print(f"set {args.set}: {len(results)} scenarios, {time.monotonic() - started:.0f} s")
    print(f"true pairs ({len(same)}): {same}")
    print(f"impostor pairs ({len(other)}): {other}")
    chosen = choose_threshold(pairs)
    if args.set == "dev":
        print(f"threshold that separates them on this set: {chosen}")
    right = total = wrong = unknown = 0.0
    print(f"\nat threshold {args.threshold}:")
    print("| voices (enrolled, enrolled, unknown) | own name | unknown named |")
    print("|---|---|---|")
    for r in results:
        a, b, c, d = named_shares(r, args.threshold)
        right, total, wrong, unknown = right + a, total + b, wrong + c, unknown + d
        print(f"| {', '.join(r['voices'])} | {a / b:.1%} | {c / max(d, 1e-9):.1%} |")
    print(f"| pooled | {right / total:.1%} | {wrong / max(unknown, 1e-9):.1%} |")
    summary = {
        "set": args.set,
        "threshold": args.threshold,
        "separating_threshold": chosen,
        "true_pairs": same,
        "impostor_pairs": other,
        "own_name_share": right / total,
        "unknown_named_share": wrong / max(unknown, 1e-9),
    }
    if not args.tiny:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"voiceprints-{args.set}.json").write_text(json.dumps(summary))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
