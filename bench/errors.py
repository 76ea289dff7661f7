"""User-facing errors: one line, exit code 2, never a traceback."""
from __future__ import annotations


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
