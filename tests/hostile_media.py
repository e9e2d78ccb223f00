"""Hostile media made on the fly: playlists, file lists, lying headers, broken files.

Everything is generated here (PyAV, numpy, byte patches); nothing is downloaded. The
lying headers are patched into files FFmpeg wrote, so the rest of each file is valid.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tests import media

RATE = 16000


def tone(seconds: float, rate: int = RATE, freq: float = 440.0) -> npt.NDArray[np.float32]:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def hls_playlist(path: Path, *entries: str) -> Path:
    """An HLS playlist (``.m3u8``) whose segments are ``entries`` (URLs or file names)."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:10"]
    for entry in entries:
        lines += ["#EXTINF:2.0,", entry]
    path.write_text("\n".join([*lines, "#EXT-X-ENDLIST", ""]))
    return path


def ffconcat(path: Path, *names: str) -> Path:
    """An FFmpeg concat list naming ``names`` (relative names pass FFmpeg's safe mode)."""
    path.write_text("ffconcat version 1.0\n" + "".join(f"file '{n}'\n" for n in names))
    return path


def sdp(path: Path, port: int) -> Path:
    """A session description: FFmpeg's sdp demuxer would listen for RTP on ``port``."""
    path.write_text(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    return path


def wav_bytes(
    samples: npt.NDArray[np.float32],
    *,
    rate: int = RATE,
    channels: int = 1,
    data_size: int | None = None,
    fact_samples: int | None = None,
) -> bytes:
    """A 16-bit PCM WAV written byte by byte, so that any header field can lie.

    ``samples`` are interleaved when ``channels`` > 1. ``data_size`` overrides the data
    chunk's size (0xFFFFFFFF: "unknown", read to the end), ``fact_samples`` adds a
    ``fact`` chunk claiming that many samples per channel.
    """
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    block = 2 * channels
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block & 0xFFFFFFFF, block, 16)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if fact_samples is not None:
        chunks += b"fact" + struct.pack("<II", 4, fact_samples)
    size = len(pcm) if data_size is None else data_size
    chunks += b"data" + struct.pack("<I", size) + pcm
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def lying_wav(path: Path, *, holds_s: float, claims_s: float) -> Path:
    """A WAV whose header says ``claims_s`` (a ``fact`` chunk, the data size "unknown")
    while its data holds ``holds_s`` of audio, read to the end of the file."""
    path.write_bytes(
        wav_bytes(tone(holds_s), data_size=0xFFFFFFFF, fact_samples=round(claims_s * RATE))
    )
    return path


def lying_flac(path: Path, *, holds_s: float, claims_s: float, silent: bool = False) -> Path:
    """A FLAC holding ``holds_s`` whose STREAMINFO claims ``claims_s`` (total samples)."""
    samples = media.silence(holds_s) if silent else tone(holds_s)
    media.write_audio(path, samples, codec="flac", container="flac")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO comes first
    # STREAMINFO: 10 bytes of block and frame sizes, then 64 bits of rate (20),
    # channels (3), bits per sample (5) and total samples (36).
    (packed,) = struct.unpack_from(">Q", data, 18)
    packed = (packed & ~((1 << 36) - 1)) | round(claims_s * RATE)
    struct.pack_into(">Q", data, 18, packed)
    data[26:42] = bytes(16)  # MD5 unknown: FFmpeg would not check it anyway
    path.write_bytes(bytes(data))
    return path


def many_channels_wav(path: Path, channels: int, seconds: float = 0.5) -> Path:
    """A real WAV with ``channels`` interleaved channels of a tone."""
    mono = tone(seconds)
    path.write_bytes(wav_bytes(np.repeat(mono, channels), channels=channels))
    return path


def absurd_rate_wav(path: Path, rate: int) -> Path:
    """A WAV of one second of samples whose header states ``rate`` samples a second."""
    path.write_bytes(wav_bytes(tone(1.0), rate=rate))
    return path


def random_bytes(path: Path, size: int = 64 * 1024, seed: int = 12) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def wav_header_only(path: Path) -> Path:
    """The 44-byte header of a WAV and no samples."""
    path.write_bytes(wav_bytes(tone(1.0))[:44])
    return path


def truncated(path: Path, source: Path, keep: int) -> Path:
    """The first ``keep`` bytes of ``source``."""
    path.write_bytes(source.read_bytes()[:keep])
    return path
