"""The process-wide CPU settings a CPU Whisper engine makes before its model loads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from postcall.engines.cpu_runtime import (
    AVX512_FLAGS,
    HEAP_SETTINGS,
    HEAP_VARIABLES,
    TOP_PAD,
    TRIM_THRESHOLD,
    cpu_flags,
    glibc,
    keep_heap,
    prefer_avx512,
    release_heap,
    single_threaded_blas,
)

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse4_1 avx avx2 {extra}
bugs\t\t: sysret_ss_attrs

processor\t: 1
flags\t\t: fpu
"""


def test_cpu_flags_come_from_the_first_cpu(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO.format(extra="avx512f avx512bw"))
    assert cpu_flags(info) == {"fpu", "sse4_1", "avx", "avx2", "avx512f", "avx512bw"}


def test_no_cpuinfo_means_no_flags(tmp_path: Path) -> None:
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_avx512_is_chosen_where_the_cpu_has_all_it_needs() -> None:
    env: dict[str, str] = {}
    assert prefer_avx512(env, {"avx2", *AVX512_FLAGS})
    assert env == {"CT2_FORCE_CPU_ISA": "AVX512"}


def test_avx512_is_not_chosen_without_one_of_its_flags() -> None:
    for missing in AVX512_FLAGS:
        env: dict[str, str] = {}
        assert not prefer_avx512(env, AVX512_FLAGS - {missing})
        assert env == {}


def test_the_operators_choice_stands() -> None:
    env = {"CT2_FORCE_CPU_ISA": "AVX2"}
    assert not prefer_avx512(env, AVX512_FLAGS)
    assert env == {"CT2_FORCE_CPU_ISA": "AVX2"}


@pytest.fixture
def blas_restored() -> Iterator[None]:
    before = {i["prefix"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    yield
    threadpool_limits(limits=before)


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


@pytest.mark.usefixtures("blas_restored")
def test_numpys_blas_is_capped_at_one_thread() -> None:
    threadpool_limits(limits=2, user_api="blas")
    assert _blas_threads() and all(n == 2 for n in _blas_threads())
    assert single_threaded_blas({})
    assert all(n == 1 for n in _blas_threads())


@pytest.mark.usefixtures("blas_restored")
def test_an_operators_blas_threads_stand() -> None:
    threadpool_limits(limits=2, user_api="blas")
    assert not single_threaded_blas({"OPENBLAS_NUM_THREADS": "2"})
    assert all(n == 2 for n in _blas_threads())


class FakeGlibc:
    """Records what is asked of it; ``refuse`` holds mallopt parameters it rejects."""

    def __init__(self, refuse: frozenset[int] = frozenset()) -> None:
        self.settings: list[tuple[int, int]] = []
        self.trims: list[int] = []
        self.refuse = refuse

    def mallopt(self, param: int, value: int) -> int:
        self.settings.append((param, value))
        return 0 if param in self.refuse else 1

    def malloc_trim(self, pad: int) -> int:
        self.trims.append(pad)
        return 1


def test_the_heap_is_kept_with_every_setting() -> None:
    libc = FakeGlibc()
    assert keep_heap({}, libc)
    assert libc.settings == list(HEAP_SETTINGS)


def test_a_refused_setting_does_not_stop_the_others() -> None:
    first = HEAP_SETTINGS[0][0]
    libc = FakeGlibc(refuse=frozenset({first}))
    assert not keep_heap({}, libc)
    assert libc.settings == list(HEAP_SETTINGS)


def test_an_operators_heap_settings_stand() -> None:
    for name in HEAP_VARIABLES:
        libc = FakeGlibc()
        assert not keep_heap({name: "1"}, libc)
        assert libc.settings == []


def test_the_heap_is_given_back() -> None:
    libc = FakeGlibc()
    assert release_heap(libc)
    assert libc.trims == [0]


# Allocates, touches and frees a block of ``BLOCK`` a few times and prints the page
# faults of the last rounds (after the first, which faults the block in either way).
# Larger than glibc's largest mmap threshold (32 MB), smaller than what a kept heap keeps.
BLOCK = 40 << 20
FAULTS = textwrap.dedent(
    """
    import ctypes, resource, sys
    from postcall.engines.cpu_runtime import glibc, keep_heap
    if sys.argv[1] == "keep":
        assert keep_heap()
    libc = glibc()
    assert libc is not None
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = int(sys.argv[2])
    def once():
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
    once()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        once()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


@pytest.mark.skipif(glibc() is None, reason="glibc's heap only")
def test_a_kept_heap_does_not_fault_a_large_block_in_again() -> None:
    env = {k: v for k, v in os.environ.items() if k not in HEAP_VARIABLES}

    def faults(mode: str) -> int:
        run = [sys.executable, "-c", FAULTS, mode, str(BLOCK)]
        return int(subprocess.run(run, env=env, check=True, capture_output=True).stdout)

    assert BLOCK + TOP_PAD < TRIM_THRESHOLD
    pages = BLOCK // os.sysconf("SC_PAGE_SIZE")
    # Given back and mapped again: every page of every round faults in again.
    assert faults("default") >= 4 * pages * 0.9
    # Kept: the rounds after the first reuse the pages already faulted in.
    assert faults("keep") < pages * 0.1
