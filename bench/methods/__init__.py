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

from bench.matrix.config import FIELD_NAMES, METHOD_FIELDS
from bench.matrix.requirements import REQUIREMENTS, Requirement
from bench.registry import Registry
from bench.training.interface import Computation, Training

Method = Callable[[Any], "Training | Computation"]
"""(the cell's ``bench.cell.context.CellContext``) -> what the engine trains or the runner computes."""
METHODS: Registry[Method] = Registry("method")


def method(name: str, roles: tuple[str, ...] = (), fields: tuple[str, ...] = (), required: tuple[str, ...] = (),
           transfer_roles: tuple[str, ...] = (), encoder: bool = False, trains: bool = True,
           distills: bool = False) -> Callable[[Method], Method]:
    """Register a method (``@method("kd", roles=("teacher",), fields=(...))`` on a function of the
    cell's context that returns a ``Training``, or a ``Computation``).

    ``roles``: the dependencies it cannot run without (a stage's ``needs``). ``fields``: the
    method fields it reads (``bench.matrix.config.METHOD_FIELDS``: its own, as ``pseudo_threshold``,
    and the shared ones it uses, as ``temperature`` or the teacher-target fields); the planner
    refuses any other method field set away from its default on its stages, which would change
    the cell's id and nothing it computes. General fields (data, model, optimiser, schedule,
    augmentation) are read by every method and never declared. ``required``: fields it cannot
    run without (not None). ``transfer_roles``: roles it may take from another dataset
    (transfer learning); ``encoder``: it trains an encoder; ``trains``: False for a
    ``Computation``; ``distills``: it learns from its teacher's targets
    (``CellContext.teacher_targets``)."""
    for field in fields:
        if field not in METHOD_FIELDS:
            raise ValueError(f"method {name!r}: {field!r} is not a method field (bench.matrix.config.METHOD_FIELDS)")
    for field in required:
        if field not in FIELD_NAMES:
            raise ValueError(f"method {name!r}: required {field!r} is not a config field")
    REQUIREMENTS[name] = Requirement(roles=roles, fields=tuple(sorted(fields)), required=required,
                                     transfer_roles=transfer_roles, encoder=encoder, trains=trains, distills=distills)
    return METHODS.register(name)


def _discover() -> None:
    """Import every module of this package: each is one method and registers itself."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_discover()
