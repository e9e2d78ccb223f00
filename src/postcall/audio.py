"""Audio in: probe a recording, decode it to 16 kHz mono, split it at silences.

Everything streams: ``decode`` yields fixed-size blocks and ``split_at_silences`` holds
at most one chunk plus one block, so memory does not grow with the recording's length.

Only the formats in ``ACCEPTED_FORMATS`` are opened, and only as the one file named:
FFmpeg is given a demuxer allow-list (``format_whitelist``, checked after probing and
before the demuxer reads its header, so a playlist or concat list never opens the
files it names) and a protocol allow-list of ``file`` alone (no network, ever).
Lengths are counted on decoded samples: a header may lie (``measure``, and the
``max_s`` of ``decode``).
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import av.error
import numpy as np
import numpy.typing as npt
from av.audio.stream import AudioStream
from av.container import InputContainer

from postcall import errors
from postcall.domain import AudioStreamInfo, MediaInfo

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""The rate Whisper (and everything after decoding) works at."""

Audio = npt.NDArray[np.float32]

ACCEPTED_FORMATS: tuple[str, ...] = (
    "wav",  # also RF64 and BW64
    "w64",
    "flac",
    "mp3",
    "ogg",  # Opus, Vorbis, FLAC or Speex inside
    "matroska",  # and WebM: meeting bots' recordings
    "mov",  # and MP4, M4A, 3GP
    "aac",  # ADTS
    "amr",
    "caf",  # Apple's Core Audio Format: iPhone recorders
    "aiff",
    "au",  # Sun/NeXT audio, common in telephony (mu-law)
)
"""FFmpeg demuxers postcall opens: audio containers and the containers of recorded
calls and meetings. None of them opens another file or a network resource (playlists,
concat lists, SDP, image sequences are all left out; MP4 external data references
stay off, FFmpeg's default)."""

MAX_CHANNELS = 32
"""More channels than this in one stream is no call recording (and FFmpeg's resampler
stops at 64): refused as unsupported media."""

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 2000, 384_000
"""Sample rates outside these (Hz) are refused: telephony's 8 kHz to studio 384 kHz,
with room; a WAV claiming 1 Hz or 2 GHz is a lie, not a recording."""

MAX_AUDIO_STREAMS = 32
"""More audio streams than this in one file is refused (each may become a track)."""

DURATION_TOLERANCE_S = 1.0
"""Decoded audio may run this much past a duration limit before it is refused: headers
and decoders disagree by a few frames, and a limit must not refuse a recording that
lasts exactly as long as allowed."""

# format_whitelist: FFmpeg refuses any other demuxer right after probing, before the
# demuxer runs, so nested opens (HLS segments, concat entries) never happen.
# protocol_whitelist: the one local file; inherited by any nested open, so none of
# the allowed demuxers can reach the network even through an option we missed.
_ACCEPTED = "WAV, W64, FLAC, MP3, Ogg, WebM/Matroska, MP4/M4A/MOV, AAC, AMR, CAF, AIFF, AU"
_OPEN_OPTIONS = {"format_whitelist": ",".join(ACCEPTED_FORMATS), "protocol_whitelist": "file"}

_PROBE_DECODE_S = 1.0  # how much audio ``probe`` decodes to prove the stream is usable
_HOP_S = 0.010  # candidate cut positions every 10 ms
# Energy around a candidate is averaged over 250 ms: longer than the closure of a stop
# consonant (under ~100 ms), so a gap inside a word does not look like a pause, yet
# shorter than the shortest pause between utterances worth cutting in (~300 ms).
_ENERGY_WINDOW_S = 0.250
_QUIET_MARGIN_DB = 6.0  # candidates this close to the quietest one count as "pause"
_ENERGY_FLOOR = 1e-10  # -100 dBFS: digital silence and faint dither compare as equal


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Describe the media file at ``path`` and prove its first audio stream decodes.

    Raises ``UnsupportedMedia`` when the file cannot be read as media at all,
    ``NoAudioStream`` when it can but has no audio stream (a video without sound),
    and ``EmptyAudio`` when the audio stream yields no decodable audio or lasts 0 s.
    Reads the file as a stream; only when neither the container nor the stream states
    a duration (common in meeting-bot WebM) are all packets demuxed, without decoding.
    """
    with _open(path) as container:
        stream = _first_audio_stream(container)
        if len(container.streams.audio) > MAX_AUDIO_STREAMS:
            raise errors.UnsupportedMedia(
                f"the file has {len(container.streams.audio)} audio streams; "
                f"at most {MAX_AUDIO_STREAMS} are accepted"
            )
        infos = tuple(_stream_info(s) for s in container.streams.audio)
        for info in infos:
            _check_stream(info.channels, info.sample_rate)
        duration = _seconds(container.duration, 1 / av.time_base) or infos[0].duration
        first_pts: int | None = None
        last_end = 0
        decoded = 0
        try:
            for packet in container.demux(stream):
                if decoded < _PROBE_DECODE_S * (stream.codec_context.sample_rate or SAMPLE_RATE):
                    decoded += sum(frame.samples for frame in packet.decode())
                elif duration:
                    break
                if packet.pts is not None:
                    first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
                    last_end = max(last_end, packet.pts + (packet.duration or 0))
        except av.error.FFmpegError as exc:
            if not decoded:
                raise errors.EmptyAudio(
                    f"the audio stream ({infos[0].codec}) cannot be decoded: {_reason(exc)}"
                ) from exc
            # Damage after the first second is decode()'s business: it stops there.
        if not decoded:
            raise errors.EmptyAudio("the audio stream contains no decodable audio")
        if not duration and first_pts is not None and stream.time_base is not None:
            duration = float((last_end - first_pts) * stream.time_base)
        if not duration or duration <= 0:
            raise errors.EmptyAudio("the audio stream has a duration of 0 seconds")
        return MediaInfo(format=container.format.name, duration=duration, streams=infos)


def measure(
    path: str | os.PathLike[str],
    *,
    stream_index: int | None = None,
    max_s: float | None = None,
) -> float:
    """How long the audio stream really lasts, in seconds: its decoded samples, counted.

    Headers may lie (a FLAC's STREAMINFO, a WAV's ``fact`` chunk claim any length),
    so whatever sizes work (limits, plans, progress) counts samples instead. Decodes
    without resampling (an hour of audio in about a second) and stops as soon as the
    count passes ``max_s`` plus ``DURATION_TOLERANCE_S``, raising ``DurationExceeded``:
    a long file costs no more than the limit. Damage ends the count where decoding
    stops, as it ends ``decode``'s audio; ``EmptyAudio`` when nothing decodes.
    """
    cap = None if max_s is None else max_s + DURATION_TOLERANCE_S
    seconds = 0.0
    with _open(path) as container:
        stream = _first_audio_stream(container, stream_index)
        _check_stream(stream.codec_context.channels, stream.codec_context.sample_rate)
        fallback_rate = stream.codec_context.sample_rate or SAMPLE_RATE
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    seconds += frame.samples / (frame.sample_rate or fallback_rate)
                    if cap is not None and seconds > cap:
                        raise errors.DurationExceeded(_too_long(max_s or 0.0))
        except av.error.FFmpegError as exc:
            log.warning("audio decoding stopped early, counting what was decoded: %s", exc)
    if seconds <= 0:
        raise errors.EmptyAudio("the audio stream contains no decodable audio")
    return seconds


def _too_long(max_s: float) -> str:
    return (
        f"the recording's decoded audio lasts more than the limit of {max_s:.0f} s "
        "(POSTCALL_MAX_DURATION_S)"
    )


def decode(
    path: str | os.PathLike[str],
    *,
    stream_index: int | None = None,
    channel: int | None = None,
    block_s: float = 10.0,
    start: float = 0.0,
    end: float | None = None,
    max_s: float | None = None,
) -> Iterator[Audio]:
    """Lazily yield the audio as float32 mono 16 kHz blocks of ``block_s`` seconds.

    ``start`` and ``end`` (seconds) limit it to that stretch of the recording: the
    container is seeked to shortly before ``start`` (decoding from the beginning
    where it cannot seek), so a stretch late in a long file costs about its own
    length to decode. Past the end of the audio, a stretch is empty (no error).

    ``stream_index`` is the container's index of an audio stream (``AudioStreamInfo.index``);
    by default the first audio stream. Channels are mixed down to mono, unless
    ``channel`` picks one (0-based; a participant's own channel). Every block
    has exactly ``block_s`` seconds of samples except the last, which may be shorter.
    Damage in the middle of the file (truncated data) ends the audio after what was
    decoded, with a warning; ``EmptyAudio`` is raised when nothing decodes at all.
    Open errors are those of ``probe`` and surface on the first ``next()``.

    ``max_s``: the audio may not run past this many seconds from the start of the
    recording (plus ``DURATION_TOLERANCE_S``), whatever the header said; decoding
    stops there with ``DurationExceeded``. A stretch ending sooner never raises.
    """
    if block_s <= 0:
        raise ValueError("block_s must be positive")
    block_n = max(1, round(block_s * SAMPLE_RATE))
    with _open(path) as container:
        stream = _first_audio_stream(container, stream_index)
        _check_stream(stream.codec_context.channels, stream.codec_context.sample_rate)
        pending: list[Audio] = []
        pending_n = 0
        total = 0
        cap = (
            None
            if max_s is None
            else round((max_s + DURATION_TOLERANCE_S - max(start, 0.0)) * SAMPLE_RATE)
        )
        if channel is not None and not 0 <= channel < (stream.codec_context.channels or 1):
            raise errors.InvalidInput(
                f"channel {channel} does not exist: the stream has "
                f"{stream.codec_context.channels} channels",
                field="channels",
            )
        limit = None if end is None else max(0, round((end - max(start, 0.0)) * SAMPLE_RATE))
        pieces = (
            _decoded_pieces(container, stream, channel)
            if start <= 0
            else _pieces_from(path, container, stream, channel, start)
        )
        for piece in pieces:
            if limit is not None:
                piece = piece[: max(0, limit - total - pending_n)]
                if not piece.size:
                    break
            if cap is not None and total + pending_n + piece.size > cap:
                raise errors.DurationExceeded(_too_long(max_s or 0.0))
            pending.append(piece)
            pending_n += piece.size
            if pending_n < block_n:
                continue
            buffer = np.concatenate(pending)
            whole = buffer.size - buffer.size % block_n
            for start in range(0, whole, block_n):
                yield buffer[start : start + block_n]
            total += whole
            pending = [buffer[whole:]]
            pending_n = buffer.size - whole
        if pending_n:
            total += pending_n
            yield np.concatenate(pending)
        if not total and start <= 0:
            raise errors.EmptyAudio("the audio stream contains no decodable audio")


@dataclass(frozen=True)
class Chunk:
    """A contiguous piece of a recording: float32 mono audio starting at ``start`` s."""

    index: int
    start: float
    audio: Audio
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.audio.size / self.sample_rate

    @property
    def end(self) -> float:
        """Where the chunk ends, in seconds from the start of the recording."""
        # From the sample offset rather than start + duration, so that floating-point
        # rounding never breaks ``chunks[i].end == chunks[i + 1].start``.
        return (round(self.start * self.sample_rate) + self.audio.size) / self.sample_rate

    def __eq__(self, other: object) -> bool:
        # The generated __eq__ would compare arrays with ``==`` and raise.
        if not isinstance(other, Chunk):
            return NotImplemented
        return (self.index, self.start, self.sample_rate) == (
            other.index,
            other.start,
            other.sample_rate,
        ) and np.array_equal(self.audio, other.audio)


def split_at_silences(
    blocks: Iterable[Audio],
    *,
    max_chunk_s: float = 30.0,
    min_chunk_s: float = 10.0,
    sample_rate: int = SAMPLE_RATE,
) -> Iterator[Chunk]:
    """Split a stream of mono blocks into chunks of at most ``max_chunk_s`` seconds.

    Each cut lands in the quietest stretch between ``min_chunk_s`` and ``max_chunk_s``
    after the chunk's start: the middle of the longest near-silent run (ties go to the
    later one), so inside a pause whenever there is one. The last chunk takes whatever
    is left and may be short. Chunks are contiguous and their audio concatenates to the
    input exactly. Cuts depend only on the samples, never on how they were blocked, so
    the same recording always yields the same chunks. Holds at most one chunk plus one
    block of audio.
    """
    if not 0 <= min_chunk_s <= max_chunk_s or max_chunk_s <= 0 or sample_rate <= 0:
        raise ValueError("need 0 <= min_chunk_s <= max_chunk_s, max_chunk_s > 0, rate > 0")
    max_n = max(1, round(max_chunk_s * sample_rate))
    min_n = round(min_chunk_s * sample_rate)
    pending: list[Audio] = []
    pending_n = 0
    offset = 0
    index = 0
    for block in blocks:
        samples = np.asarray(block, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"blocks must be 1-D mono arrays, got shape {samples.shape}")
        if not samples.size:
            continue
        pending.append(samples)
        pending_n += samples.size
        # Strictly more than max_n: then a sample past the window exists, so the cut is
        # needed whatever follows, and a recording of exactly max_n stays one chunk.
        if pending_n <= max_n:
            continue
        # A copy (concatenate always copies) so that chunks never alias caller's arrays.
        buffer = np.concatenate(pending)
        while buffer.size > max_n:
            cut = _cut_point(buffer[:max_n], min_n, sample_rate)
            yield Chunk(index, offset / sample_rate, buffer[:cut], sample_rate)
            index += 1
            offset += cut
            buffer = buffer[cut:]
        pending = [buffer]
        pending_n = buffer.size
    if pending_n:
        yield Chunk(index, offset / sample_rate, np.concatenate(pending), sample_rate)


def _cut_point(window: Audio, lo: int, sample_rate: int) -> int:
    """Where to cut ``window`` (a chunk's first max_n samples): an offset in [lo, size]."""
    size = window.size
    hop = max(1, round(_HOP_S * sample_rate))
    half = max(1, round(_ENERGY_WINDOW_S * sample_rate / 2))
    first = max(hop, -(-lo // hop) * hop)  # never 0: an empty chunk would never advance
    candidates = np.arange(first, size + 1, hop, dtype=np.int64)
    if not candidates.size:
        return size
    # A sequential cumulative sum (unlike np.sum's pairwise, SIMD-dependent order) gives
    # bit-identical energies for identical samples, which determinism relies on.
    energy_sum = np.concatenate(([0.0], np.cumsum(np.square(window, dtype=np.float64))))
    left = np.maximum(candidates - half, 0)
    right = np.minimum(candidates + half, size)
    level = 10 * np.log10((energy_sum[right] - energy_sum[left]) / (right - left) + _ENERGY_FLOOR)
    # Near-quietest counts as pause: within 6 dB, or within a quarter of the window's
    # dynamic range when that is small (continuous sound), so that only its dip counts.
    lowest = float(level.min())
    margin = min(_QUIET_MARGIN_DB, (float(level.max()) - lowest) / 4)
    quiet = (level <= lowest + margin).astype(np.int8)
    edges = np.diff(np.concatenate(([0], quiet, [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    lengths = ends - starts
    best = lengths.size - 1 - int(np.argmax(lengths[::-1]))  # the longest; ties: later
    return int(candidates[(starts[best] + ends[best]) // 2])


def _open(path: str | os.PathLike[str]) -> InputContainer:
    """Open ``path`` for reading, turning "not media" into ``UnsupportedMedia``."""
    # A missing or unreadable path is the caller's bug, not bad media: let OSError out.
    if os.stat(path).st_size == 0:
        raise errors.UnsupportedMedia("the file is empty (0 bytes)")
    # An absolute path: a relative name such as "http:x" or "concat:a|b" would be
    # read by FFmpeg as a protocol (refused by the protocol allow-list, but say why).
    name = os.path.abspath(os.fspath(path))
    try:
        container = av.open(
            name, mode="r", metadata_errors="ignore", container_options=dict(_OPEN_OPTIONS)
        )
    except av.error.FFmpegError as exc:
        # A file we may not read is the deployment's problem, not bad media. (FFmpeg
        # says EPERM, also a PermissionError, for a concat list's unsafe names.)
        if isinstance(exc, FileNotFoundError) or exc.errno == errno.EACCES:
            raise
        raise errors.UnsupportedMedia(_unreadable(path, exc)) from exc
    try:
        # Belt and braces: the allow-list was passed as an option this PyAV forwards.
        if not set(container.format.name.split(",")) & set(ACCEPTED_FORMATS):
            raise errors.UnsupportedMedia(
                f"the file is {container.format.name}, not an accepted format ({_ACCEPTED})"
            )
    except BaseException:
        container.close()
        raise
    return container


def _check_stream(channels: int, sample_rate: int) -> None:
    """Refuse shapes no recorder produces, before a decoder or resampler sees them."""
    if channels > MAX_CHANNELS:
        raise errors.UnsupportedMedia(
            f"the audio has {channels} channels; at most {MAX_CHANNELS} are accepted"
        )
    if sample_rate and not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise errors.UnsupportedMedia(
            f"the audio's sample rate of {sample_rate} Hz is outside "
            f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )


def _unreadable(path: str | os.PathLike[str], exc: av.error.FFmpegError) -> str:
    """Say in plain words why FFmpeg could not open the file (it says "invalid data")."""
    with open(path, "rb") as file:
        head = file.read(4096)
    if head[4:8] == b"ftyp":
        # MP4/MOV keep their index in a "moov" box, often at the end of the file.
        what = "an incomplete or damaged MP4/MOV file: its index (the moov box) is missing"
    elif b"\0" not in head and _is_text(head):
        # Playlists (HLS), concat lists and SDP files are text: never followed.
        what = "a text file, not audio or video (playlists and file lists are not opened)"
    else:
        what = f"not in an accepted audio or video format ({_ACCEPTED}), or it is damaged"
    return f"the file is {what} (FFmpeg: {_reason(exc)})"


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a multi-byte character cut by the 4 KiB read
    return True


def _reason(exc: av.error.FFmpegError) -> str:
    return str(exc.strerror or exc)


def _first_audio_stream(container: InputContainer, index: int | None = None) -> AudioStream:
    """The audio stream with container ``index`` (default: the first one)."""
    audio = [s for s in container.streams.audio if index is None or s.index == index]
    if audio:
        return audio[0]
    if index is not None:
        raise errors.NoAudioStream(f"stream {index} is not an audio stream of this file")
    kinds = sorted({s.type for s in container.streams})
    if not kinds:
        raise errors.UnsupportedMedia("the file contains no audio or video streams")
    raise errors.NoAudioStream(
        f"the file ({container.format.name}) has no audio stream, only: {', '.join(kinds)}"
    )


def _stream_info(stream: AudioStream) -> AudioStreamInfo:
    context = stream.codec_context
    return AudioStreamInfo(
        index=stream.index,
        # The codec's canonical name ("mp3"), not the decoder's ("mp3float").
        codec=context.codec.canonical_name,
        channels=context.channels,
        sample_rate=context.sample_rate,
        duration=_seconds(stream.duration, stream.time_base),
    )


def _seconds(ticks: int | None, unit: Fraction | float | None) -> float | None:
    """``ticks * unit`` seconds, or None when unknown or not positive."""
    if not ticks or ticks <= 0 or unit is None:
        return None
    return float(ticks * unit)


def _decoded_pieces(
    container: InputContainer,
    stream: AudioStream,
    channel: int | None = None,
    first_time: list[float | None] | None = None,
) -> Iterator[Audio]:
    """Decode ``stream`` to float32 mono 16 kHz arrays of whatever size frames give.

    With ``channel``, that channel alone instead of the mix of all. ``first_time``
    receives the time of the first decoded frame (seconds from the stream's start,
    None when the frame has no timestamp) before the first array is yielded.
    """
    resampler: av.AudioResampler | None = None
    shape: tuple[str, str, int] | None = None
    # Frames are gathered into ~0.5 s batches before resampling: many containers (WAV
    # above all) carry ~1000-sample frames, and per-frame work would dominate.
    fifo = av.AudioFifo()
    batch = 0
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                if first_time is not None and not first_time:
                    first_time.append(_frame_time(frame, stream))
                # A resampler is built for one input format; streams (WebM from meeting
                # bots especially) may change layout or rate mid-way, so rebuild then.
                frame_shape = (frame.format.name, frame.layout.name, frame.sample_rate)
                if resampler is None or frame_shape != shape:
                    if resampler is not None:
                        yield from _resampled(
                            resampler, fifo.read() if fifo.samples else None, channel
                        )
                        yield from _resampled(resampler, None, channel)
                    # s16 as faster-whisper's own decode_audio does: FFmpeg then mixes
                    # channels with normalised weights ((L + R) / 2), no level boost.
                    # One channel: keep the layout, planar, and take that plane.
                    resampler = av.AudioResampler(
                        format="s16" if channel is None else "s16p",
                        layout="mono" if channel is None else frame.layout.name,
                        rate=SAMPLE_RATE,
                    )
                    shape = frame_shape
                    fifo = av.AudioFifo()
                    batch = max(1, frame.sample_rate // 2)
                frame.pts = None  # the FIFO checks continuity; the times are not needed
                fifo.write(frame)
                if fifo.samples >= batch:
                    yield from _resampled(resampler, fifo.read(), channel)
    except av.error.FFmpegError as exc:
        log.warning("audio decoding stopped early, keeping what was decoded: %s", exc)
    if resampler is not None:
        if fifo.samples:
            yield from _resampled(resampler, fifo.read(), channel)
        yield from _resampled(resampler, None, channel)


def _resampled(
    resampler: av.AudioResampler, frame: av.AudioFrame | None, channel: int | None
) -> Iterator[Audio]:
    for out in resampler.resample(frame):
        samples = out.to_ndarray()
        samples = samples.reshape(-1) if channel is None else samples[channel]
        # Same scaling as faster_whisper.audio.decode_audio.
        yield samples.astype(np.float32) / np.float32(32768.0)


_PREROLL_S = 1.0
"""Seek this far before a stretch: decoders (MP3's bit reservoir, AAC, Opus) need
some packets before their output is exact, and seeks land on packet boundaries."""


def _frame_time(frame: av.AudioFrame, stream: AudioStream) -> float | None:
    if frame.pts is None or stream.time_base is None:
        return None
    return float((frame.pts - (stream.start_time or 0)) * stream.time_base)


def _pieces_from(
    path: str | os.PathLike[str],
    container: InputContainer,
    stream: AudioStream,
    channel: int | None,
    start: float,
) -> Iterator[Audio]:
    """Decoded audio from ``start`` seconds on: seek, then drop what precedes ``start``.

    Where the container cannot seek (or the frames carry no timestamps, or the seek
    lands after ``start``), decode from the beginning instead and drop as much.
    """
    target = start - _PREROLL_S
    if target > 0 and stream.time_base is not None:
        first: list[float | None] = []
        try:
            ticks = int(target / stream.time_base) + (stream.start_time or 0)
            container.seek(ticks, stream=stream, backward=True)
        except (av.error.FFmpegError, OverflowError, ValueError) as exc:
            log.debug("cannot seek, decoding from the start: %s", exc)
        else:
            pieces = _decoded_pieces(container, stream, channel, first)
            head = next(pieces, None)
            if head is None:
                return  # nothing after the seek point: past the end
            t0 = first[0] if first else None
            if t0 is not None and t0 <= start:
                yield from _skipped(
                    itertools.chain([head], pieces), round((start - t0) * SAMPLE_RATE)
                )
                return
            log.debug("seek landed at %s s for %s s: decoding from the start", t0, start)
    with _open(path) as again:
        again_stream = _first_audio_stream(again, stream.index)
        pieces = _decoded_pieces(again, again_stream, channel)
        yield from _skipped(pieces, round(start * SAMPLE_RATE))


def _skipped(pieces: Iterator[Audio], skip: int) -> Iterator[Audio]:
    """``pieces`` without their first ``skip`` samples."""
    for piece in pieces:
        if skip >= piece.size:
            skip -= piece.size
            continue
        yield piece[skip:]
        skip = 0


def quietest_cut(window: Audio, sample_rate: int = SAMPLE_RATE) -> int:
    """Where a chunk may end inside ``window``: the middle of its longest near-silent run.

    The same rule ``split_at_silences`` cuts by, as a sample offset into ``window``.
    """
    if not window.size:
        return 0
    return _cut_point(np.asarray(window, dtype=np.float32), 0, sample_rate)
