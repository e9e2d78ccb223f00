"""A playable mix of a recording's tracks: each participant's audio on the recording's
timeline, summed into one mono Ogg/Opus file (16 kHz, about 3 MB an hour).

Decoded block by block (``audio.decode``), so memory does not grow with the length.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack

import av
import numpy as np

from postcall import audio
from postcall.blobs.base import BlobStore
from postcall.domain import Recording, Track

BLOCK_S = 10.0
BITRATE = 24_000


def mix_key(recording: Recording) -> str:
    """Where a recording's mix is kept: derived from the recording (never from a path a
    client sent), and deleted with it."""
    digest = hashlib.sha256(
        f"{recording.tenant}\0{recording.id}\0{recording.media_key}".encode()
    ).hexdigest()[:32]
    return f"mixes/{digest}.ogg"


def write_mix(blobs: BlobStore, key: str, tracks: Sequence[Track], duration: float) -> None:
    """Mix ``tracks`` (each at its offset) and keep the result under ``key``."""
    block_n = round(BLOCK_S * audio.SAMPLE_RATE)
    fd, tmp = tempfile.mkstemp(suffix=".ogg")
    os.close(fd)
    try:
        with ExitStack() as stack:
            streams = []
            for t in tracks:
                path = stack.enter_context(blobs.local_file(t.media_key))
                decoded = audio.decode(
                    path, stream_index=t.stream_index, channel=t.channel, block_s=BLOCK_S
                )
                streams.append(_blocks(_delayed(decoded, t.offset), block_n))
            total = round(duration * audio.SAMPLE_RATE) if duration > 0 else None
            _encode(tmp, _summed(streams, total))
        with open(tmp, "rb") as f:
            blobs.put(key, f)
    finally:
        os.unlink(tmp)


def _delayed(pieces: Iterator[np.ndarray], offset: float) -> Iterator[np.ndarray]:
    silence = round(max(0.0, offset) * audio.SAMPLE_RATE)
    if silence:
        yield np.zeros(silence, np.float32)
    yield from pieces


def _blocks(pieces: Iterator[np.ndarray], n: int) -> Iterator[np.ndarray]:
    """The samples of ``pieces`` in blocks of ``n`` (the last may be shorter)."""
    buffer = np.zeros(0, np.float32)
    for piece in pieces:
        buffer = np.concatenate([buffer, piece.astype(np.float32, copy=False)])
        while buffer.size >= n:
            yield buffer[:n]
            buffer = buffer[n:]
    if buffer.size:
        yield buffer


def _summed(streams: list[Iterator[np.ndarray]], total: int | None) -> Iterator[np.ndarray]:
    """The streams added block by block, clipped to [-1, 1], cut at ``total`` samples."""
    done = 0
    while total is None or done < total:
        blocks = [b for b in (next(s, None) for s in streams) if b is not None]
        if not blocks:
            return
        mixed = np.zeros(max(b.size for b in blocks), np.float32)
        for b in blocks:
            mixed[: b.size] += b
        if total is not None:
            mixed = mixed[: total - done]
        done += mixed.size
        yield np.clip(mixed, -1.0, 1.0)


def _encode(path: str, blocks: Iterator[np.ndarray]) -> None:
    with av.open(path, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=audio.SAMPLE_RATE)
        stream.layout = "mono"
        stream.bit_rate = BITRATE
        pts = 0
        for block in blocks:
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = audio.SAMPLE_RATE
            frame.pts = pts
            pts += block.size
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
