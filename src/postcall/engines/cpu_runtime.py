"""Process-wide CPU settings a CPU Whisper engine makes before its model loads.

Two defaults of the libraries underneath cost a CPU engine time for nothing:

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

Both affect the whole process (they must: CTranslate2 reads its setting once, at the
first model it loads), so only a CPU engine makes them, once, before loading.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, MutableMapping
from pathlib import Path

log = logging.getLogger(__name__)

# What CTranslate2's AVX-512 kernels are compiled for: it refuses AVX512 without them.
AVX512_FLAGS = frozenset({"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"})
ISA_VARIABLE = "CT2_FORCE_CPU_ISA"
BLAS_VARIABLE = "OPENBLAS_NUM_THREADS"


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


def tune_for_cpu() -> None:
    """Both settings, for a CPU engine about to load its model."""
    if prefer_avx512():
        log.info("CTranslate2 set to its AVX-512 kernels (%s=AVX512)", ISA_VARIABLE)
    if single_threaded_blas():
        log.info("numpy's BLAS capped at one thread: the decoders use the cores")
