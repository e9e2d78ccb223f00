"""Media files made on the fly for tests (PyAV + numpy; nothing downloaded)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt


def write_audio(
    path: Path,
    samples: npt.NDArray[np.float32],
    *,
    rate: int = 16000,
    codec: str = "pcm_s16le",
    container: str | None = None,
) -> Path:
    """Write mono float samples with the given codec (wav, flac, aac in mp4, …)."""
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"  # type: ignore[union-attr]
        fmt = "s16" if codec == "pcm_s16le" else "fltp"
        step = 1024
        for start in range(0, len(samples), step):
            block = samples[start : start + step]
            if fmt == "s16":
                data = (np.clip(block, -1, 1) * 32767).astype(np.int16)[None, :]
            else:
                data = block.astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in stream.encode(frame):  # type: ignore[union-attr]
                out.mux(packet)
        for packet in stream.encode(None):  # type: ignore[union-attr]
            out.mux(packet)
    return path


def silence(seconds: float, rate: int = 16000) -> npt.NDArray[np.float32]:
    return np.zeros(int(seconds * rate), dtype=np.float32)


def load_mono16k(path: Path) -> npt.NDArray[np.float32]:
    """Decode a whole (short) clip to 16 kHz mono float32."""
    from postcall import audio

    return np.concatenate(list(audio.decode(path)))


def concat_with_pauses(
    clips: Sequence[npt.NDArray[np.float32]], pauses: Sequence[float], rate: int = 16000
) -> npt.NDArray[np.float32]:
    parts: list[npt.NDArray[np.float32]] = []
    for i, c in enumerate(clips):
        parts.append(c)
        if i < len(clips) - 1:
            parts.append(silence(pauses[i % len(pauses)], rate))
    return np.concatenate(parts)


def write_video_only(path: Path, seconds: float = 1.0) -> Path:
    """An mp4 with one video track and no audio."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height = 64, 48  # type: ignore[union-attr]
        stream.pix_fmt = "yuv420p"  # type: ignore[union-attr]
        for i in range(int(seconds * 10)):
            img = np.full((48, 64, 3), i * 20 % 255, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):  # type: ignore[union-attr]
                out.mux(packet)
        for packet in stream.encode(None):  # type: ignore[union-attr]
            out.mux(packet)
    return path


def write_truncated_mp4(path: Path, seconds: float = 3.0) -> Path:
    """An AAC-in-mp4 file cut to its first 40 % (its index, at the end, is lost)."""
    full = path.with_suffix(".full.mp4")
    t = np.arange(int(seconds * 16000)) / 16000
    write_audio(full, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), codec="aac")
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.4)])
    full.unlink()
    return path


def png_bytes(width: int = 4, height: int = 4) -> bytes:
    """A small valid PNG image."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + b"\x80\x20\x20" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
