"""The distillation loss against the formula written out by hand, so a reversed KL, a dropped T²,
a missing alpha weight or cross-entropy on hidden items changes the number and fails here (an
accuracy-above-chance test passes with any of them)."""
from __future__ import annotations

import pytest
import torch

from bench.training.interface import Batch
from bench.training.losses import distillation_loss, soft_kl

N, CLASSES = 12, 5
HIDDEN = torch.tensor([1, 4, 5, 8, 9, 11])  # items whose label the loss must not see


def logits(seed: int, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(N, CLASSES, generator=torch.Generator().manual_seed(seed)) * scale


def labels_with_hidden() -> torch.Tensor:
    targets = torch.randint(0, CLASSES, (N,), generator=torch.Generator().manual_seed(7))
    targets[HIDDEN] = -1
    return targets


def kl_by_hand(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_T || p_S) = sum_c p_T,c (log p_T,c - log p_S,c) at temperature T, times T², mean over items."""
    p_teacher = torch.softmax(teacher.double() / temperature, dim=1)
    log_ratio = torch.log(p_teacher) - torch.log(torch.softmax(student.double() / temperature, dim=1))
    per_item = (p_teacher * log_ratio).sum(dim=1)
    return per_item.mean() * temperature ** 2


def ce_by_hand(student: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log p_S(label) at temperature 1, averaged over the items whose label is known (target >= 0)."""
    known = [i for i in range(len(targets)) if targets[i] >= 0]
    log_p = torch.log(torch.softmax(student.double(), dim=1))
    return -sum(log_p[i, targets[i]] for i in known) / len(known)


@pytest.mark.parametrize("temperature", [0.5, 4.0])
def test_soft_kl_is_teacher_to_student_kl_times_t_squared(temperature: float) -> None:
    student, teacher = logits(0), logits(1)
    got = soft_kl(student, teacher, temperature)
    assert got.dtype == torch.float32 and got.ndim == 0
    assert got.item() == pytest.approx(kl_by_hand(student, teacher, temperature).item(), rel=1e-5)


def test_soft_kl_is_zero_for_the_teachers_own_distribution() -> None:
    """Softmax ignores a per-item shift, so a student whose logits are the teacher's plus a
    constant has nothing left to learn; a different student does."""
    teacher = logits(1)
    assert soft_kl(teacher + torch.arange(N)[:, None], teacher, 2.0).item() == pytest.approx(0.0, abs=1e-5)
    assert soft_kl(logits(0), teacher, 2.0).item() > 0.1


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_distillation_loss_is_weighted_kl_plus_ce_on_labeled_items_only(alpha: float) -> None:
    student, teacher, targets = logits(0), logits(1), labels_with_hidden()
    batch = Batch((torch.zeros(N, 1, 2, 2),), targets, torch.arange(N))
    seen: list[Batch] = []

    def teacher_fn(b: Batch) -> torch.Tensor:
        seen.append(b)
        return teacher

    got = distillation_loss(teacher_fn, 3.0, alpha)(student, batch)
    expected = (1 - alpha) * kl_by_hand(student, teacher, 3.0) + alpha * ce_by_hand(student, targets)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert all(b is batch for b in seen)  # the teacher is asked about this very batch


def test_a_batch_without_labels_is_kl_only() -> None:
    """A blind or unlabeled batch (every target -1) adds no cross-entropy term, not NaN."""
    student, teacher = logits(0), logits(1)
    batch = Batch((torch.zeros(N, 1, 2, 2),), torch.full((N,), -1), torch.arange(N))
    got = distillation_loss(lambda b: teacher, 2.0, 0.4)(student, batch)
    assert got.item() == pytest.approx(0.6 * kl_by_hand(student, teacher, 2.0).item(), rel=1e-5)
