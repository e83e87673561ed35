"""The hashing pool is sized from the container's CPU limit, on cgroup v2 and v1 nodes."""

from __future__ import annotations

import os
from pathlib import Path

from app.settings import available_cpus

HOST_CPUS = len(os.sched_getaffinity(0))


def test_cgroup_v2_limit(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert available_cpus(tmp_path) == 1


def test_cgroup_v2_fractional_limit_rounds_up(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == 1


def test_cgroup_v1_limit(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == 1


def test_no_limit_means_the_affinity_mask(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == HOST_CPUS
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == HOST_CPUS
