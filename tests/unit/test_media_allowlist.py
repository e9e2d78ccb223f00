"""What postcall.audio opens: accepted formats only, the one file only, true lengths.

Each hostile file is made here. Where a refusal is the point, a control shows that
FFmpeg on its own (PyAV without postcall's options) does follow the file: the
playlist does read the other file, the concat list does read the other blob, and
the listener does see a connection. So a refusal is the allow-list's doing.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from postcall import audio, errors
from tests import hostile_media as hostile
from tests import media

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="no ffmpeg CLI")


# --- every accepted format opens ---------------------------------------------------


_TONE = ("ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=f=440:d=2")


def _ffmpeg(path: Path, *codec: str) -> Path:
    subprocess.run([*_TONE, "-ac", "1", *codec, str(path)], check=True)
    return path


def _amr(path: Path) -> Path:
    # No AMR encoder in Debian's FFmpeg: AMR-NB storage format by hand, 100 frames of
    # 12.2 kbit/s (header 0x3C, 31 bytes of arbitrary speech bits) = 2 s.
    rng = random.Random(1)
    path.write_bytes(b"#!AMR\n" + b"".join(b"\x3c" + rng.randbytes(31) for _ in range(100)))
    return path


ACCEPTED = {
    "call.wav": (),
    "call.w64": (),
    "call.flac": (),
    "call.mp3": (),
    "call.opus": (),
    "call.ogg": ("-c:a", "libvorbis"),
    "call.webm": (),
    "call.mka": (),
    "call.m4a": (),
    "call.mp4": (),
    "call.mov": (),
    "call.3gp": ("-c:a", "aac"),
    "call.aac": (),
    "call.caf": (),
    "call.aiff": (),
    "call.au": ("-c:a", "pcm_mulaw", "-ar", "8000"),
    "call.amr": None,
}


@needs_ffmpeg
@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_formats_open_and_decode_to_their_length(tmp_path: Path, name: str) -> None:
    codec = ACCEPTED[name]
    path = _amr(tmp_path / name) if codec is None else _ffmpeg(tmp_path / name, *codec)
    info = audio.probe(path)
    assert set(info.format.split(",")) & set(audio.ACCEPTED_FORMATS)
    assert audio.measure(path) == pytest.approx(2.0, abs=0.1)
    decoded = np.concatenate(list(audio.decode(path)))
    assert decoded.size / audio.SAMPLE_RATE == pytest.approx(2.0, abs=0.1)


@needs_ffmpeg
@pytest.mark.parametrize("name", ["call.ts", "call.wma", "call.avi"])
def test_other_containers_are_refused_though_ffmpeg_reads_them(tmp_path: Path, name: str) -> None:
    path = _ffmpeg(tmp_path / name)
    with av.open(str(path)) as raw:  # control: FFmpeg alone reads it
        assert raw.streams.audio
    with pytest.raises(errors.UnsupportedMedia, match="not in an accepted"):
        audio.probe(path)
    with pytest.raises(errors.UnsupportedMedia):
        next(audio.decode(path))


# --- nothing nested is opened --------------------------------------------------------


class Listener:
    """A TCP listener on a free local port that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()  # FFmpeg then fails at once instead of waiting for a reply

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.close()


def _raw_samples(path: Path) -> int:
    """What FFmpeg on its own decodes from ``path`` (no allow-lists): the control."""
    with av.open(str(path), metadata_errors="ignore") as raw:
        return sum(frame.samples for frame in raw.decode(audio=0))


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """Another file on the host (another tenant's recording): 2 s of tone."""
    return media.write_audio(tmp_path / "secret.mp3", hostile.tone(2.0), codec="mp3")


def test_hls_playlist_naming_a_host_file_is_refused_unread(tmp_path: Path, secret: Path) -> None:
    playlist = hostile.hls_playlist(tmp_path / "call.m3u8", f"file://{secret}")
    assert _raw_samples(playlist) > 16000  # control: FFmpeg alone reads the secret
    with pytest.raises(errors.UnsupportedMedia, match="playlists"):
        audio.probe(playlist)
    with pytest.raises(errors.UnsupportedMedia):
        audio.measure(playlist)


def test_concat_list_naming_another_blob_is_refused_unread(tmp_path: Path, secret: Path) -> None:
    concat = hostile.ffconcat(tmp_path / "upload.bin", secret.name)
    assert _raw_samples(concat) > 16000  # control: FFmpeg alone reads the other blob
    with pytest.raises(errors.UnsupportedMedia, match="playlists"):
        audio.probe(concat)
    with pytest.raises(errors.UnsupportedMedia):
        next(audio.decode(concat))


def test_concat_list_naming_etc_passwd_is_unsupported_media(tmp_path: Path) -> None:
    concat = hostile.ffconcat(tmp_path / "upload.wav", "/etc/passwd")
    with pytest.raises(errors.UnsupportedMedia):
        audio.probe(concat)


def _wait_connections(listener: Listener, at_least: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while listener.connections < at_least and time.monotonic() < deadline:
        time.sleep(0.02)
    return listener.connections


def test_playlist_naming_a_local_listener_makes_no_connection(
    tmp_path: Path, listener: Listener
) -> None:
    playlist = hostile.hls_playlist(
        tmp_path / "call.m3u8", f"http://127.0.0.1:{listener.port}/seg0.ts"
    )
    with pytest.raises(errors.UnsupportedMedia):
        audio.probe(playlist)
    with pytest.raises(errors.UnsupportedMedia):
        audio.measure(playlist)
    with pytest.raises(errors.UnsupportedMedia):
        audio.probe(hostile.ffconcat(tmp_path / "list.wav", f"http://127.0.0.1:{listener.port}/"))
    with pytest.raises(errors.UnsupportedMedia):
        audio.probe(hostile.sdp(tmp_path / "call.sdp", listener.port))
    assert listener.connections == 0
    # Control: the listener does count a connection. (FFmpeg's HLS demuxer, on its
    # own, already keeps a local playlist off http; the allow-list refuses it sooner.)
    socket.create_connection(("127.0.0.1", listener.port)).close()
    assert _wait_connections(listener, 1) == 1


def test_sdp_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(errors.UnsupportedMedia):
        audio.probe(hostile.sdp(tmp_path / "call.sdp", 5004))


def test_a_relative_path_is_never_read_as_a_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "concat:a|b" is FFmpeg's concat protocol when given as a name; as a file here
    # it is a plain (good) recording.
    monkeypatch.chdir(tmp_path)
    weird = tmp_path / "concat:a.wav|b.wav"
    media.write_audio(weird, hostile.tone(1.0))
    assert audio.probe(weird.name).duration == pytest.approx(1.0, abs=0.01)


# --- shapes no recorder produces ---------------------------------------------------


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: hostile.many_channels_wav(p, 40), "40 channels"),
        (lambda p: hostile.absurd_rate_wav(p, 1), "sample rate"),
        (lambda p: hostile.absurd_rate_wav(p, 2_000_000_000), "sample rate"),
        (lambda p: hostile.random_bytes(p), "not in an accepted"),
    ],
    ids=["40-channels", "1-hz", "2-ghz", "random-bytes"],
)
def test_impossible_shapes_are_unsupported(tmp_path: Path, make: Any, match: str) -> None:
    path = make(tmp_path / "call.wav")
    with pytest.raises(errors.UnsupportedMedia, match=match):
        audio.probe(path)
    with pytest.raises(errors.UnsupportedMedia, match=match):
        audio.measure(path)


def test_too_many_audio_streams_are_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "streams.mka"
    with av.open(str(path), "w") as out:
        streams = [out.add_stream("pcm_s16le", rate=16000) for _ in range(33)]
        for stream in streams:
            stream.layout = "mono"  # type: ignore[union-attr]
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.int16), "s16", "mono")
        frame.sample_rate = 16000
        for stream in streams:
            for packet in stream.encode(frame):  # type: ignore[union-attr]
                out.mux(packet)
    with pytest.raises(errors.UnsupportedMedia, match="33 audio streams"):
        audio.probe(path)


def test_truncated_files_get_a_media_error(tmp_path: Path) -> None:
    flac = media.write_audio(tmp_path / "full.flac", hostile.tone(2.0), codec="flac")
    with pytest.raises(errors.UnsupportedMedia):
        audio.probe(hostile.truncated(tmp_path / "cut.flac", flac, 60))
    with pytest.raises(errors.EmptyAudio):
        audio.probe(hostile.wav_header_only(tmp_path / "header.wav"))


# --- lengths are counted, not read from headers -----------------------------------


@pytest.mark.parametrize("make", [hostile.lying_flac, hostile.lying_wav], ids=["flac", "wav"])
def test_lying_header_is_caught_by_counting(tmp_path: Path, make: Any) -> None:
    path = make(tmp_path / "call", holds_s=220.0, claims_s=11.0)
    assert audio.probe(path).duration == pytest.approx(11.0, abs=0.1)  # the lie
    assert audio.measure(path) == pytest.approx(220.0, abs=0.1)  # the truth
    assert audio.measure(path, max_s=300) == pytest.approx(220.0, abs=0.1)
    with pytest.raises(errors.DurationExceeded):
        audio.measure(path, max_s=60)
    got = 0
    with pytest.raises(errors.DurationExceeded):
        for block in audio.decode(path, max_s=60, block_s=1.0):
            got += block.size
    assert 60 * audio.SAMPLE_RATE <= got <= 61 * audio.SAMPLE_RATE  # stopped at the cap


def _bytes_read() -> int:
    """Bytes this process has read through read(2) so far (/proc/self/io ``rchar``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_decoding_stops_at_the_cap_not_at_the_end(tmp_path: Path) -> None:
    # Ten minutes claiming 10 s: a limit of 60 s reads about the first 61 s of the file.
    path = hostile.lying_flac(tmp_path / "long.flac", holds_s=600.0, claims_s=10.0)
    size = path.stat().st_size
    before = _bytes_read()
    with pytest.raises(errors.DurationExceeded):
        audio.measure(path, max_s=60)
    measured = _bytes_read() - before
    before = _bytes_read()
    with pytest.raises(errors.DurationExceeded):
        for _ in audio.decode(path, max_s=60):
            pass
    decoded = _bytes_read() - before
    before = _bytes_read()
    assert audio.measure(path) == pytest.approx(600.0, abs=0.1)
    whole = _bytes_read() - before
    assert whole >= size  # the counter sees the file read through
    assert measured < size / 4 and decoded < size / 4  # the ten minutes were not read


def test_a_stretch_before_the_cap_decodes_and_one_past_it_raises(tmp_path: Path) -> None:
    path = hostile.lying_wav(tmp_path / "call.wav", holds_s=90.0, claims_s=11.0)
    stretch = np.concatenate(list(audio.decode(path, start=20.0, end=50.0, max_s=60)))
    assert stretch.size == 30 * audio.SAMPLE_RATE
    with pytest.raises(errors.DurationExceeded):
        list(audio.decode(path, start=50.0, max_s=60))
    assert np.concatenate(list(audio.decode(path, start=50.0, max_s=100))).size == (
        40 * audio.SAMPLE_RATE
    )


def test_whisper_compatible_app_refuses_by_decoded_length_and_format(
    tmp_path: Path, secret: Path
) -> None:
    from fastapi.testclient import TestClient

    from postcall.api.whisper import create_whisper_app
    from tests.fakes import ScriptedEngine

    engine = ScriptedEngine()
    app = create_whisper_app(engine, model_name="m", max_upload_bytes=10**8, max_duration_s=60)
    liar = hostile.lying_flac(tmp_path / "liar.flac", holds_s=220.0, claims_s=11.0)
    playlist = hostile.hls_playlist(tmp_path / "call.m3u8", f"file://{secret}")
    with TestClient(app) as client:
        for path, code in ((liar, "duration_exceeded"), (playlist, "unsupported_media")):
            r = client.post(
                "/v1/audio/transcriptions", files={"file": (path.name, path.read_bytes())}
            )
            assert (r.status_code, r.json()["error"]["code"]) == (400, code), r.text
    assert engine.calls == 0


# --- the first full decode runs in a limited child ---------------------------------


def test_the_limited_child_measures_as_the_process_does(tmp_path: Path, secret: Path) -> None:
    from postcall import decode_child

    liar = hostile.lying_flac(tmp_path / "liar.flac", holds_s=220.0, claims_s=11.0)
    assert decode_child.measure(liar, max_s=300) == pytest.approx(audio.measure(liar))
    with pytest.raises(errors.DurationExceeded, match="60 s"):
        decode_child.measure(liar, max_s=60)
    playlist = hostile.hls_playlist(tmp_path / "call.m3u8", f"file://{secret}")
    with pytest.raises(errors.UnsupportedMedia, match="playlists"):
        decode_child.measure(playlist, max_s=60)
    with pytest.raises(errors.EmptyAudio):
        decode_child.measure(hostile.wav_header_only(tmp_path / "h.wav"), max_s=60)


def test_the_upload_probe_runs_in_a_limited_child_as_it_would_in_process(
    tmp_path: Path, secret: Path
) -> None:
    from postcall import decode_child

    assert decode_child.probe(secret) == audio.probe(secret)
    playlist = hostile.hls_playlist(tmp_path / "call.m3u8", f"file://{secret}")
    with pytest.raises(errors.UnsupportedMedia, match="playlists"):
        decode_child.probe(playlist)
    with pytest.raises(errors.EmptyAudio):
        decode_child.probe(hostile.wav_header_only(tmp_path / "h.wav"))
    # A probe that kills its child (here it cannot even load FFmpeg) costs the file.
    with pytest.raises(errors.UnsupportedMedia, match="decoding the file failed"):
        decode_child.probe(secret, memory_bytes=64 << 20)


def test_a_child_that_dies_costs_the_file_not_the_caller(tmp_path: Path, secret: Path) -> None:
    from postcall import decode_child

    # 64 MiB of address space: the child cannot even load FFmpeg, and dies.
    with pytest.raises(errors.UnsupportedMedia, match="decoding the file failed"):
        decode_child.measure(secret, max_s=60, memory_bytes=64 << 20)
    assert decode_child.measure(secret, max_s=60) == pytest.approx(2.0, abs=0.1)
