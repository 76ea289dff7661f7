"""What a running cell leaves for its user besides results: its progress log and why it failed.

Shared by the executors and the job a SLURM node runs; light to import (no planner, no pandas).
"""
from __future__ import annotations

import contextlib
import time
import traceback

from bench.console import Echo
from bench.errors import BenchError, StorageError
from bench.store import CellDir, Store, atomic_write_json


def tee(cell: CellDir, echo: Echo) -> Echo:
    """Progress that goes to the terminal and is appended to the cell's log."""
    def emit(message: str) -> None:
        echo(message)
        cell.append_log(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    return emit


def record_failure(store: Store, cell_id: str, error: BaseException) -> str:
    """Write why a cell failed (for ``bench status``); the reason is one line."""
    text = str(error) if isinstance(error, BenchError) else f"{type(error).__name__}: {error}"
    reason = (text.strip().splitlines() or [type(error).__name__])[0][:500]
    with contextlib.suppress(StorageError):  # the failure itself may be a full disk or a planted link: the reason still reaches the user
        store.cell(cell_id).refuse_links()
        atomic_write_json(store.cell(cell_id).failure, {"reason": reason, "traceback": traceback.format_exc(), "time": time.time()})
    return reason
