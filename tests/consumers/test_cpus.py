"""CPU counting: a cgroup v2 limit caps the affinity mask."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from consumers.cpus import available_cpus, cap_torch_threads, cgroup_cpu_limit


@pytest.mark.parametrize(
    ("line", "cpus"),
    [
        ("max 100000\n", None),
        ("200000 100000\n", 2),
        ("150000 100000\n", 2),
        ("50000 100000\n", 1),
        ("", None),
        ("garbage", None),
        ("0 100000", None),
    ],
)
def test_cgroup_cpu_limit(line: str, cpus: int | None) -> None:
    assert cgroup_cpu_limit(line) == cpus


def test_available_cpus_is_the_affinity_mask_capped_by_the_limit(tmp_path: Path) -> None:
    mask = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert available_cpus(cpu_max) == mask
    cpu_max.write_text("100000 100000\n")
    assert available_cpus(cpu_max) == 1
    cpu_max.write_text(f"{(mask + 8) * 100000} 100000\n")
    assert available_cpus(cpu_max) == mask
    assert available_cpus(tmp_path / "missing") == mask


def test_torch_threads_are_capped_never_raised() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert cap_torch_threads(1) == 1 == torch.get_num_threads()
        assert cap_torch_threads(4) == 1
    finally:
        torch.set_num_threads(before)


def test_decode_processes_fit_half_the_pod_memory(tmp_path: Path) -> None:
    from consumers.cpus import cgroup_memory_limit, decode_process_count

    gib = 1 << 30
    memory_max = tmp_path / "memory.max"
    memory_max.write_text("max\n")
    assert cgroup_memory_limit(memory_max) is None
    assert decode_process_count(64, int(1.5 * gib), None, memory_max) == 64
    memory_max.write_text(f"{16 * gib}\n")
    assert cgroup_memory_limit(memory_max) == 16 * gib
    # 64 node CPUs under a 16 GiB limit: 5 processes of 1.5 GiB (half the memory), not 64
    assert decode_process_count(64, int(1.5 * gib), None, memory_max) == 5
    assert decode_process_count(64, int(1.5 * gib), 4 * gib, memory_max) == 1  # the chart's value
    assert decode_process_count(2, int(1.5 * gib), None, memory_max) == 2  # CPUs bound first
    assert decode_process_count(8, 4 * gib, gib, memory_max) == 1  # never zero


def test_settings_size_decode_processes_from_the_pod_limits() -> None:
    from consumers.settings import Settings

    gib = 1 << 30
    settings = Settings(
        cpu_limit_millicores=1500, memory_limit_bytes=8 * gib, decode_memory_bytes=gib
    )
    assert settings.cpus() == min(2, available_cpus())
    assert settings.decode_parallelism() == min(2, available_cpus())
    small = Settings(memory_limit_bytes=2 * gib, decode_memory_bytes=gib)
    assert small.decode_parallelism() == 1
    assert Settings(decode_workers=3, memory_limit_bytes=gib).decode_parallelism() == 3


def test_a_small_pod_lowers_each_decode_processs_limit() -> None:
    from consumers.settings import Settings

    gib = 1 << 30
    assert Settings(memory_limit_bytes=2 * gib).decode_process_memory() == gib
    assert Settings(memory_limit_bytes=64 * gib).decode_process_memory() == 1_500_000_000
    assert Settings(memory_limit_bytes=gib // 4).decode_process_memory() == 256_000_000
