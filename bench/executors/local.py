"""Run cells one after another in this process, parents first, skipping what is done."""
from __future__ import annotations

import argparse

from bench.console import Display, echo
from bench.errors import StorageError
from bench.executors.base import EXECUTORS, RunSummary
from bench.executors.cell_output import record_failure, tee
from bench.matrix.plan import Cell, describe_cell
from bench.run.runner import run_cell
from bench.training.runtime import Runtime
from bench.results.store import Store


class LocalExecutor:
    """Every cell in this process, one after another."""

    runs_here = True  # the device is this machine's

    def __init__(self, echo: Display = echo) -> None:
        self.echo = echo

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "LocalExecutor":
        return cls()

    def describe(self, runtime: Runtime) -> str:
        return f"{runtime.device} (local executor)"

    def run(self, cells: list[Cell], store: Store, runtime: Runtime) -> RunSummary:
        summary = RunSummary()
        bad: set[str] = set()
        total = len(cells)
        for i, cell in enumerate(cells, 1):
            handle = store.cell(cell.id)
            header = f"[{i}/{total}] {describe_cell(cell)}"
            if handle.is_done():
                summary.skipped.append(cell.id)
                self.echo(f"{header}: already done")
                self.echo.finish(cell.id, "skipped")
                continue
            if any(dep in bad for dep in cell.config.deps.values()):
                summary.blocked.append(cell.id)
                bad.add(cell.id)
                self.echo(f"{header}: blocked (a dependency failed)")
                self.echo.finish(cell.id, "blocked")
                continue
            progress = tee(handle, self.echo)
            progress(header)
            c = cell.config
            self.echo.start(cell.id, f"{c.stage} {c.method} {c.arch}")
            try:
                run_cell(store, cell.id, cell.config, runtime, progress)
            except KeyboardInterrupt:
                progress("  interrupted; rerun to resume from the last checkpoint")
                raise
            except StorageError:  # a full or read-only results folder fails every cell alike: stop here
                raise
            except Exception as error:  # one cell's failure must not stop its siblings
                reason = record_failure(store, cell.id, error)
                progress(f"  FAILED: {reason}")
                summary.failed[cell.id] = reason
                bad.add(cell.id)
                self.echo.finish(cell.id, "failed")
                continue
            handle.failure.unlink(missing_ok=True)
            summary.done.append(cell.id)
            self.echo.finish(cell.id, "done")
        return summary


EXECUTORS.register("local")(LocalExecutor)
