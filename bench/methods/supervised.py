"""Supervised teacher: cross-entropy on the labeled subset only."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from bench.methods import method
from bench.training.interface import Batch, Training, classify

if TYPE_CHECKING:
    from bench.cell.context import CellContext


@method("supervised")
def supervised(ctx: CellContext) -> Training:
    splits = ctx.splits()
    labeled = splits.labeled
    model = ctx.new_model()

    def loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(logits, batch.targets)

    return Training(model, splits.source, labeled, classify(model, loss), (splits.source, labeled))
