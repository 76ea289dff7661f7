"""What a matrix will ask of its teachers, counted before anything runs (``bench plan --cost``).

A distilling student (kd, blind, finetune) needs its teacher's logits for the images it trains
on. How many teacher forwards that costs depends on the teacher-target mode:

* no augmentation: the logits cache, one pass per (teacher, items), shared by every student;
* augmentation, ``teacher_targets: online``: one pass per student epoch (the teacher sees each
  augmented batch the student sees);
* augmentation, ``teacher_targets: bank``: ``bank_views`` passes per view bank, built once per
  (teacher, items, augmentation, views, seed, precision) and shared by every student that has
  that key.

Counts are in passes over a student's training items (one teacher forward per item each), since
the planner knows no dataset sizes; a student's items are those of its teacher's cache or bank,
so the passes add up to the same forwards on both sides of a comparison. No torch: planning stays
quick; the numbers are what the modes do, not a measurement.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.matrix.names import requirement
from bench.matrix.plan import Cell

ITEM_FIELDS = ("method", "dataset", "image_size", "protocol", "val_fraction", "unlabeled", "unlabeled_limit",
               "label_fraction", "n_per_class", "effective_split_seed")
"""What decides which images a student trains on, beside its teacher (approximate on the safe
side: two students that share items but differ here are counted as two caches or banks)."""


@dataclass
class StageCost:
    """Teacher passes of one stage's distilling students, as configured and in each mode."""

    stage: str
    students: int = 0
    configured: int = 0
    online: int = 0
    bank: int = 0

    def row(self) -> tuple[Any, ...]:
        ratio = f"{self.bank / self.online:.3f}" if self.online else "-"
        return self.stage, self.students, self.configured, self.online, self.bank, ratio


COLUMNS = ("stage", "distilling students", "teacher passes (as configured)", "all online", "all bank", "bank / online")


def _items(cell: Cell) -> tuple[Any, ...]:
    c = cell.config
    return (c.deps.get("teacher"), *(getattr(c, name) for name in ITEM_FIELDS))


def _bank_key(cell: Cell) -> tuple[Any, ...]:
    c = cell.config
    return (*_items(cell), tuple(c.augment), c.crop_padding, c.bank_views, c.bank_seed, c.bank_precision, c.recipe, c.bank_top_k)


def teacher_passes(cells: list[Cell], per_cell: dict[str, int] | None = None) -> list[StageCost]:
    """Per stage with distilling students: the passes each mode costs (shared caches and banks
    counted once, by the first student that needs them); ``per_cell`` receives each student's
    passes as configured."""
    costs: dict[str, StageCost] = {}
    per_cell = {} if per_cell is None else per_cell
    seen: dict[str, set[tuple[Any, ...]]] = {"cache": set(), "bank": set(), "configured": set()}
    for cell in cells:
        needs = requirement(cell.config.method)
        if needs is None or not needs.distills or "teacher" not in cell.config.deps:
            continue
        c, cost = cell.config, costs.setdefault(cell.stage, StageCost(cell.stage))
        cost.students += 1
        if not c.augment:  # every mode uses the logits cache
            passes = per_cell[cell.id] = _once(seen["cache"], _items(cell), 1)
            cost.configured, cost.online, cost.bank = cost.configured + passes, cost.online + passes, cost.bank + passes
            continue
        cost.online += c.epochs
        cost.bank += _once(seen["bank"], _bank_key(cell), c.bank_views)
        per_cell[cell.id] = c.epochs if c.teacher_targets == "online" else _once(seen["configured"], _bank_key(cell), c.bank_views)
        cost.configured += per_cell[cell.id]
    return list(costs.values())


def _once(seen: set[tuple[Any, ...]], key: tuple[Any, ...], passes: int) -> int:
    """``passes`` the first time ``key`` is seen (a cache or bank is built once), then 0."""
    if key in seen:
        return 0
    seen.add(key)
    return passes


def total(costs: list[StageCost]) -> StageCost:
    out = StageCost("all")
    for cost in costs:
        out.students, out.configured = out.students + cost.students, out.configured + cost.configured
        out.online, out.bank = out.online + cost.online, out.bank + cost.bank
    return out
