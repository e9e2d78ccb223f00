"""Measuring a recording in a child process with memory and CPU limits.

Before a worker transcribes a recording it decodes all of it once to count its true
length (``audio.measure``). That first full pass over untrusted bytes runs here, in a
child process (``python -m postcall.decode_child``) limited in address space and CPU
time: a decoder that crashes, loops or allocates without bound kills the child, and
the job fails with ``unsupported_media``; the worker goes on. Only media that decoded
in full within the limits is then decoded again in the worker's own process.

The child answers one JSON line on stdout: ``{"seconds": …}`` or ``{"error": {"type",
"message"}}`` for the media errors of ``postcall.errors``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
from typing import Any

from postcall import errors

MEMORY_BYTES = 1 << 30
"""Address space of the child: measuring keeps no audio; Python, NumPy and FFmpeg's
libraries take about 250 MB of it."""

_CPU_BASE_S = 10.0  # the child's start, and short files
_CPU_PER_AUDIO_S = 1 / 20  # decoders run at 100-1000x real time; 20x leaves room

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
    os.stat(path)  # a missing file is the caller's bug, as in audio.measure
    cpu_s = cpu_limit_s(max_s)
    command = [sys.executable, "-m", "postcall.decode_child", os.fspath(path)]
    command += ["--max-s", repr(max_s), "--memory-bytes", str(memory_bytes)]
    command += ["--cpu-s", str(cpu_s)]
    if stream_index is not None:
        command += ["--stream", str(stream_index)]
    # The child sets its own limits before it loads FFmpeg or reads the file (no
    # preexec_fn: the worker has threads, and fork-then-run-Python is unsafe there).
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
    return float(answer["seconds"])


def _answer(stdout: bytes) -> dict[str, Any] | None:
    """The child's JSON line, or None when it has none (it died first)."""
    lines = stdout.decode(errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    if not isinstance(answer, dict) or not ("error" in answer or "seconds" in answer):
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
    """The child: measure one file, print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m postcall.decode_child")
    parser.add_argument("path")
    parser.add_argument("--max-s", type=float, required=True)
    parser.add_argument("--stream", type=int, default=None)
    parser.add_argument("--memory-bytes", type=int, default=MEMORY_BYTES)
    parser.add_argument("--cpu-s", type=int, default=None)
    args = parser.parse_args(argv)
    cpu_s = args.cpu_s or cpu_limit_s(args.max_s)
    resource.setrlimit(resource.RLIMIT_AS, (args.memory_bytes, args.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    try:
        from postcall import audio  # after the limits: FFmpeg's libraries load under them
    except (ImportError, MemoryError) as exc:
        sys.stderr.write(f"cannot load the decoder: {exc}\n")
        return 1

    out: dict[str, Any]
    try:
        seconds = audio.measure(args.path, stream_index=args.stream, max_s=args.max_s)
    except errors.MediaError as exc:
        out = {"error": {"type": type(exc).__name__, "message": exc.message}}
    else:
        out = {"seconds": seconds}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
