"""How far a run is and when it will end: counts, the running cell's position, and ETAs.

Pure bookkeeping (no terminal, no torch): ``bench.live`` renders it. Work is what the plan
says a cell will do (``bench.matrix.cost_estimate``: images x forward FLOPs, so a ResNet-50 cell weighs
more than an MLP's), or one unit per cell when that is unknown. The overall ETA divides the work
left by the pace measured so far in this run (work finished per second of cells run here, the
running cell's share counted by its epochs and batches); a cell's ETA extrapolates its own
progress. A clock is injected so tests run on a fake one.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

Clock = Callable[[], float]


@dataclass
class Position:
    """Where the running cell is: epoch e of E (1-based), batch b of B, its images/s."""

    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    images_per_s: float = math.nan

    @property
    def fraction(self) -> float:
        """Share of the cell's training done (0 before its first batch)."""
        if self.epochs <= 0:
            return 0.0
        within = self.step / self.steps if self.steps else 0.0
        return min(1.0, (max(self.epoch - 1, 0) + within) / self.epochs)


@dataclass
class RunProgress:
    """Counts and pace of one ``bench run``: ``work`` per cell id, in any unit."""

    work: dict[str, float]
    clock: Clock = time.monotonic
    started: float = field(default=math.nan)
    done: int = 0
    skipped: int = 0
    failed: int = 0
    blocked: int = 0
    current: str | None = None
    label: str = ""
    position: Position = field(default_factory=Position)
    cell_started: float = math.nan
    work_done: float = 0.0      # work of the cells finished in this run
    busy_seconds: float = 0.0   # time spent running them
    left: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.started = self.clock()
        self.left = set(self.work)

    @property
    def total(self) -> int:
        return len(self.work)

    @property
    def finished(self) -> int:
        return self.done + self.skipped + self.failed + self.blocked

    def start(self, cell_id: str, label: str) -> None:
        self.current, self.label, self.position = cell_id, label, Position()
        self.cell_started = self.clock()

    def batch(self, position: Position) -> None:
        self.position = position

    def finish(self, cell_id: str, outcome: str) -> None:
        """``outcome``: done, skipped, failed or blocked. Only cells run here count towards the pace."""
        setattr(self, outcome, getattr(self, outcome) + 1)
        self.left.discard(cell_id)
        if cell_id == self.current:
            if outcome == "done":
                self.work_done += self.work.get(cell_id, 1.0)
                self.busy_seconds += self.clock() - self.cell_started
            self.current = None

    def elapsed(self) -> float:
        return self.clock() - self.started

    def cell_eta(self) -> float | None:
        """Seconds left of the running cell, from its own progress; None before it has any."""
        if self.current is None:
            return None
        fraction, spent = self.position.fraction, self.clock() - self.cell_started
        if fraction <= 0 or spent <= 0:
            return None
        return spent * (1 - fraction) / fraction

    def eta(self) -> float | None:
        """Seconds until every cell is finished, at the pace measured so far; None before any."""
        work, seconds = self.work_done, self.busy_seconds
        running = 0.0
        if self.current is not None:
            running = self.work.get(self.current, 1.0)
            share = self.position.fraction
            work += running * share
            seconds += self.clock() - self.cell_started
            running *= 1 - share
        if work <= 0 or seconds <= 0:
            return None
        remaining = running + sum(self.work.get(c, 1.0) for c in self.left if c != self.current)
        return remaining * seconds / work


def eta_from_finished(done_work: float, first_start: float, now: float, remaining_work: float) -> float | None:
    """``bench status --watch``: seconds left at the wall-clock pace since the first cell started
    (cells running side by side on a cluster count as the cluster's pace); None before any is done."""
    if done_work <= 0 or now <= first_start:
        return None
    return remaining_work * (now - first_start) / done_work


def duration(seconds: float | None) -> str:
    """``1 h 02 min``, ``3 min 05 s``, ``42 s``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class Throttle:
    """At most one ``ready()`` per ``every`` seconds (the plain log's in-epoch lines)."""

    def __init__(self, every: float, clock: Clock = time.monotonic) -> None:
        self.every, self.clock = every, clock
        self.last = clock()

    def ready(self) -> bool:
        now = self.clock()
        if now - self.last > self.every:
            self.last = now
            return True
        return False
