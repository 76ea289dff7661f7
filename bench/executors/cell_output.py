"""What a running cell leaves for its user besides results: its progress log and why it failed.

Shared by the executors and the job a SLURM node runs; light to import (no planner, no pandas).
"""
from __future__ import annotations

import contextlib
import time
import traceback
from pathlib import Path

from bench.console import Echo
from bench.errors import BenchError, StorageError
from bench.store import Store, atomic_write_json, storage_error


class tee:
    """Progress that goes to the terminal and is appended to the cell's log; a display's
    in-epoch position (``batch``) goes to the display only."""

    def __init__(self, log_path: Path, echo: Echo) -> None:
        self.log_path, self.echo = log_path, echo
        self.batch = getattr(echo, "batch", None)

    def __call__(self, message: str) -> None:
        self.echo(message)
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a") as handle:
                handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        except OSError as error:
            raise storage_error(self.log_path, error) or error from None


def record_failure(store: Store, cell_id: str, error: BaseException) -> str:
    """Write why a cell failed (for ``bench status``); the reason is one line."""
    text = str(error) if isinstance(error, BenchError) else f"{type(error).__name__}: {error}"
    reason = (text.strip().splitlines() or [type(error).__name__])[0][:500]
    with contextlib.suppress(StorageError):  # the failure itself may be a full disk: the reason still reaches the user
        atomic_write_json(store.cell(cell_id).failure, {"reason": reason, "traceback": traceback.format_exc(), "time": time.time()})
    return reason
