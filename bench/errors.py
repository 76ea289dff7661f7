"""User-facing errors: one line, exit code 2, never a traceback."""
from __future__ import annotations

import re
import reprlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class BenchError(Exception):
    """An error a user can fix: the CLI prints ``bench: <message>`` and exits 2."""


class ConfigError(BenchError):
    """Bad input in a file: names the file and the field."""

    def __init__(self, source: str, field: str, message: str) -> None:
        self.source = source
        self.field = field
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {message}")


class StorageError(BenchError):
    """The results folder cannot take a write (disk full, read-only, no permission): every
    further cell would fail the same way, so a run stops at the first one. ``reason``: the
    file system's few words (for a note where the write was only a cache)."""

    def __init__(self, message: str, reason: str = "refused") -> None:
        super().__init__(message)
        self.reason = reason


class DataNotFoundError(BenchError):
    """A dataset (or weight file) is not on disk; we never download at run time."""


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxlevel = 3


_PLAIN = re.compile(r"[\w.+\-\[\]]{0,60}")


def short(value: Any, limit: int = 200) -> str:
    """A bounded repr for messages: a value from a file (a YAML bomb, a 2 GB string) is never
    repeated whole."""
    text = _repr.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plain(text: Any, limit: int = 60) -> str:
    """``text`` as it is when it is a short plain name or path in a file (``teacher.arch``,
    ``stages.t``), else its bounded repr (a newline or a megabyte of it is never printed)."""
    text = str(text)
    return text if len(text) <= limit and _PLAIN.fullmatch(text) else short(text, limit)


def first_validation_error(error: "ValidationError") -> tuple[str, str]:
    """(dotted field path, message) of a pydantic error's first problem, for one-line messages."""
    first = error.errors()[0]
    message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
    where = ".".join(plain(part) for part in first["loc"])
    return where, message if len(message) <= 300 else message[:297] + "..."
