"""Training methods, one module each, looked up by name in ``METHODS``.

A method turns a cell's context (config, data, dependencies) into a ``Training``: which model
is trained, on which items, with which loss. The engine does the rest (optimiser, schedule,
epochs, evaluation, checkpoints), so methods stay short and comparable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from bench.data.images import ImageSet
from bench.registry import Registry

if TYPE_CHECKING:
    from bench.context import CellContext


@dataclass
class Batch:
    """One training batch on the device: float images in [0, 1] (augmented), targets, item indices."""

    images: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor


LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]


@dataclass
class Training:
    """What the engine trains: ``model`` on ``source[indices]`` minimising ``loss(logits, batch)``.

    ``train_eval`` names the items whose accuracy is reported as ``train_acc`` (items of the
    training set whose true labels are known; None when the training set has no labels, as in
    blind distillation on an out-of-distribution pool). ``visible_targets`` are the labels the
    loss may see, indexed like ``source`` (-1 = hidden); None means all of ``source.targets``.
    """

    model: nn.Module
    source: ImageSet
    indices: torch.Tensor
    loss: LossFn
    train_eval: tuple[ImageSet, torch.Tensor] | None
    visible_targets: torch.Tensor | None = None


Method = Callable[["CellContext"], Training]
METHODS: Registry[Method] = Registry("method")


@dataclass(frozen=True)
class Requirement:
    """What a method needs of its cell, checked when the matrix is planned, not after the teachers ran."""

    roles: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()


REQUIREMENTS: dict[str, Requirement] = {}


def method(name: str, roles: tuple[str, ...] = (), fields: tuple[str, ...] = ()) -> Callable[[Method], Method]:
    """Register a method with the dependency roles and config fields it cannot run without."""
    REQUIREMENTS[name] = Requirement(roles, fields)
    return METHODS.register(name)


def _load_all() -> None:
    from bench.methods import blind, finetune, kd, supervised  # noqa: F401  (registers)


_load_all()
