"""Transfer: a new head on a backbone another cell (or a converted release) trained.

``linear_probe`` trains only the new head (``head``: hidden widths of its dense layers, [] for one
linear layer) with cross-entropy on the labeled split, its backbone frozen in eval mode: SimCLR's
linear evaluation, nguyen2021's Table 1 (augmentation ablation) and Table 4 (transfer to other
datasets: the ``encoder`` role may be on another dataset). ``with_backbone`` is shared with
frozen-backbone students (kd with ``head`` and ``frozen_backbone``: nguyen2021 Table 2).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.methods import method
from bench.training.interface import Batch, Training, classify
from bench.models.zoo import Normalized, WithHead

if TYPE_CHECKING:
    from bench.cell.context import CellContext


def with_backbone(ctx: CellContext, frozen: bool, role: str = "encoder") -> tuple[Normalized, tuple[torch.nn.Module, ...]]:
    """The cell's model (backbone + new head) with the backbone of its ``role`` cell when it has
    one (else pretrained / ``encoder_file`` / fresh, as ``build_model`` makes it), and what is
    frozen: the backbone when ``frozen``, whose parameters then take no gradient."""
    model = ctx.new_model()
    if not isinstance(model.inner, WithHead):
        raise BenchError(f"cell {ctx.cell_id}: method {ctx.config.method!r} needs a new head: set head ([] for a linear one)")
    backbone = model.inner.backbone
    if role in ctx.config.deps:
        source = ctx.dependency_model(role).inner
        state = (source.backbone if isinstance(source, WithHead) else source).state_dict()
        missing, _ = backbone.load_state_dict(state, strict=False)  # a classifier's keys are left out
        if missing:
            raise BenchError(f"cell {ctx.cell_id}: its {role} is not a {ctx.config.arch} backbone ({missing[0]} missing)")
    if not frozen:
        return model, ()
    backbone.requires_grad_(False)
    return model, (backbone,)


@method("linear_probe", required=("head",), transfer_roles=("encoder",))
def linear_probe(ctx: CellContext) -> Training:
    splits = ctx.splits()
    labeled = splits.labeled
    model, frozen = with_backbone(ctx, frozen=True)

    def loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(logits, batch.targets)

    return Training(model, splits.source, labeled, classify(model, loss), (splits.source, labeled), frozen=frozen)
