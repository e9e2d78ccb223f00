"""Voiceprints: centroids and one-to-one matching (pure), and enrolment with the real
speaker encoder on real speech."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from postcall.domain import Voiceprint
from postcall.speakers import voiceprints as vp
from postcall.speakers.embedding import load_embedder
from postcall.store.sqlite import SqliteStore
from postcall.voiceprint_work import VoiceprintConfig, enrol_audio
from tests import media

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def vprint(pid: str, *values: float, model: str = "m1", seconds: float = 10.0) -> Voiceprint:
    return Voiceprint(
        id=f"vp_{pid}_{model}",
        tenant="t",
        participant_id=pid,
        name=pid.title(),
        embedding=tuple(float(x) for x in unit(*values)),
        model=model,
        seconds=seconds,
        source="sample",
        created_at=T0,
        updated_at=T0,
    )


def voice(*values: float, seconds: float = 20.0) -> vp.VoiceSample:
    return vp.VoiceSample(unit(*values), seconds)


def test_speakers_are_matched_one_to_one_best_pair_first() -> None:
    prints = [vprint("ann", 1, 0, 0), vprint("bob", 0, 1, 0)]
    speakers = {
        "spk0": voice(1, 0.1, 0),  # Ann, clearly
        "spk1": voice(1, 0.3, 0),  # also close to Ann, less so: does not take her twice
        "spk2": voice(0.05, 1, 0),  # Bob
    }
    found = vp.match(speakers, prints, model_id="m1", threshold=0.8)
    assert {k: m.voiceprint.participant_id for k, m in found.items()} == {
        "spk0": "ann",
        "spk2": "bob",
    }
    assert found["spk0"].similarity == pytest.approx(float(unit(1, 0.1, 0) @ unit(1, 0, 0)))


def test_below_the_threshold_a_voice_stays_unknown() -> None:
    prints = [vprint("ann", 1, 0, 0)]
    stranger = voice(1, 1, 0)  # cosine 0.707 with Ann
    assert vp.match({"spk0": stranger}, prints, model_id="m1", threshold=0.8) == {}
    assert set(vp.match({"spk0": stranger}, prints, model_id="m1", threshold=0.7)) == {"spk0"}


def test_only_prints_of_the_same_model_and_named_participants_match() -> None:
    prints = [vprint("ann", 1, 0, 0, model="other"), vprint("bob", 1, 0.05, 0)]
    speakers = {"spk0": voice(1, 0, 0)}
    assert vp.match(speakers, [prints[0]], model_id="m1") == {}
    assert vp.match(speakers, prints, model_id="m1")["spk0"].voiceprint.participant_id == "bob"
    assert vp.match(speakers, prints, model_id="m1", participant_ids=["ann"]) == {}
    # A print of another length (another encoder under a reused id) never matches.
    odd = [vprint("cy", 1, 0, 0, 0)]
    assert vp.match(speakers, odd, model_id="m1") == {}


def test_a_speaker_with_too_little_speech_is_not_matched() -> None:
    prints = [vprint("ann", 1, 0, 0)]
    short = {"spk0": voice(1, 0, 0, seconds=vp.MIN_MATCH_SPEECH_S - 0.5)}
    assert vp.match(short, prints, model_id="m1") == {}


def test_a_running_centroid_is_weighted_by_seconds() -> None:
    emb, seconds = vp.merged((1.0, 0.0), 30.0, (0.0, 1.0), 10.0)
    assert seconds == 40.0
    assert np.linalg.norm(emb) == pytest.approx(1.0)
    assert emb[0] / emb[1] == pytest.approx(3.0)
    fresh, s = vp.merged((1.0, 0.0, 0.0), 30.0, (0.0, 1.0), 10.0)  # another encoder
    assert fresh == (0.0, 1.0) and s == 10.0


def test_speech_and_speaker_regions() -> None:
    audio = np.arange(10 * vp.SAMPLE_RATE, dtype=np.float32)
    joined = vp.speech_of(audio, [(2.0, 3.0), (0.0, 1.0)], max_s=1.5)
    assert joined.size == int(1.5 * vp.SAMPLE_RATE) and joined[0] == 0.0
    regions = vp.speaker_regions([(0.0, 4.0, "a"), (4.0, 4.3, "a"), (5.0, 5.5, "b")])
    assert regions["a"] == [(0.15, 3.85)]  # edges trimmed, the short turn left out
    assert regions["b"] == [(5.0, 5.5)]  # only short turns: kept as they are


def test_enrolment_from_real_speech_is_refined_and_recognises_the_voice(
    testdata: Path, tmp_path: Path
) -> None:
    embedder = load_embedder()
    assert embedder.model_id == "resemblyzer-0.1.4"
    store = SqliteStore(tmp_path / "s.db")
    clips = [media.load_mono16k(testdata / f"ljspeech/LJ001-{i:04d}.flac") for i in (1, 3, 5)]
    config = VoiceprintConfig()

    def enrol(speech: np.ndarray) -> tuple[Voiceprint | None, str]:
        saved, note = enrol_audio(
            store,
            embedder,
            speech,
            tenant="t",
            participant_id="lj",
            name="Linda",
            source="sample",
            min_speech_s=config.min_speech_s,
        )
        return saved, note.outcome

    assert enrol(clips[0][: 3 * vp.SAMPLE_RATE]) == (None, "skipped")
    first, outcome = enrol(clips[0])
    assert outcome == "enrolled" and first is not None
    second, outcome = enrol(clips[1])
    assert outcome == "updated" and second is not None
    assert second.id == first.id and second.seconds == pytest.approx(
        (clips[0].size + clips[1].size) / vp.SAMPLE_RATE, abs=0.01
    )
    same = vp.embed_speech(embedder, clips[2], [(0.0, clips[2].size / vp.SAMPLE_RATE)])
    other_clip = media.load_mono16k(testdata / "jfk.flac")
    other = vp.embed_speech(embedder, other_clip, [(0.0, other_clip.size / vp.SAMPLE_RATE)])
    assert same is not None and other is not None
    found = vp.match({"same": same, "other": other}, [second], model_id=embedder.model_id)
    assert set(found) == {"same"}
    store.close()


def test_a_recording_enrolled_again_does_not_count_twice(testdata: Path, tmp_path: Path) -> None:
    """A retried enrolment job (or the recording transcribed once more) finds its own
    speech in the voiceprint already: nothing is merged again; a new recording is."""
    embedder = load_embedder()
    store = SqliteStore(tmp_path / "s.db")
    speech = media.load_mono16k(testdata / "ljspeech/LJ001-0001.flac")

    def enrol(source: str) -> tuple[Voiceprint | None, str]:
        saved, note = enrol_audio(
            store,
            embedder,
            speech,
            tenant="t",
            participant_id="lj",
            name="Linda",
            source=source,
            min_speech_s=5.0,
        )
        return saved, note.outcome

    first, outcome = enrol("recording:rec_1")
    assert outcome == "enrolled" and first is not None
    again, outcome = enrol("recording:rec_1")
    assert outcome == "skipped" and again == first
    held = store.find_voiceprint("t", "lj", embedder.model_id)
    assert held is not None and held.seconds == first.seconds
    later, outcome = enrol("recording:rec_2")
    assert outcome == "updated" and later is not None
    assert later.seconds == pytest.approx(2 * first.seconds)
    store.close()
