"""The results folder: one directory per cell, atomic writes, a done marker written last.

Layout under ``<results>/``::

    cells/<id>/config.json     resolved config (written before training starts)
    cells/<id>/metrics.json    per-epoch metrics (rewritten atomically every epoch)
    cells/<id>/checkpoint.pt   latest epoch: model, optimizer, scheduler, RNG states
    cells/<id>/checkpoint.prev.pt  the epoch before (fallback when checkpoint.pt is unreadable)
    cells/<id>/model.pt        the selected weights (final or best-on-val) for dependants
    cells/<id>/result.json     final metrics and throughput
    cells/<id>/DONE            written last: a cell without it is not done
    cells/<id>/failure.json    why the last attempt failed (removed when it succeeds)
    plans/<matrix>.json        which cells a matrix has (for collect, status and reports)
    splits/<key>.json          split manifests, written once and verified on reuse

A results folder is shared and untrusted: paths are built only from names the planner
validated (cell ids are 12 hex digits, plan names plain names) and checked to stay inside the
folder; JSON is strict (NaN is written as null); nothing here is ever unpickled.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from bench.matrix.ids import CELL_ID
from bench.errors import BenchError, StorageError
from bench.results.locks import Echo, exclusive
from bench.results.no_links import open_no_follow, refuse_links_below

DONE = "DONE"
_PLAN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}(@[0-9a-f]{8}|@smoke(-[0-9a-f]{8})?)?")
_UMASK = os.umask(0)
os.umask(_UMASK)


_FULL = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


def storage_error(path: Path, error: OSError) -> StorageError | None:
    """A one-line StorageError for a write refused by the file system (full, read-only), else None."""
    if error.errno in _FULL:
        message = (f"{path}: no space left on the device (disk full or quota exceeded); free some "
                   "and run the same command again: cells resume from their last checkpoint")
    elif error.errno in _READ_ONLY:
        message = (f"{path}: cannot write ({error.strerror}): the results folder is read-only for you; "
                   "pass --results with a folder you can write")
    else:
        return None
    return StorageError(message, reason=error.strerror or "refused")


@contextlib.contextmanager
def _translated(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        translated = storage_error(path, error)
        if translated is None:
            raise
        raise translated from None


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through ``write`` to a temp file in the same folder, fsync, rename over the target,
    then fsync the folder: a reader sees the old file or the whole new one, never a part."""
    with _translated(path):
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


_CACHES_SKIPPED: set[str] = set()


def write_cache(path: Path, data: bytes) -> bool:
    """Write a cache (an optimisation: the collect cache, the ingest ledger, the tables' state).
    When the folder refuses it (read-only, full, a planted link), bench works without it and says
    so once per folder; returns whether it was written."""
    try:
        atomic_write_bytes(path, data)
        return True
    except (OSError, StorageError) as error:
        folder = str(path.parent)
        if folder not in _CACHES_SKIPPED:
            _CACHES_SKIPPED.add(folder)
            reason = error.reason if isinstance(error, StorageError) else (error.strerror or type(error).__name__)
            print(f"bench: note: {folder}: caches cannot be written there ({reason}); working without them", file=sys.stderr)
        return False


def strict_json(value: Any) -> Any:
    """``value`` with NaN and infinities as None, so strict JSON readers accept the file."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def json_bytes(value: Any) -> bytes:
    return (json.dumps(strict_json(value), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n").encode()


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, json_bytes(value))


def atomic_torch_save(path: Path, value: Any, previous: Path | None = None) -> None:
    """torch.save into memory first, then an atomic write: a full disk is then our one-line
    StorageError, not torch's ``[enforce fail at inline_container.cc]``. With ``previous``, the
    file being replaced is kept there (a fallback should the new one be damaged later)."""
    import torch  # not at module level: commands that only read JSON should not pay for torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    if previous is not None and path.exists():
        with _translated(path):
            os.replace(path, previous)
    atomic_write_bytes(path, buffer.getbuffer())


class UnreadableFile(BenchError):
    """A file of the results folder that is missing, truncated, or not what bench writes."""


def load_tensors(path: Path) -> Any:
    """``torch.load(path, weights_only=True)``: tensors, numbers, strings, lists and dicts only.

    Never unpickle anything else from a results folder: it is shared, and a planted pickle
    would run as whoever reads it. A refused, truncated or missing file is an UnreadableFile.
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UnreadableFile(f"{path}: missing") from None
    except Exception as error:  # pickle.UnpicklingError (refused), RuntimeError (truncated zip), EOFError, ...
        lines = str(error).strip().splitlines()
        reason = "refused to unpickle (not tensors only)" if "weights_only" in str(error).lower() or "Unsupported global" in str(error) \
            else (lines[0][:160] if lines else type(error).__name__)
        raise UnreadableFile(f"{path}: cannot be loaded ({reason})") from None


class JsonProblem(BenchError):
    """Bytes that are not usable JSON, with the problem as a phrase ("not UTF-8 text") that
    ``read_json`` and ``bench.results.collect.read_json_file`` word for their readers."""

    def __init__(self, path: Path, problem: str) -> None:
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def parse_json(path: Path, data: bytes) -> Any:
    """The JSON value in ``data`` (read from ``path``), or :class:`JsonProblem`: not UTF-8,
    corrupt, or nested too deeply for the parser (a RecursionError, not a traceback)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonProblem(path, "not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise JsonProblem(path, f"corrupt JSON ({error.msg} at line {error.lineno})") from None
    except RecursionError:
        raise JsonProblem(path, "nested too deeply to read") from None


def read_json(path: Path) -> Any:
    """The JSON in a results folder's file: a link there is refused (never followed out of the
    folder); bytes that are not usable JSON are one line naming the file (:func:`parse_json`)."""
    with os.fdopen(open_no_follow(path, os.O_RDONLY), "rb") as file:
        return parse_json(path, file.read())


def _plan_problem(plan: Any) -> str | None:
    if not isinstance(plan, dict) or not isinstance(plan.get("cells"), list):
        return "not a plan (a JSON object with a list of cells)"
    for entry in plan["cells"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not CELL_ID.fullmatch(entry["id"]):
            return "a plan entry without a cell id"
    return None


SIGNED_FILES = ("config.json", "metrics.json", "result.json", DONE)


def file_signature(path: str | Path) -> list[int] | None:
    """Size, mtime (ns) and inode of a file; None when it is absent."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


class CellDir:
    """Files of one cell."""

    def __init__(self, root: Path, cell_id: str) -> None:
        if not isinstance(cell_id, str) or not CELL_ID.fullmatch(cell_id):
            raise BenchError(f"{root}: {str(cell_id)[:40]!r} is not a cell id (12 hexadecimal digits)")
        self.id = cell_id
        self.root = root
        self.path = root / "cells" / cell_id

    config = property(lambda self: self.path / "config.json")
    metrics = property(lambda self: self.path / "metrics.json")
    checkpoint = property(lambda self: self.path / "checkpoint.pt")
    model = property(lambda self: self.path / "model.pt")
    result = property(lambda self: self.path / "result.json")
    done_marker = property(lambda self: self.path / DONE)
    previous_checkpoint = property(lambda self: self.path / "checkpoint.prev.pt")
    log = property(lambda self: self.path / "log.txt")
    failure = property(lambda self: self.path / "failure.json")
    artifacts = property(lambda self: self.path / "artifacts")

    def is_done(self) -> bool:
        return self.done_marker.exists()

    def signature(self) -> list[list[int] | None]:
        """Its files as they are now (size, mtime, inode of each; a rewritten file changes it):
        what lets collect and ingest skip a cell they already read, without reading it."""
        return [file_signature(os.path.join(self.path, name)) for name in SIGNED_FILES]

    def mark_done(self) -> None:
        atomic_write_bytes(self.done_marker, b"")

    def refuse_links(self) -> None:
        """A LinkError if ``cells``, this cell's folder or its ``artifacts`` is a symbolic link."""
        refuse_links_below(self.root, self.artifacts)

    def make_folder(self) -> None:
        """Create the cell's folder, refusing a link at it or above it (checked before and after)."""
        self.refuse_links()
        with _translated(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
        self.refuse_links()

    def append_log(self, text: str) -> None:
        """Append to ``log.txt`` (its folders checked, the file opened without following a link)."""
        self.make_folder()
        with _translated(self.log):
            with os.fdopen(open_no_follow(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a") as handle:
                handle.write(text)

    def lock(self, wait: bool = True, echo: Echo | None = None) -> contextlib.AbstractContextManager[bool]:
        """Exclusive lock on this cell (``bench.results.locks``): waits for another process running it.
        Everything a cell writes is written under it, so its folders are checked here: a link at
        ``cells``, the cell's folder or its ``artifacts`` is a LinkError, never followed."""
        self.make_folder()
        return exclusive(self.path / ".lock", f"cell {self.id}", wait=wait, echo=echo)


class Store:
    """A results folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise BenchError(f"{self.root}: is a file, not a results folder; pass --results with a folder")

    def cell(self, cell_id: str) -> CellDir:
        return CellDir(self.root, cell_id)

    def plan_path(self, matrix_name: str) -> Path:
        if not _PLAN_NAME.fullmatch(matrix_name) or ".." in matrix_name:
            raise BenchError(f"{matrix_name[:60]!r} is not a plan name (a matrix name, optionally @hash)")
        path = self.root / "plans" / f"{matrix_name}.json"
        if not path.resolve().is_relative_to((self.root / "plans").resolve()):
            raise BenchError(f"{path}: outside the results folder {self.root}")
        return path

    def write_plan(self, matrix_name: str, source: str, paper: str | None, cells: list[dict[str, Any]], sets: list[str] | None = None,
                   smoke: dict[str, Any] | None = None) -> None:
        """Write the plan unless the same one is there (a rerun of a done matrix writes nothing,
        so it works on a read-only results folder). ``smoke``: a rehearsal's shortening."""
        path = self.plan_path(matrix_name)
        refuse_links_below(self.root, path.parent)
        plan = {"matrix": matrix_name, "source": source, "paper": paper, "sets": sets or [], "cells": cells}
        data = json_bytes(plan if smoke is None else {**plan, "smoke": smoke})
        with contextlib.suppress(OSError):
            if path.read_bytes() == data:
                return
        atomic_write_bytes(path, data)

    def membership(self) -> dict[str, list[tuple[str, int, str | None]]]:
        """cell id -> (matrix, position in its plan, one-line description) for every plan that has it."""
        out: dict[str, list[tuple[str, int, str | None]]] = {}
        for name, plan in self.plans().items():
            for position, entry in enumerate(plan["cells"]):
                out.setdefault(entry["id"], []).append((name, position, entry.get("describe")))
        return out

    def plans(self) -> dict[str, dict[str, Any]]:
        """Every readable plan; a damaged plan file is skipped with one warning (it is rewritten by
        the next ``bench run`` of its matrix), so it cannot hide everyone else's results."""
        folder = self.root / "plans"
        found: dict[str, dict[str, Any]] = {}
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
            try:
                plan = read_json(path)
                problem = _plan_problem(plan)
            except (BenchError, OSError) as error:
                problem = str(error).removeprefix(f"{path}: ")
            if problem:
                print(f"bench: warning: {path}: {problem}; skipped (run its matrix again to rewrite it)", file=sys.stderr)
                continue
            found[path.stem] = plan
        return found

    def done_cell_ids(self) -> list[str]:
        """:meth:`cell_ids` of the cells marked done (a stat each, on plain paths: 10,000 cells are
        listed in milliseconds, where a Path and a CellDir per cell cost a good part of a second)."""
        folder = os.path.join(self.root, "cells")
        return [cell_id for cell_id in self.cell_ids() if os.path.exists(os.path.join(folder, cell_id, DONE))]

    def cell_ids(self) -> list[str]:
        """Folders under cells/ named like a cell id (anything else planted there is ignored)."""
        folder = self.root / "cells"
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and CELL_ID.fullmatch(p.name)) if folder.is_dir() else []
