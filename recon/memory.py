"""How much memory recon may use, and refusing work that would need more, with a message, instead of being
killed by the operating system without one.

The budget is ``RECON_MEMORY_GB`` when set, else the memory available now (the smaller of the system's and the
container's, cgroup v2)."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from recon.errors import InputError, TooLargeError

BUDGET_VARIABLE = "RECON_MEMORY_GB"
LOAD_BYTES_PER_VOXEL = 8  # the stored slices and the float32 volume
RUN_BYTES_PER_VOXEL = 24  # recon run's measured peak: 1.8 GB on a 512 x 512 x 300 CT (78.6 million voxels)
CGROUP = Path("/sys/fs/cgroup")


def memory_budget_bytes() -> int:
    configured = os.environ.get(BUDGET_VARIABLE)
    if configured:
        try:
            budget_gb = float(configured)
        except ValueError:
            budget_gb = float("nan")
        if not budget_gb > 0:
            raise InputError(f"{BUDGET_VARIABLE}={configured!r}: expected a positive number of gigabytes")
        return int(budget_gb * 1e9)
    return min(psutil.virtual_memory().available, _container_headroom())


def require_memory(voxels: int, bytes_per_voxel: int, what: str, source: str) -> None:
    """Raise ``TooLargeError`` when ``what`` on ``voxels`` voxels would need more than the budget."""
    need, budget = voxels * bytes_per_voxel, memory_budget_bytes()
    if need > budget:
        raise TooLargeError(
            f"{source}: {what} on {voxels} voxels needs about {need / 1e9:.1f} GB and the budget is "
            f"{budget / 1e9:.1f} GB; free memory, set {BUDGET_VARIABLE} to a larger budget, or crop or resample "
            "the CT first")


def _container_headroom() -> int:
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        used = int((CGROUP / "memory.current").read_text())
    except (OSError, ValueError):
        return 2**63 - 1
    return 2**63 - 1 if limit == "max" else max(0, int(limit) - used)
