"""menghani2019 fine-tuning: continue a blind-distilled student by distilling from its teacher
on ``n_per_class`` labeled samples per class (use a lower lr with decay, as the paper does)."""
from __future__ import annotations

from bench.methods import method, Training
from bench.methods.distill import distillation_loss


@method("finetune", roles=("student", "teacher"), fields=("n_per_class",))
def finetune(ctx) -> Training:
    splits = ctx.splits()
    few = splits.few
    teacher = ctx.teacher_logits("teacher", splits.source, few)
    loss = distillation_loss(teacher, ctx.config.temperature, ctx.config.alpha)
    return Training(ctx.dependency_model("student", trainable=True), splits.source, few, loss, (splits.source, few))
