"""Where progress goes: one line at a time to stderr, flushed (plain lines read well in a
terminal and in a SLURM log alike, and stdout stays for tables); on a terminal ``bench.live``
shows the same lines above a live status (a ``Display`` with the same methods)."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from bench.progress import Position

Echo = Callable[[str], None]


class Display(Protocol):
    """What an executor reports: lines, and the cell it runs, where that cell is, how it ended."""

    def __call__(self, message: str) -> None: ...

    def start(self, cell_id: str, label: str) -> None: ...

    def batch(self, position: Position) -> None: ...

    def finish(self, cell_id: str, outcome: str) -> None: ...

    def close(self) -> None: ...


class Lines:
    """The plain display: each line to stderr, nothing updated in place."""

    def __call__(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def start(self, cell_id: str, label: str) -> None:
        pass

    def batch(self, position: Position) -> None:
        pass

    def finish(self, cell_id: str, outcome: str) -> None:
        pass

    def close(self) -> None:
        pass


echo: Display = Lines()
