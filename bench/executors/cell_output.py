"""What a running cell leaves for its user besides results: its progress log and why it failed.

Shared by the executors and the job a SLURM node runs; light to import (no planner, no pandas).
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.console import Echo
from bench.errors import BenchError, StorageError
from bench.results.store import CellDir, Store, atomic_write_json, read_json


class tee:
    """Progress that goes to the terminal and is appended to the cell's log (never through a
    link: ``CellDir.append_log``); a display's in-epoch position (``batch``) goes to the display only."""

    def __init__(self, cell: CellDir, echo: Echo) -> None:
        self.cell, self.echo = cell, echo
        self.batch = getattr(echo, "batch", None)

    def __call__(self, message: str) -> None:
        self.echo(message)
        self.cell.append_log(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def record_failure(store: Store, cell_id: str, error: BaseException) -> str:
    """Write why a cell failed (for ``bench status``); the reason is one line."""
    text = str(error) if isinstance(error, BenchError) else f"{type(error).__name__}: {error}"
    reason = (text.strip().splitlines() or [type(error).__name__])[0][:500]
    with contextlib.suppress(StorageError):  # the failure itself may be a full disk or a planted link: the reason still reaches the user
        store.cell(cell_id).refuse_links()
        atomic_write_json(store.cell(cell_id).failure, {"reason": reason, "traceback": traceback.format_exc(), "time": time.time()})
    return reason


_WARNED: set[str] = set()


def warn_once(path: Path, problem: str, consequence: str) -> None:
    """``bench: warning: <path>: <problem>; <consequence>``, once per file and process."""
    if str(path) not in _WARNED:
        _WARNED.add(str(path))
        print(f"bench: warning: {path}: {problem}; {consequence}", file=sys.stderr)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_failure(cell: CellDir) -> dict[str, Any] | None:
    """A cell's failure.json as ``{"reason": str, "time": float | None}``, or None when it has none.
    A damaged one (not JSON, not an object, a reason that is not text) is one warning and counts
    as a failure without a reason: cluster state is checked like every other file read back."""
    if not cell.failure.exists():
        return None
    try:
        written = read_json(cell.failure)
        problem = None if isinstance(written, dict) else "not a JSON object"
    except (BenchError, OSError, UnicodeDecodeError) as error:
        written, problem = {}, str(error).removeprefix(f"{cell.failure}: ")
    if problem is None and not isinstance(written.get("reason"), str):
        problem = "its reason is not text"
    if problem is not None:
        warn_once(cell.failure, problem, "read as a failure without a reason")
        return {"reason": "", "time": None}
    return {"reason": written["reason"][:500], "time": written.get("time") if _number(written.get("time")) else None}
