"""Process-wide CPU settings a CPU Whisper engine makes before its model loads.

Three defaults of the libraries underneath cost a CPU engine time for nothing:

* **CTranslate2's own kernels** (softmax, layer norm, quantisation, the dequantising of
  int8 products) run with AVX2 even on a CPU that has AVX-512: CTranslate2 picks
  AVX-512 only when told (``CT2_FORCE_CPU_ISA=AVX512``). Its matrix products (oneDNN)
  choose their own instructions either way. On 2 cores of an AMD EPYC with AVX-512,
  tiny.en's encoder took 0.075 s for 20 s of context instead of 0.095 s, and
  development meeting 1 (10 min, one decoder of one thread) 14.6 s of CPU time
  instead of 15.5-16.3 s. ``prefer_avx512`` sets it where the CPU has what CTranslate2's AVX-512
  kernels need, unless the operator set ``CT2_FORCE_CPU_ISA`` (to ``AVX2``, say).
* **numpy's BLAS** (OpenBLAS, for the feature extractor's mel filter bank) starts a
  thread per core, and its threads spin for a while after each small product, on the
  cores the decoders need: 8 % of the CPU time of a transcription on one decoder went
  to them, and on two decoders, one per core, development meetings 1-3 took 23.3-23.9 s
  capped against 24.7-26.2 s. ``single_threaded_blas`` caps it at one thread, unless the operator
  set ``OPENBLAS_NUM_THREADS``.

* **glibc's heap** maps every block over its mmap threshold afresh from the kernel and
  unmaps it when it is freed, so each page of it is faulted in and zeroed again the
  next time. CTranslate2 allocates and frees blocks of tens of megabytes in every call
  (the word aligner's output over the whole vocabulary for every token of a batch:
  50 MB for 8 windows of 30 tokens). ``keep_heap`` has glibc serve them from its heap
  (``M_MMAP_MAX`` 0), keep up to ``TRIM_THRESHOLD`` free at the heap's top for the next
  call, and keep one arena for all threads (``ARENA_MAX``). Through a worker, on the
  20-minute development meeting: 30.4 s of CPU time against 34.2 s, peak RSS 555 MB
  against 701 MB. (512 MB kept free in two arenas spared the kernel more, but a
  worker's peak RSS on a 60-minute recording grew from 899 MB to 1,320 MB.)
  A CPU engine sets this when it is built, before a worker's threads start: a thread
  that allocated before keeps an arena of its own (set only when the model loaded, a
  worker's peak RSS on a 60-minute recording was 1,002 MB against 782 MB).
  ``release_heap`` gives the free memory back when the model is unloaded. Unless the
  operator set any of glibc's own ``MALLOC_*`` variables or ``GLIBC_TUNABLES``.

All three affect the whole process (they must: CTranslate2 reads its setting once, at
the first model it loads), so only a CPU engine makes them, before its model loads.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Protocol, cast

log = logging.getLogger(__name__)

# What CTranslate2's AVX-512 kernels are compiled for: it refuses AVX512 without them.
AVX512_FLAGS = frozenset({"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"})
ISA_VARIABLE = "CT2_FORCE_CPU_ISA"
BLAS_VARIABLE = "OPENBLAS_NUM_THREADS"
# glibc's heap (``keep_heap``): mallopt's parameters and the values set.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
M_ARENA_MAX = -8
TRIM_THRESHOLD = 64 * 1024 * 1024
TOP_PAD = 16 * 1024 * 1024
ARENA_MAX = 1
HEAP_SETTINGS = (
    (M_MMAP_MAX, 0),
    (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    (M_TOP_PAD, TOP_PAD),
    (M_ARENA_MAX, ARENA_MAX),
)
# How an operator tunes glibc's heap; with any of them set ``keep_heap`` does nothing.
HEAP_VARIABLES = (
    "GLIBC_TUNABLES",
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_MAX_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_TRIM_THRESHOLD_",
)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags of the first CPU in ``cpuinfo`` (none where the file is
    missing or unreadable, as off Linux)."""
    try:
        with cpuinfo.open(encoding="ascii", errors="replace") as lines:
            for line in lines:
                name, _, value = line.partition(":")
                if name.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def prefer_avx512(
    environ: MutableMapping[str, str] | None = None, flags: Iterable[str] | None = None
) -> bool:
    """Set ``CT2_FORCE_CPU_ISA=AVX512`` in ``environ`` (the process's by default) where
    the CPU has AVX-512 and nothing is set yet; True when it was set here."""
    env = os.environ if environ is None else environ
    if env.get(ISA_VARIABLE):
        return False
    if not AVX512_FLAGS.issubset(cpu_flags() if flags is None else flags):
        return False
    env[ISA_VARIABLE] = "AVX512"
    return True


def single_threaded_blas(environ: MutableMapping[str, str] | None = None) -> bool:
    """Cap numpy's BLAS at one thread unless ``OPENBLAS_NUM_THREADS`` says otherwise;
    True when capped here."""
    env = os.environ if environ is None else environ
    if env.get(BLAS_VARIABLE):
        return False
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    return True


class Glibc(Protocol):
    """What ``keep_heap`` and ``release_heap`` use of the C library."""

    def mallopt(self, param: int, value: int) -> int: ...

    def malloc_trim(self, pad: int) -> int: ...


def glibc() -> Glibc | None:
    """The C library when it is glibc, else None (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return cast(Glibc, libc)


def keep_heap(environ: Mapping[str, str] | None = None, libc: Glibc | None = None) -> bool:
    """Have glibc keep large blocks in its heap for the next call (``HEAP_SETTINGS``)
    unless the operator tuned it (``HEAP_VARIABLES``) or the C library is not glibc;
    True when set here."""
    env = os.environ if environ is None else environ
    if any(env.get(name) for name in HEAP_VARIABLES):
        return False
    lib = glibc() if libc is None else libc
    if lib is None:
        return False
    # mallopt answers 1 when it took a setting; each is tried, whatever the others did.
    return all([lib.mallopt(param, value) == 1 for param, value in HEAP_SETTINGS])


def release_heap(libc: Glibc | None = None) -> bool:
    """Give glibc's free heap memory back to the system (after the model is dropped);
    True when some was."""
    lib = glibc() if libc is None else libc
    return lib is not None and lib.malloc_trim(0) == 1


def tune_for_cpu() -> None:
    """The first two settings, for a CPU engine about to load its model (the engine
    keeps the heap, ``keep_heap``, when it is built)."""
    if prefer_avx512():
        log.info("CTranslate2 set to its AVX-512 kernels (%s=AVX512)", ISA_VARIABLE)
    if single_threaded_blas():
        log.info("numpy's BLAS capped at one thread: the decoders use the cores")
