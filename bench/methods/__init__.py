"""Training methods, one module each, looked up by name in ``METHODS``: every module of this
package is a method and registers itself with ``@method``; they are discovered, never listed.

A method turns a cell's context (config, data, dependencies) into a ``Training``: which model
is trained, on which items, with which step (its forwards and its loss) over how many augmented
views. The engine does the rest (optimiser, schedule, epochs, evaluation, checkpoints, exact
resume), so methods stay short and comparable: a loss-only method is ``classify(model, loss)``.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable

from bench.matrix.requirements import REQUIREMENTS, Requirement
from bench.registry import Registry
from bench.training.interface import Computation, Training

Method = Callable[[Any], "Training | Computation"]
"""(the cell's ``bench.cell.context.CellContext``) -> what the engine trains or the runner computes."""
METHODS: Registry[Method] = Registry("method")


def method(name: str, roles: tuple[str, ...] = (), fields: tuple[str, ...] = (),
           transfer_roles: tuple[str, ...] = (), encoder: bool = False, trains: bool = True,
           distills: bool = False) -> Callable[[Method], Method]:
    """Register a method with the dependency roles and config fields it cannot run without, the
    roles it may take from another dataset (transfer learning), whether it trains an encoder,
    whether it trains at all (a ``Computation`` does not) and whether it learns from its
    teacher's targets (``CellContext.teacher_targets``)."""
    REQUIREMENTS[name] = Requirement(roles, fields, transfer_roles, encoder, trains, distills)
    return METHODS.register(name)


def _discover() -> None:
    """Import every module of this package: each is one method and registers itself."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_discover()
