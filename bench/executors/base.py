"""What every executor is (``Executor``), what a run of cells ends with (``RunSummary``), and the
registry the executors join when their module is imported."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from bench.registry import Registry

if TYPE_CHECKING:  # importing these pulls in torch; the CLI's start-up should not
    from bench.matrix.plan import Cell
    from bench.training.runtime import Runtime
    from bench.results.store import Store


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)  # finished in this run
    skipped: list[str] = field(default_factory=list)  # already done before
    failed: dict[str, str] = field(default_factory=dict)  # id -> one-line reason
    blocked: list[str] = field(default_factory=list)  # a dependency failed
    submitted: list[str] = field(default_factory=list)  # queued elsewhere, not waited for

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked


class Executor(Protocol):
    """Hands ready cells to compute. ``runs_here``: whether cells run on this machine (so its
    device is checked here); ``from_args`` builds one from the command line's options."""

    runs_here: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Executor": ...

    def describe(self, runtime: Runtime) -> str: ...

    def run(self, cells: list[Cell], store: Store, runtime: Runtime) -> RunSummary: ...


EXECUTORS: Registry[type[Executor]] = Registry("executor")

