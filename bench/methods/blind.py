"""menghani2019 blind distillation: the student learns only from the teacher's outputs on an
out-of-distribution unlabeled pool and never sees a labeled-set image."""
from __future__ import annotations

import torch

from bench.methods import method, Training
from bench.methods.distill import distillation_loss


@method("blind", roles=("teacher",), fields=("unlabeled",))
def blind(ctx) -> Training:
    pool, items = ctx.unlabeled_pool()
    teacher = ctx.teacher_logits("teacher", pool, items)
    loss = distillation_loss(teacher, ctx.config.temperature, 0.0)
    hidden = torch.full_like(pool.targets, -1)
    return Training(ctx.new_model(), pool, items, loss, None, visible_targets=hidden)
