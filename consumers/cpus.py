"""How many CPUs this process may use: the affinity mask, capped by a cgroup v2 CPU limit.

Why: in a container ``os.cpu_count()`` and the affinity mask report the node's CPUs; a pod
limited to 4 CPUs on a 64-core GPU node would start 64 decode processes (48 MB each) that
then share 4 CPUs' worth of time.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_limit(cpu_max: str) -> int | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` line (``"QUOTA PERIOD"`` or ``"max PERIOD"``),
    rounded up; None when unlimited or unreadable."""
    fields = cpu_max.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period))


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs in the affinity mask, capped by the cgroup's CPU limit when there is one."""
    if hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:
        count = os.cpu_count() or 1
    try:
        limit = cgroup_cpu_limit(cpu_max.read_text())
    except OSError:
        limit = None
    return max(1, min(count, limit) if limit else count)


def cap_torch_threads(cpus: int) -> int:
    """Lower torch's intra-op threads to ``cpus`` when it chose more (it counts the node's
    cores, not the container's CPU limit); returns the number in use."""
    import torch

    if torch.get_num_threads() > cpus:
        torch.set_num_threads(cpus)
    return torch.get_num_threads()


CGROUP_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")
# Decode processes get at most this share of the pod's memory: the service process keeps the
# fleet, the fetched bytes and the batches in the rest.
DECODE_MEMORY_SHARE = 0.5


def cgroup_memory_limit(memory_max: Path = CGROUP_MEMORY_MAX) -> int | None:
    """Bytes allowed by a cgroup v2 ``memory.max``; None when unlimited or unreadable."""
    try:
        text = memory_max.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def decode_process_count(
    cpus: int,
    per_process_bytes: int,
    memory_limit: int | None = None,
    memory_max: Path = CGROUP_MEMORY_MAX,
) -> int:
    """How many decode processes fit: one per CPU, no more than half of the pod's memory
    (``memory_limit``, else the cgroup's ``memory.max``) divided by each one's address-space
    limit, and at least one. A 16 GiB pod on a 64-core node gets 5 processes of 1.5 GB, not 64."""
    limit = memory_limit or cgroup_memory_limit(memory_max)
    if limit is None:
        return max(1, cpus)
    return max(1, min(cpus, int(limit * DECODE_MEMORY_SHARE) // per_process_bytes))
