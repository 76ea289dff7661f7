"""User-facing errors: one line, exit code 2, never a traceback."""
from __future__ import annotations

from typing import TYPE_CHECKING

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


class DataNotFoundError(BenchError):
    """A dataset (or weight file) is not on disk; we never download at run time."""


def first_validation_error(error: "ValidationError") -> tuple[str, str]:
    """(dotted field path, message) of a pydantic error's first problem, for one-line messages."""
    first = error.errors()[0]
    message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
    return ".".join(str(part) for part in first["loc"]), message
