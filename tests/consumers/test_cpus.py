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
