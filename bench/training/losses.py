"""The distillation loss shared by kd, blind and finetune (Hinton et al.)."""
from __future__ import annotations


import torch
import torch.nn.functional as F

from bench.training.interface import Batch, LossFn, TeacherFn

def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher_T || student_T) * T^2, averaged over the batch.

    With soft targets this has the same gradient as cross-entropy against the teacher's
    distribution (menghani2019's CE(Y_S, Y_T)); it differs only by the teacher's entropy.
    """
    t = temperature
    log_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * (t * t)


def distillation_loss(teacher: TeacherFn, temperature: float, alpha: float) -> LossFn:
    """(1 - alpha) * KL on soft labels over every item + alpha * CE on the items with labels."""

    def loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        total = (1.0 - alpha) * soft_kl(logits, teacher(batch), temperature)
        if alpha > 0:
            labeled = batch.targets >= 0
            if labeled.any():
                total = total + alpha * F.cross_entropy(logits[labeled], batch.targets[labeled])
        return total

    return loss
