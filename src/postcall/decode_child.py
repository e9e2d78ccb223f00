"""Reading untrusted media in a child process with memory and CPU limits.

Two readings of a recording's bytes run here, in a child process (``python -m
postcall.decode_child``) limited in address space and CPU time, so that a decoder that
crashes, loops or allocates without bound kills the child, not the caller:

* ``probe``: what the API does with every upload and registered object before it
  accepts it (``audio.probe``: the container, its audio streams, the first second
  decoded). A file that kills the child is refused with ``unsupported_media``; the
  API goes on serving everyone else.
* ``measure``: before a worker transcribes a recording it decodes all of it once to
  count its true length (``audio.measure``). A file that kills the child fails the job
  with ``unsupported_media``; the worker goes on. Only media that decoded in full
  within the limits is then decoded again in the worker's own process.

The child answers one JSON line on stdout: ``{"seconds": …}``, ``{"media": …}`` or
``{"error": {"type", "message"}}`` for the media errors of ``postcall.errors``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
from dataclasses import asdict
from typing import Any

from postcall import errors
from postcall.domain import MediaInfo

MEMORY_BYTES = 1 << 30
"""Address space of the child: measuring keeps no audio; Python, NumPy and FFmpeg's
libraries take about 250 MB of it."""

_CPU_BASE_S = 10.0  # the child's start, and short files
_CPU_PER_AUDIO_S = 1 / 20  # decoders run at 100-1000x real time; 20x leaves room
# A probe decodes one second, and demuxes (without decoding) the whole of a file whose
# container states no duration (meeting-bot WebM): a bound for a demuxer that loops,
# not a budget a real upload comes near.
PROBE_CPU_S = 60

_MEDIA_ERRORS: dict[str, type[errors.MediaError]] = {
    cls.__name__: cls
    for cls in (
        errors.UnsupportedMedia,
        errors.NoAudioStream,
        errors.EmptyAudio,
        errors.DurationExceeded,
    )
}


def cpu_limit_s(max_s: float) -> int:
    """CPU seconds the child may use to decode up to ``max_s`` seconds of audio."""
    return int(_CPU_BASE_S + max_s * _CPU_PER_AUDIO_S) + 1


def measure(
    path: str | os.PathLike[str],
    *,
    stream_index: int | None = None,
    max_s: float,
    memory_bytes: int = MEMORY_BYTES,
) -> float:
    """``audio.measure`` in a limited child: the decoded length in seconds.

    Raises what ``audio.measure`` raises, and ``UnsupportedMedia`` when the child dies
    (a decoder crash, or the memory or CPU limit reached). A missing file is OSError.
    """
    arguments = ["--max-s", repr(max_s)]
    if stream_index is not None:
        arguments += ["--stream", str(stream_index)]
    answer = _run(path, arguments, cpu_s=cpu_limit_s(max_s), memory_bytes=memory_bytes)
    return float(answer["seconds"])


def probe(
    path: str | os.PathLike[str],
    *,
    memory_bytes: int = MEMORY_BYTES,
    cpu_s: int = PROBE_CPU_S,
) -> MediaInfo:
    """``audio.probe`` in a limited child: what the media holds.

    Raises what ``audio.probe`` raises, and ``UnsupportedMedia`` when the child dies.
    A missing file is OSError.
    """
    answer = _run(path, ["--probe"], cpu_s=cpu_s, memory_bytes=memory_bytes)
    return MediaInfo.from_dict(answer["media"])


def _run(
    path: str | os.PathLike[str], arguments: list[str], *, cpu_s: int, memory_bytes: int
) -> dict[str, Any]:
    """Run the child on ``path``; its answer, or the media error it reports or dies of."""
    os.stat(path)  # a missing file is the caller's bug, as in audio
    command = [sys.executable, "-m", "postcall.decode_child", os.fspath(path), *arguments]
    command += ["--memory-bytes", str(memory_bytes), "--cpu-s", str(cpu_s)]
    # The child sets its own limits before it loads FFmpeg or reads the file (no
    # preexec_fn: the caller has threads, and fork-then-run-Python is unsafe there).
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            env=env,
            timeout=cpu_s * 4 + 30,  # wall clock: a child blocked on I/O
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise errors.UnsupportedMedia("decoding the file did not finish in time") from None
    answer = _answer(done.stdout)
    if answer is None:
        raise errors.UnsupportedMedia(_died(done.returncode, done.stderr))
    error = answer.get("error")
    if isinstance(error, dict):
        cls = _MEDIA_ERRORS.get(str(error.get("type")), errors.UnsupportedMedia)
        raise cls(str(error.get("message", "the file cannot be decoded")))
    return answer


def _answer(stdout: bytes) -> dict[str, Any] | None:
    """The child's JSON line, or None when it has none (it died first)."""
    lines = stdout.decode(errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    if not isinstance(answer, dict) or not answer.keys() & {"error", "seconds", "media"}:
        return None
    return answer


def _died(returncode: int, stderr: bytes) -> str:
    if returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    else:
        how = f"exited with status {returncode}"
    tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
    detail = f": {tail[0][:200]}" if tail[0] else ""
    return (
        f"decoding the file failed: the decoder {how} (a damaged or hostile file, or one "
        f"past the memory or CPU limit of decoding){detail}"
    )


def main(argv: list[str] | None = None) -> int:
    """The child: probe or measure one file, print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m postcall.decode_child")
    parser.add_argument("path")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--max-s", type=float, help="measure, up to this many seconds")
    what.add_argument("--probe", action="store_true", help="probe the media")
    parser.add_argument("--stream", type=int, default=None)
    parser.add_argument("--memory-bytes", type=int, default=MEMORY_BYTES)
    parser.add_argument("--cpu-s", type=int, default=None)
    args = parser.parse_args(argv)
    cpu_s = args.cpu_s or (PROBE_CPU_S if args.probe else cpu_limit_s(args.max_s))
    resource.setrlimit(resource.RLIMIT_AS, (args.memory_bytes, args.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    try:
        from postcall import audio  # after the limits: FFmpeg's libraries load under them
    except (ImportError, MemoryError) as exc:
        sys.stderr.write(f"cannot load the decoder: {exc}\n")
        return 1

    out: dict[str, Any]
    try:
        if args.probe:
            out = {"media": asdict(audio.probe(args.path))}
        else:
            seconds = audio.measure(args.path, stream_index=args.stream, max_s=args.max_s)
            out = {"seconds": seconds}
    except errors.MediaError as exc:
        out = {"error": {"type": type(exc).__name__, "message": exc.message}}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The answer is written and nothing is left to clean up: skipping the interpreter's
    # teardown (NumPy's and FFmpeg's modules) saves about 30 ms of the child's 0.16 s.
    os._exit(status)
