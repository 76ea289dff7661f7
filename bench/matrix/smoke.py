"""Rehearsal (``bench run --smoke``): every cell of a matrix for a few batches, before the real run.

A smoke cell is the real cell with ``epochs`` at most 1 (0 stays 0: an evaluate-as-is teacher is
never trained), a small batch unless the real one is asked for, and ``smoke_batches`` set: every
split, pool and evaluation set of the cell is cut to that many batches of items (a seeded subset,
so classes stay mixed). Everything else is the matrix's own: data, models, weights, stages,
dependencies, artifacts, executor and profile. ``smoke_batches`` is part of the cell's id, so a
rehearsal can never be taken for, or overwrite, a real result; its plan is ``<matrix>@smoke`` and
its results folder carries a ``SMOKE`` marker that real runs refuse (and rehearsals refuse a
folder of real results). No torch here: the planner imports it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError

if TYPE_CHECKING:
    import torch

    from bench.matrix.config import CellConfig
    from bench.results.store import Store

MARKER = "SMOKE"
"""The file that marks a results folder as a rehearsal's."""

DEFAULT_BATCHES = 2
DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class Smoke:
    """How a rehearsal shortens each cell: ``batches`` per epoch and per evaluation set, of at most
    ``batch_size`` images (None: the cell's own batch size)."""

    batches: int = DEFAULT_BATCHES
    batch_size: int | None = DEFAULT_BATCH_SIZE

    def update(self, config: CellConfig) -> dict[str, Any]:
        """The fields a cell's rehearsal changes."""
        batch = config.batch_size if self.batch_size is None else min(config.batch_size, self.batch_size)
        return {"epochs": min(config.epochs, 1), "batch_size": batch, "smoke_batches": self.batches,
                "warmup_epochs": min(config.warmup_epochs, 1)}

    def describe(self) -> str:
        size = "the cells' own batch size" if self.batch_size is None else f"batches of at most {self.batch_size}"
        return f"{self.batches} {size} per epoch and per evaluation set, 1 epoch"


SHORTENED = ("epochs", "batch_size", "warmup_epochs", "smoke_batches")
"""The fields a rehearsal changes: cells that differ only in these are one cell at smoke scale."""


def plan_name(matrix_name: str, sets: list[str] | None, smoke: Smoke | None) -> str:
    """``<matrix>@smoke`` (``@smoke-<hash>`` with ``--set`` or another shortening) for a rehearsal."""
    if smoke is None:
        raise ValueError("not a rehearsal")
    words = sorted(sets or []) + ([] if smoke == Smoke() else [f"smoke:{smoke.batches}x{smoke.batch_size}"])
    return f"{matrix_name}@smoke" + (f"-{hashlib.sha256(' '.join(words).encode()).hexdigest()[:8]}" if words else "")


def cut(items: torch.Tensor, config: CellConfig) -> torch.Tensor:
    """A rehearsal cell's share of ``items``: ``smoke_batches`` batches of them, drawn with the split
    seed and kept in item order; all of them for a real cell."""
    import torch

    if config.smoke_batches is None:
        return items
    limit = config.smoke_batches * config.batch_size
    if len(items) <= limit:
        return items
    generator = torch.Generator().manual_seed(config.effective_split_seed)
    return torch.sort(items[torch.randperm(len(items), generator=generator)[:limit]]).values


def claim_folder(store: Store, smoke: bool) -> None:
    """Keep rehearsals and real runs in separate folders: a rehearsal marks its folder (``SMOKE``),
    a real run refuses a marked folder and a rehearsal refuses one that holds real plans."""
    marker = store.root / MARKER
    marked = is_smoke_folder(store.root)
    if smoke:
        real = [name for name in store.plans() if "@smoke" not in name]
        if real and not marked:
            raise BenchError(f"{store.root}: holds real results ({', '.join(sorted(real)[:3])}); a rehearsal "
                             f"writes to a folder of its own (default: {default_folder(store.root)})")
        if not marked:
            store.root.mkdir(parents=True, exist_ok=True)
            from bench.results.store import atomic_write_bytes

            atomic_write_bytes(marker, b"bench run --smoke: rehearsal cells, never results\n")
    elif marked:
        raise BenchError(f"{store.root}: a rehearsal's folder ({MARKER} marker); run the real matrix into another "
                         f"folder (--results)")


def default_folder(results: Path) -> Path:
    """Where a rehearsal goes when no --results is given: beside the real results, named for it."""
    return results.with_name(results.name + "-smoke")


def is_smoke_folder(root: Path) -> bool:
    marker = root / MARKER
    return marker.is_file() and not marker.is_symlink()
