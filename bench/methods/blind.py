"""menghani2019 blind distillation: the student learns only from the teacher's outputs on an
out-of-distribution unlabeled pool and never sees a labeled-set image."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from bench.methods import Training, classify, method
from bench.methods.distill import distillation_loss

if TYPE_CHECKING:
    from bench.context import CellContext


@method("blind", roles=("teacher",), fields=("unlabeled",))
def blind(ctx: CellContext) -> Training:
    pool, items = ctx.unlabeled_pool()
    teacher = ctx.teacher_logits("teacher", pool, items)
    loss = distillation_loss(teacher, ctx.config.temperature, 0.0)
    hidden = torch.full_like(pool.targets, -1)
    model = ctx.new_model()
    return Training(model, pool, items, classify(model, loss), None, visible_targets=hidden)
