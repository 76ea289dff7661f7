"""Executors hand ready cells to compute: in this process, or to SLURM through submitit."""
from __future__ import annotations

from typing import TYPE_CHECKING

from bench.executors.base import EXECUTORS

if TYPE_CHECKING:
    from bench.executors.base import Executor


def get_executor(name: str) -> type[Executor]:
    """Look an executor up by name; the modules (torch, submitit) load only when one is needed."""
    from bench.executors import local, slurm  # noqa: F401  (register themselves)

    return EXECUTORS.get(name)
