"""postcall.audio: probing, decoding and splitting real media files (made with PyAV)."""

from __future__ import annotations

import fractions
import itertools
import json
import logging
import os
import struct
import tracemalloc
import zlib
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest
from av.audio.stream import AudioStream
from av.video.stream import VideoStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postcall import errors
from postcall.audio import SAMPLE_RATE, Chunk, decode, probe, split_at_silences

SR = SAMPLE_RATE
Audio = npt.NDArray[np.float32]

TESTDATA = Path(
    os.environ.get("POSTCALL_TESTDATA", Path(__file__).resolve().parents[3] / "shared" / "testdata")
)
MANIFEST = (
    [json.loads(line) for line in (TESTDATA / "manifest.jsonl").read_text().splitlines() if line]
    if (TESTDATA / "manifest.jsonl").exists()
    else []
)
needs_testdata = pytest.mark.skipif(not MANIFEST, reason=f"no test data at {TESTDATA}")


# --- making media with PyAV --------------------------------------------------------


def tone(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.5) -> Audio:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _add_audio(
    container: av.container.OutputContainer, codec: str, rate: int, channels: int
) -> AudioStream:
    stream = container.add_stream(codec, rate=rate)
    assert isinstance(stream, AudioStream)
    stream.layout = "mono" if channels == 1 else "stereo"
    return stream


def _encode(
    container: av.container.OutputContainer, stream: AudioStream, samples: Audio, rate: int
) -> None:
    """Encode ``samples`` (channels, n) float in [-1, 1] into ``stream``, muxing as it goes."""
    names = [f.name for f in stream.codec_context.codec.audio_formats or ()]
    fmt = next(f for f in ("fltp", "flt", "s16", "s16p", "s32p") if f in names)
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    for i in range(0, samples.shape[1], 1024):
        part = samples[:, i : i + 1024]
        if fmt.startswith("s16"):
            part = np.round(part * 32767).astype(np.int16)
        elif fmt.startswith("s32"):
            part = np.round(part * 2147483647).astype(np.int32)
        if not fmt.endswith("p"):  # packed: one row of interleaved samples
            part = part.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format=fmt, layout=layout)
        frame.sample_rate = rate
        frame.pts = i
        frame.time_base = fractions.Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def write_audio(
    path: Path,
    samples: Audio,
    *,
    rate: int = 48000,
    codec: str = "pcm_s16le",
    fmt: str | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Write mono (n,) or multichannel (channels, n) float samples with one audio stream."""
    if codec not in av.codecs_available:
        pytest.skip(f"PyAV's FFmpeg has no {codec} encoder")
    samples = samples.reshape(1, -1) if samples.ndim == 1 else samples
    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        stream = _add_audio(container, codec, rate, samples.shape[0])
        _encode(container, stream, samples, rate)
    return path


def write_video(path: Path, seconds: float = 2.0, *, with_audio: bool = False) -> Path:
    """A small video (libx264 when available, else mpeg4), optionally with an AAC track."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=25)
        assert isinstance(video, VideoStream)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = _add_audio(container, "aac", 48000, 1) if with_audio else None
        for i in range(round(seconds * 25)):
            image = np.full((48, 64, 3), (i * 8) % 256, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio is not None:
            _encode(container, audio, tone(seconds, 48000).reshape(1, -1), 48000)
    return path


def png_bytes(width: int = 4, height: int = 4) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\0" + bytes([255, 0, 0] * width) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def decoded(path: Path, stream_index: int | None = None) -> Audio:
    return np.concatenate(list(decode(path, stream_index=stream_index)))


def dominant_hz(x: Audio, rate: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * rate / x.size)


# --- probe ---------------------------------------------------------------------------

FORMATS = [  # suffix, encoder, canonical codec name, rate
    ("wav", "pcm_s16le", "pcm_s16le", 44100),
    ("flac", "flac", "flac", 48000),
    ("ogg", "libopus", "opus", 48000),
    ("mp3", "libmp3lame", "mp3", 44100),
    ("m4a", "aac", "aac", 48000),
    ("webm", "libopus", "opus", 48000),
]


@pytest.mark.parametrize(("suffix", "encoder", "codec", "rate"), FORMATS)
def test_probe_and_decode_common_formats(
    tmp_path: Path, suffix: str, encoder: str, codec: str, rate: int
) -> None:
    path = write_audio(tmp_path / f"a.{suffix}", tone(3.0, rate), rate=rate, codec=encoder)
    info = probe(path)
    assert info.duration == pytest.approx(3.0, abs=0.05)
    assert [(s.index, s.codec, s.channels, s.sample_rate) for s in info.streams] == [
        (0, codec, 1, rate)
    ]
    assert info.channels == 1
    audio = decoded(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.size == pytest.approx(3.0 * SR, abs=0.05 * SR)
    assert dominant_hz(audio) == pytest.approx(440, abs=2)
    rms = np.sqrt(np.mean(np.square(audio[SR : 2 * SR])))  # lossy codecs distort peaks
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_probe_stereo_file(tmp_path: Path) -> None:
    stereo = np.stack([tone(2.0, 44100), tone(2.0, 44100, freq=660)])
    info = probe(write_audio(tmp_path / "s.flac", stereo, rate=44100, codec="flac"))
    assert (info.channels, info.streams[0].sample_rate, info.format) == (2, 44100, "flac")
    assert info.streams[0].duration == pytest.approx(2.0)


def test_probe_webm_without_duration_sums_packets(tmp_path: Path) -> None:
    # Meeting bots stream WebM, so the muxer cannot go back to write the duration:
    # emulate that with a sink that cannot seek.
    class Pipe:
        def __init__(self) -> None:
            self.data = bytearray()

        def write(self, b: bytes) -> int:
            self.data += b
            return len(b)

        def seekable(self) -> bool:
            return False

    if "libopus" not in av.codecs_available:
        pytest.skip("no libopus")
    pipe = Pipe()
    with av.open(pipe, "w", format="webm") as container:
        _encode(
            container, _add_audio(container, "libopus", 48000, 1), tone(4.0, 48000)[None], 48000
        )
    path = tmp_path / "bot.webm"
    path.write_bytes(bytes(pipe.data))
    with av.open(str(path)) as reader:  # the premise: no duration anywhere
        assert reader.duration is None and reader.streams.audio[0].duration is None
    assert probe(path).duration == pytest.approx(4.0, abs=0.05)


def test_probe_video_with_audio_reports_the_audio_stream(tmp_path: Path) -> None:
    info = probe(write_video(tmp_path / "v.mp4", 2.0, with_audio=True))
    assert [(s.index, s.codec) for s in info.streams] == [(1, "aac")]
    assert info.duration == pytest.approx(2.0, abs=0.1)
    assert decoded(tmp_path / "v.mp4").size == pytest.approx(2.0 * SR, abs=0.1 * SR)


def test_video_without_audio_is_no_audio_stream(tmp_path: Path) -> None:
    path = write_video(tmp_path / "silent.mp4")
    with pytest.raises(errors.NoAudioStream, match="no audio stream"):
        probe(path)
    with pytest.raises(errors.NoAudioStream):
        next(decode(path))


def test_png_renamed_mp3_is_not_opened(tmp_path: Path) -> None:
    # An image is no accepted format: refused before any demuxer reads it.
    path = tmp_path / "image.mp3"
    path.write_bytes(png_bytes())
    with pytest.raises(errors.UnsupportedMedia, match="not in an accepted"):
        probe(path)


@pytest.mark.parametrize("name", ["notes.txt", "notes.mp3", "notes.wav"])
def test_text_file_is_unsupported(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("Meeting notes\nNot audio at all, just words.\n" * 30)
    with pytest.raises(errors.UnsupportedMedia, match="text"):
        probe(path)
    with pytest.raises(errors.UnsupportedMedia):
        next(decode(path))


def test_zero_byte_file_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.touch()
    with pytest.raises(errors.UnsupportedMedia, match="empty"):
        probe(path)


def test_random_bytes_are_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "noise.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(errors.UnsupportedMedia):
        probe(path)


def test_truncated_mp4_without_moov_is_unsupported(tmp_path: Path) -> None:
    full = write_audio(tmp_path / "full.mp4", tone(5.0, 48000), codec="aac").read_bytes()
    assert full.find(b"moov") > len(full) * 0.6  # the premise: the index is at the end
    path = tmp_path / "cut.mp4"
    path.write_bytes(full[: int(len(full) * 0.6)])
    with pytest.raises(errors.UnsupportedMedia, match="MP4") as caught:
        probe(path)
    assert caught.value.code == "unsupported_media"


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "nope.wav")


def test_wav_without_samples_is_empty_audio(tmp_path: Path) -> None:
    fmt = struct.pack("<HHIIHH", 1, 1, SR, SR * 2, 2, 16)
    header = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", 0)
    path = tmp_path / "hollow.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(header)) + header)
    with pytest.raises(errors.EmptyAudio):
        probe(path)
    with pytest.raises(errors.EmptyAudio):
        list(decode(path))


def test_undecodable_audio_payload_is_empty_audio(tmp_path: Path) -> None:
    full = write_audio(
        tmp_path / "ok.mp4", tone(3.0, 48000), codec="aac", options={"movflags": "faststart"}
    ).read_bytes()
    mdat = full.find(b"mdat") + 4
    garbage = np.random.default_rng(1).integers(0, 256, len(full) - mdat, dtype=np.uint8)
    path = tmp_path / "garbled.mp4"
    path.write_bytes(full[:mdat] + garbage.tobytes())
    with pytest.raises(errors.EmptyAudio):
        probe(path)
    with pytest.raises(errors.EmptyAudio):
        list(decode(path))


@needs_testdata
@pytest.mark.parametrize("entry", MANIFEST, ids=[e["audio"] for e in MANIFEST])
def test_real_recordings(entry: dict[str, Any]) -> None:
    path = TESTDATA / str(entry["audio"])
    info = probe(path)
    assert info.duration == pytest.approx(entry["duration_s"], abs=0.1)
    stream = info.streams[0]
    assert (stream.codec, stream.channels, stream.sample_rate) == (
        entry["codec"],
        entry["channels"],
        entry["sample_rate"],
    )
    samples = sum(block.size for block in decode(path))
    assert samples == pytest.approx(entry["duration_s"] * SR, abs=0.1 * SR)


# --- decode --------------------------------------------------------------------------


def test_decode_yields_exact_blocks_lazily(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "long.wav", tone(25.0, 22050), rate=22050)
    blocks = decode(path, block_s=4.0)
    first = next(blocks)  # lazily: one block out without reading the rest
    assert first.dtype == np.float32 and first.shape == (4 * SR,)
    rest = list(blocks)
    assert [b.size for b in rest] == [4 * SR] * 5 + [SR]


def test_decode_memory_does_not_grow_with_length(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "long.wav", tone(300.0, 8000, amp=0.3), rate=8000)
    tracemalloc.start()
    try:
        samples = sum(block.size for block in decode(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert samples == 300 * SR
    assert peak < 4 * 2**20  # the whole recording as float32 would take 19 MB


def test_decode_can_be_abandoned(tmp_path: Path) -> None:
    blocks = decode(write_audio(tmp_path / "a.wav", tone(5.0, 16000), rate=16000), block_s=1)
    next(blocks)
    assert isinstance(blocks, Generator)
    blocks.close()  # closes the container; must not raise


def test_decode_resamples_16k_wav_unchanged(tmp_path: Path) -> None:
    x = tone(2.0, SR, amp=0.25)
    got = decoded(write_audio(tmp_path / "a.wav", x, rate=SR))
    np.testing.assert_allclose(got, x, atol=2 / 32768)


def test_decode_mixes_stereo_down_without_boost(tmp_path: Path) -> None:
    left = tone(2.0, 44100, amp=0.5)
    one_sided = decoded(write_audio(tmp_path / "l.wav", np.stack([left, 0 * left]), rate=44100))
    assert np.abs(one_sided).max() == pytest.approx(0.25, abs=0.01)  # (L + R) / 2
    both = decoded(write_audio(tmp_path / "lr.wav", np.stack([left, left]), rate=44100))
    assert np.abs(both).max() == pytest.approx(0.5, abs=0.01)


def test_decode_picks_the_requested_stream(tmp_path: Path) -> None:
    path = tmp_path / "two.mka"
    with av.open(str(path), "w") as container:
        first = _add_audio(container, "flac", 48000, 1)
        second = _add_audio(container, "flac", 48000, 1)
        _encode(container, first, tone(2.0, 48000, freq=440)[None], 48000)
        _encode(container, second, tone(2.0, 48000, freq=1000)[None], 48000)
    info = probe(path)
    assert [s.index for s in info.streams] == [0, 1]
    assert dominant_hz(decoded(path)) == pytest.approx(440, abs=2)
    assert dominant_hz(decoded(path, stream_index=1)) == pytest.approx(1000, abs=2)
    with pytest.raises(errors.NoAudioStream):
        next(decode(path, stream_index=7))


def test_decode_of_truncated_file_keeps_what_it_decoded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    full = write_audio(
        tmp_path / "full.mp4", tone(5.0, 48000), codec="aac", options={"movflags": "faststart"}
    ).read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(full[: int(len(full) * 0.6)])
    assert probe(path).duration == pytest.approx(5.0, abs=0.05)  # the index still says 5 s
    with caplog.at_level(logging.WARNING, logger="postcall.audio"):
        audio = decoded(path)
    assert 2.0 * SR < audio.size < 3.5 * SR
    assert any("stopped early" in r.message for r in caplog.records)


def test_decode_rejects_bad_block_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        next(decode(tmp_path / "whatever.wav", block_s=0))


# --- split_at_silences ---------------------------------------------------------------


def speechlike(seconds: float, seed: int) -> tuple[Audio, list[tuple[int, int]]]:
    """Utterances of word-like tone bursts (short gaps inside) between pauses of 0.3-3 s.

    Returns the signal and the pauses as (first, end) sample offsets.
    """
    rng = np.random.default_rng(seed)
    parts: list[Audio] = []
    pauses: list[tuple[int, int]] = []
    pos = 0
    while pos < seconds * SR:
        for _ in range(rng.integers(2, 16)):  # one utterance: up to ~8 s
            n = int(rng.uniform(0.15, 0.5) * SR)
            env = np.sin(np.pi * np.arange(n) / n) ** 0.5
            wave = np.sin(2 * np.pi * rng.uniform(100, 300) * np.arange(n) / SR)
            parts.append((0.3 * env * wave * (1 + 0.3 * rng.standard_normal(n))).astype(np.float32))
            gap = int(rng.uniform(0.02, 0.12) * SR)  # between words: not a pause
            parts.append((0.001 * rng.standard_normal(gap)).astype(np.float32))
            pos += n + gap
        n = int(rng.uniform(0.3, 3.0) * SR)
        parts.append((0.001 * rng.standard_normal(n)).astype(np.float32))  # room noise
        pauses.append((pos, pos + n))
        pos += n
    return np.concatenate(parts), pauses


def blocked(x: Audio, sizes: list[int]) -> Iterator[Audio]:
    pos = 0
    for size in itertools.cycle(sizes):
        if pos >= x.size:
            return
        yield x[pos : pos + size]
        pos += size


def check_contiguous(chunks: list[Chunk], x: Audio, max_s: float, min_s: float) -> None:
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start == 0.0
    for a, b in itertools.pairwise(chunks):
        assert a.end == b.start
        assert min_s <= a.duration <= max_s
    assert 0 < chunks[-1].duration <= max_s
    assert chunks[-1].end == pytest.approx(x.size / SR)
    assert np.array_equal(np.concatenate([c.audio for c in chunks]), x)


def test_ten_minutes_cut_inside_pauses() -> None:
    x, pauses = speechlike(600, seed=1)
    chunks = list(split_at_silences(blocked(x, [10 * SR])))
    check_contiguous(chunks, x, 30.0, 10.0)
    assert len(chunks) >= 20
    cuts = [round(c.start * SR) for c in chunks[1:]]
    for cut in cuts:
        assert any(first <= cut <= end for first, end in pauses), cut / SR


def test_cut_prefers_the_longest_pause() -> None:
    speech = np.random.default_rng(2).uniform(-0.5, 0.5, 40 * SR).astype(np.float32)
    x = speech.copy()
    x[12 * SR : int(12.4 * SR)] = 0  # short pause
    x[20 * SR : 22 * SR] = 0  # long pause: cut in its middle
    x[27 * SR : int(27.4 * SR)] = 0
    first = next(split_at_silences([x]))
    assert first.duration == pytest.approx(21.0, abs=0.02)


def test_continuous_signal_is_cut_at_its_quietest_point() -> None:
    x = np.random.default_rng(3).uniform(-0.5, 0.5, 100 * SR).astype(np.float32)
    x[int(17.4 * SR) : int(17.6 * SR)] *= 0.3  # a dip, not a pause
    chunks = list(split_at_silences([x]))
    check_contiguous(chunks, x, 30.0, 10.0)
    assert chunks[0].duration == pytest.approx(17.5, abs=0.05)


def test_flat_signal_is_still_cut_within_limits() -> None:
    x = tone(95.0, SR)
    chunks = list(split_at_silences([x], max_chunk_s=30, min_chunk_s=10))
    check_contiguous(chunks, x, 30.0, 10.0)


def test_chunks_are_deterministic_and_independent_of_blocking() -> None:
    x, _ = speechlike(180, seed=4)
    reference = list(split_at_silences([x]))
    assert reference == list(split_at_silences([x]))
    for sizes in ([SR], [10 * SR], [7919, 160_001, 3], [x.size]):
        assert list(split_at_silences(blocked(x, sizes))) == reference, sizes


_SHORT, _ = speechlike(14, seed=5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(40, 60_000), min_size=1, max_size=12), empty=st.booleans())
def test_blocking_never_changes_the_chunks(sizes: list[int], empty: bool) -> None:
    def split(blocks: Iterator[Audio]) -> list[Chunk]:
        return list(split_at_silences(blocks, max_chunk_s=3.0, min_chunk_s=1.0))

    def with_empties(blocks: Iterator[Audio]) -> Iterator[Audio]:
        for block in blocks:
            yield block
            if empty:
                yield np.zeros(0, np.float32)

    reference = split(iter([_SHORT]))
    chunks = split(with_empties(blocked(_SHORT, sizes)))
    assert chunks == reference
    check_contiguous(chunks, _SHORT, 3.0, 1.0)


def test_edges() -> None:
    assert list(split_at_silences([])) == []
    assert list(split_at_silences([np.zeros(0, np.float32)])) == []
    exact = tone(30.0, SR)
    assert len(list(split_at_silences([exact]))) == 1
    assert len(list(split_at_silences([exact, np.ones(1, np.float32)]))) == 2
    (short,) = split_at_silences([tone(4.0, SR)])
    assert (short.index, short.start, short.duration, short.end) == (0, 0.0, 4.0, 4.0)


def test_other_sample_rates_and_limits() -> None:
    x = np.random.default_rng(6).uniform(-1, 1, 8000 * 20).astype(np.float32)
    chunks = list(split_at_silences([x], max_chunk_s=5, min_chunk_s=0, sample_rate=8000))
    assert all(0 < c.duration <= 5 and c.sample_rate == 8000 for c in chunks)
    assert np.array_equal(np.concatenate([c.audio for c in chunks]), x)
    assert chunks[-1].end == 20.0


@pytest.mark.parametrize(("max_s", "min_s"), [(0, 0), (10, 20), (10, -1)])
def test_bad_limits(max_s: float, min_s: float) -> None:
    with pytest.raises(ValueError):
        next(split_at_silences([tone(1, SR)], max_chunk_s=max_s, min_chunk_s=min_s))


def test_two_dimensional_block_is_refused() -> None:
    with pytest.raises(ValueError, match="1-D"):
        next(split_at_silences([np.zeros((2, SR), np.float32)]))


def test_two_hours_stream_through_in_bounded_memory() -> None:
    pattern, _ = speechlike(10, seed=7)
    block = pattern[: 10 * SR]
    pulled = 0

    def two_hours() -> Iterator[Audio]:
        nonlocal pulled
        for _ in range(720):
            pulled += 1
            yield block

    chunks = split_at_silences(two_hours())
    tracemalloc.start()
    try:
        first = next(chunks)
        assert pulled == 4  # 40 s is the first time more than 30 s is buffered
        count, longest, end = 1, first.duration, first.end
        for chunk in chunks:
            assert chunk.start == end
            count, longest, end = count + 1, max(longest, chunk.duration), chunk.end
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert end == 7200.0 and longest <= 30.0 and count >= 240
    assert peak < 40 * 2**20  # all of it as float32 would take 460 MB


@needs_testdata
def test_real_speech_is_cut_between_words() -> None:
    clips = sorted((TESTDATA / "ljspeech").glob("*.flac"))
    x = np.concatenate([decoded(p) for p in clips])
    chunks = list(split_at_silences(blocked(x, [10 * SR])))
    check_contiguous(chunks, x, 30.0, 10.0)
    frame = SR // 50  # 20 ms
    rms = np.sqrt(np.mean(x[: x.size // frame * frame].reshape(-1, frame) ** 2, axis=1))
    speech_level = np.percentile(rms, 75)
    for chunk in chunks[1:]:
        cut = round(chunk.start * SR) // frame
        around = rms[max(0, cut - 3) : cut + 3]  # ±60 ms
        assert around.max() < speech_level / 10, chunk.start  # 20 dB under speech
