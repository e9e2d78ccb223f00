"""The process-wide CPU settings a CPU Whisper engine makes before its model loads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from postcall.engines.cpu_runtime import (
    AVX512_FLAGS,
    cpu_flags,
    prefer_avx512,
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
