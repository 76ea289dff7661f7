"""The live display of ``bench run`` on a terminal (rich): finished cells' lines scroll above,
and two lines update in place below them:

    cells 3/14 done · 0 failed · 0 blocked · 1 min 12 s elapsed · ETA 4 min 30 s
    student blind menghani_cnn · epoch 2/4 · batch 31/79 · 2,140 img/s · cell ETA 50 s

Off a terminal, with ``--no-progress`` (or ``TERM=dumb``) the plain lines of ``bench.console``
are all there is. ``NO_COLOR`` is rich's to honour: no colour, the same lines. Messages go
through ``Console.print`` above the live region, so errors and warnings are never hidden by it.
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from bench.console import Display, Lines
from bench.progress import Position, RunProgress, duration

if TYPE_CHECKING:
    from rich.console import Console


def status_lines(run: RunProgress) -> tuple[str, str | None]:
    """The two lines of the live display (the second None when no cell is running)."""
    overall = (f"cells {run.done + run.skipped}/{run.total} done · {run.failed} failed · {run.blocked} blocked · "
               f"{duration(run.elapsed())} elapsed · ETA {duration(run.eta())}")
    if run.current is None:
        return overall, None
    p = run.position
    parts = [run.label]
    if p.epochs:
        parts += [f"epoch {p.epoch}/{p.epochs}", f"batch {p.step}/{p.steps}"]
        if p.images_per_s == p.images_per_s:  # not NaN
            parts.append(f"{p.images_per_s:,.0f} img/s")
        parts.append(f"cell ETA {duration(run.cell_eta())}")
    return overall, " · ".join(parts)


class LiveDisplay:
    """Lines printed above a two-line status that rich refreshes in place (4 times a second)."""

    def __init__(self, run: RunProgress, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.run = run
        self.console = console or Console(stderr=True, highlight=False)
        self.live = Live(console=self.console, get_renderable=self._render, refresh_per_second=4, transient=True,
                         redirect_stdout=False, redirect_stderr=False)
        self.live.start()

    def _render(self) -> Any:
        from rich.text import Text

        overall, cell = status_lines(self.run)
        text = Text(overall, style="" if os.environ.get("NO_COLOR") else "bold cyan")
        if cell is not None:
            text.append("\n" + cell)
        return text

    def __call__(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def start(self, cell_id: str, label: str) -> None:
        self.run.start(cell_id, label)

    def batch(self, position: Position) -> None:
        self.run.batch(position)

    def finish(self, cell_id: str, outcome: str) -> None:
        self.run.finish(cell_id, outcome)

    def close(self) -> None:
        self.live.stop()
        overall, _ = status_lines(self.run)
        self.console.print(overall, markup=False, highlight=False)


def wants_live(no_progress: bool) -> bool:
    """A live display only on a terminal that can redraw, and unless ``--no-progress``."""
    return not no_progress and sys.stderr.isatty() and os.environ.get("TERM", "") != "dumb"


def open_display(no_progress: bool, work: dict[str, float]) -> Display:
    """The display of one ``bench run``: live on a terminal, plain lines elsewhere."""
    return LiveDisplay(RunProgress(work)) if wants_live(no_progress) else Lines()
