"""The optimisers and learning-rate schedules a cell names (``optimizer``, ``schedule``), as
registries: a new one is one entry."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from bench.matrix.config import CellConfig


def _lars(params, c: CellConfig) -> torch.optim.Optimizer:
    from timm.optim import Lars  # SimCLR's optimiser; timm's, not ours

    return Lars(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)


OPTIMIZERS: dict[str, Callable[[Any, CellConfig], torch.optim.Optimizer]] = {
    "sgd": lambda params, c: torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay),
    "adamw": lambda params, c: torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay),
    "lars": _lars,
}


def make_optimizer(config: CellConfig, params) -> torch.optim.Optimizer:
    return OPTIMIZERS[config.optimizer](params, config)


def _warmup_cosine(c: CellConfig) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_epochs``, then cosine decay to 0 (SimCLR's schedule, per epoch)."""
    def factor(e: int) -> float:
        if e < c.warmup_epochs:
            return (e + 1) / c.warmup_epochs
        return 0.5 * (1 + math.cos(math.pi * (e - c.warmup_epochs) / max(1, c.epochs - c.warmup_epochs)))
    return factor


SCHEDULES: dict[str, Callable[[CellConfig], Callable[[int], float]]] = {
    "constant": lambda c: lambda e: 1.0,
    "cosine": lambda c: lambda e: 0.5 * (1 + math.cos(math.pi * e / max(1, c.epochs))),
    "step": lambda c: lambda e: c.step_gamma ** (e // max(1, c.epochs // 3)),
    "warmup_cosine": _warmup_cosine,
}
