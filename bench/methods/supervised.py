"""Supervised teacher: cross-entropy on the labeled subset only."""
from __future__ import annotations

import torch.nn.functional as F

from bench.methods import method, Batch, Training


@method("supervised")
def supervised(ctx) -> Training:
    splits = ctx.splits()
    labeled = splits.labeled

    def loss(logits, batch: Batch):
        return F.cross_entropy(logits, batch.targets)

    return Training(ctx.new_model(), splits.source, labeled, loss, (splits.source, labeled))
