"""menghani2019 blind distillation: the student learns only from the teacher's outputs on an
out-of-distribution unlabeled pool and never sees a labeled-set image. Its student may be a
frozen-backbone one with new dense layers, as kd's (``head``, ``frozen_backbone``, a ``backbone``
role), and it reports ``test_agreement`` with its teacher too."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from bench.matrix.config import POOL_FIELDS, TEACHER_TARGET_FIELDS
from bench.methods import method
from bench.training.interface import Training, classify
from bench.training.losses import distillation_loss
from bench.methods.kd import agreement, student_model

if TYPE_CHECKING:
    from bench.cell.context import CellContext


@method("blind", roles=("teacher",), fields=(*POOL_FIELDS, *TEACHER_TARGET_FIELDS, "temperature", "frozen_backbone"),
        required=("unlabeled",), transfer_roles=("backbone",), distills=True)
def blind(ctx: CellContext) -> Training:
    pool, items = ctx.unlabeled_pool()
    targets = ctx.teacher_targets("teacher", pool, items)
    loss = distillation_loss(targets.logits, ctx.config.temperature, 0.0)
    hidden = torch.full_like(pool.targets, -1)
    model, frozen = student_model(ctx)
    more = agreement(ctx, "teacher") if ctx.config.head is not None else None  # (menghani2019's cells keep their metrics)
    return Training(model, pool, items, classify(model, loss), None, visible_targets=hidden, augment=targets.view,
                    crops=targets.crops, frozen=frozen, more_metrics=more)
