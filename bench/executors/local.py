"""Run cells one after another in this process, parents first, skipping what is done."""
from __future__ import annotations

import argparse
import contextlib
import time
import traceback
from pathlib import Path

from bench.console import Echo, echo
from bench.errors import BenchError, StorageError
from bench.executors import EXECUTORS, RunSummary
from bench.plan import Cell, describe_cell
from bench.runner import run_cell
from bench.runtime import Runtime
from bench.store import Store, atomic_write_json, storage_error


def tee(log_path: Path, echo: Echo) -> Echo:
    """Progress that goes to the terminal and is appended to the cell's log."""
    def emit(message: str) -> None:
        echo(message)
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "a") as handle:
                handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        except OSError as error:
            raise storage_error(log_path, error) or error from None

    return emit


def record_failure(store: Store, cell_id: str, error: BaseException) -> str:
    """Write why a cell failed (for ``bench status``); the reason is one line."""
    text = str(error) if isinstance(error, BenchError) else f"{type(error).__name__}: {error}"
    reason = (text.strip().splitlines() or [type(error).__name__])[0][:500]
    with contextlib.suppress(StorageError):  # the failure itself may be a full disk: the reason still reaches the user
        atomic_write_json(store.cell(cell_id).failure, {"reason": reason, "traceback": traceback.format_exc(), "time": time.time()})
    return reason


class LocalExecutor:
    """Every cell in this process, one after another."""

    runs_here = True  # the device is this machine's

    def __init__(self, echo: Echo = echo) -> None:
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
                continue
            if any(dep in bad for dep in cell.config.deps.values()):
                summary.blocked.append(cell.id)
                bad.add(cell.id)
                self.echo(f"{header}: blocked (a dependency failed)")
                continue
            progress = tee(handle.log, self.echo)
            progress(header)
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
                continue
            handle.failure.unlink(missing_ok=True)
            summary.done.append(cell.id)
        return summary


EXECUTORS.register("local")(LocalExecutor)
