"""--workers defaults to the CPUs the job has (issue 24): SLURM's allotment, else the affinity."""
from __future__ import annotations

import os

import pytest

from bench.training.runtime import Runtime, allotted_cpus


def test_workers_default_to_the_allotted_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert allotted_cpus() == len(os.sched_getaffinity(0))
    assert Runtime.from_options("cpu", None, None, None).workers == len(os.sched_getaffinity(0))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "7")
    assert Runtime.from_options("cpu", None, None, None).workers == 7
    assert Runtime.from_options("cpu", None, 0, None).workers == 0  # an explicit choice wins
    # a cluster's cells resolve it on the compute node (CellJob), not on the login node
    assert Runtime.from_options("cuda", None, None, None, on_this_machine=False).workers is None
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "")
    assert allotted_cpus() == len(os.sched_getaffinity(0))
