"""The results folder: one directory per cell, atomic writes, a done marker written last.

Layout under ``<results>/``::

    cells/<id>/config.json     resolved config (written before training starts)
    cells/<id>/metrics.json    per-epoch metrics (rewritten atomically every epoch)
    cells/<id>/checkpoint.pt   latest epoch: model, optimizer, scheduler, RNG states
    cells/<id>/model.pt        the selected weights (final or best-on-val) for dependants
    cells/<id>/result.json     final metrics and throughput
    cells/<id>/DONE            written last: a cell without it is not done
    plans/<matrix>.json        which cells a matrix has (for collect, status and reports)
    splits/<key>.json          split manifests, written once and verified on reuse
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from bench.errors import BenchError

DONE = "DONE"
_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through ``write`` to a temp file in the same folder, fsync, rename over the target,
    then fsync the folder: a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results folders are shared with colleagues
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_torch_save(path: Path, value: Any) -> None:
    import torch  # not at module level: commands that only read JSON should not pay for torch

    _atomic_write(path, lambda handle: torch.save(value, handle))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BenchError(f"{path}: corrupt JSON ({error.msg} at line {error.lineno})") from None


class CellDir:
    """Files of one cell."""

    def __init__(self, root: Path, cell_id: str) -> None:
        self.id = cell_id
        self.path = root / "cells" / cell_id

    config = property(lambda self: self.path / "config.json")
    metrics = property(lambda self: self.path / "metrics.json")
    checkpoint = property(lambda self: self.path / "checkpoint.pt")
    model = property(lambda self: self.path / "model.pt")
    result = property(lambda self: self.path / "result.json")
    done_marker = property(lambda self: self.path / DONE)
    log = property(lambda self: self.path / "log.txt")
    artifacts = property(lambda self: self.path / "artifacts")

    def is_done(self) -> bool:
        return self.done_marker.exists()

    def mark_done(self) -> None:
        atomic_write_bytes(self.done_marker, b"")

    @contextlib.contextmanager
    def lock(self) -> Iterator[bool]:
        """Exclusive, non-blocking lock: yields False when another process runs this cell."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class Store:
    """A results folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def cell(self, cell_id: str) -> CellDir:
        return CellDir(self.root, cell_id)

    def plan_path(self, matrix_name: str) -> Path:
        return self.root / "plans" / f"{matrix_name}.json"

    def write_plan(self, matrix_name: str, source: str, paper: str | None, cells: list[dict[str, Any]], sets: list[str] | None = None) -> None:
        atomic_write_json(self.plan_path(matrix_name), {"matrix": matrix_name, "source": source, "paper": paper,
                                                        "sets": sets or [], "cells": cells})

    def membership(self) -> dict[str, list[tuple[str, int, str | None]]]:
        """cell id -> (matrix, position in its plan, one-line description) for every plan that has it."""
        out: dict[str, list[tuple[str, int, str | None]]] = {}
        for name, plan in self.plans().items():
            for position, entry in enumerate(plan.get("cells", [])):
                out.setdefault(entry["id"], []).append((name, position, entry.get("describe")))
        return out

    def plans(self) -> dict[str, dict[str, Any]]:
        folder = self.root / "plans"
        return {p.stem: read_json(p) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}

    def cell_ids(self) -> list[str]:
        folder = self.root / "cells"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
