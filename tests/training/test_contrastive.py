"""NT-Xent against the formula and against simclr's two-halves computation; projection and dense heads."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.training.contrastive import (
    ScaleOnlyBatchNorm1d,
    dense_head,
    nt_xent,
    projection_head,
)


def _views(n: int = 4, d: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randn(n, d, generator=g, dtype=dtype)


def _loop_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """The formula, one anchor at a time in Python floats: -log(e^{s_ip/t} / sum_{k != i} e^{s_ik/t})."""
    z = [[float(v) for v in row] for row in torch.cat([z1, z2])]
    unit = [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in z]
    n2 = len(unit)
    sim = [[sum(a * b for a, b in zip(unit[i], unit[k])) for k in range(n2)] for i in range(n2)]
    total = 0.0
    for i in range(n2):
        positive = (i + n2 // 2) % n2
        denominator = sum(math.exp(sim[i][k] / t) for k in range(n2) if k != i)
        total += -math.log(math.exp(sim[i][positive] / t) / denominator)
    return total / n2


def _simclr_two_halves(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """google-research/simclr objective.add_contrastive_loss (hidden_norm=True, one replica), transcribed."""
    h1, h2 = nn.functional.normalize(z1, dim=-1), nn.functional.normalize(z2, dim=-1)
    n = h1.shape[0]
    masks = torch.eye(n, dtype=h1.dtype)
    logits_aa = h1 @ h1.T / t - masks * 1e9
    logits_bb = h2 @ h2.T / t - masks * 1e9
    logits_ab, logits_ba = h1 @ h2.T / t, h2 @ h1.T / t
    labels = torch.arange(n)
    loss_a = nn.functional.cross_entropy(torch.cat([logits_ab, logits_aa], 1), labels)
    loss_b = nn.functional.cross_entropy(torch.cat([logits_ba, logits_bb], 1), labels)
    return loss_a + loss_b


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_is_the_formula_and_half_of_simclrs_sum(temperature: float) -> None:
    """The loop is the paper's definition; simclr's loss_a + loss_b is 2x the mean over 2N anchors."""
    z1, z2 = _views()
    loss = nt_xent(z1, z2, temperature)
    assert loss.item() == pytest.approx(_loop_nt_xent(z1, z2, temperature), abs=1e-6)
    assert torch.allclose(2 * loss, _simclr_two_halves(z1, z2, temperature), atol=1e-9)


def test_identical_views_beat_shuffled_ones_and_the_loss_is_symmetric() -> None:
    z1, z2 = _views(n=8, d=16)
    derangement = torch.roll(torch.arange(8), 1)
    assert nt_xent(z1, z1.clone(), 0.5) < nt_xent(z1, z1[derangement], 0.5)
    assert torch.allclose(nt_xent(z1, z2, 0.5), nt_xent(z2, z1, 0.5), atol=1e-12)


def test_gradients_reach_both_views() -> None:
    z1, z2 = (v.requires_grad_() for v in _views(dtype=torch.float32))
    nt_xent(z1, z2, 0.2).backward()
    for grad in (z1.grad, z2.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_lower_temperature_is_sharper() -> None:
    """Matched views: loss falls toward 0 as T drops; opposed views: it rises; huge T: log(2N - 1)."""
    z1, _ = _views(n=6, d=8)
    matched = [nt_xent(z1, z1 + 0.01 * torch.ones_like(z1), t).item() for t in (1.0, 0.5, 0.1, 0.01)]
    opposed = [nt_xent(z1, -z1, t).item() for t in (1.0, 0.5, 0.1, 0.01)]
    assert matched == sorted(matched, reverse=True) and matched[-1] < 1e-3
    assert opposed == sorted(opposed)
    assert nt_xent(z1, -z1, 1e6).item() == pytest.approx(math.log(2 * 6 - 1), abs=1e-4)


def test_float32_under_autocast_and_stable_at_tiny_temperature() -> None:
    """bf16 projections from an autocast forward: the loss is still computed in float32."""
    z1, z2 = _views(n=16, d=32, dtype=torch.float32)
    proj = nn.Linear(32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p1, p2 = proj(z1), proj(z2)
        inside = nt_xent(p1, p2, 0.1)
    assert p1.dtype == torch.bfloat16 and inside.dtype == torch.float32
    assert torch.allclose(inside, nt_xent(p1.float(), p2.float(), 0.1), atol=1e-6)
    tiny = nt_xent(z1.requires_grad_(), z2, 1e-4)
    tiny.backward()
    assert torch.isfinite(tiny) and torch.isfinite(z1.grad).all()


def test_nt_xent_rejects_bad_input() -> None:
    z1, z2 = _views()
    with pytest.raises(ValueError, match="shape"):
        nt_xent(z1, z2[:3], 0.5)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(z1, z2, 0.0)


@pytest.mark.parametrize(("version", "linears", "norms"), [(1, 2, 0), (2, 3, 3)])
def test_projection_head_shapes_and_layers(version: int, linears: int, norms: int) -> None:
    head = projection_head(64, version=version)
    assert head(torch.randn(5, 64)).shape == (5, 128)
    assert projection_head(64, version=version, hidden=32, out=16)(torch.randn(5, 64)).shape == (5, 16)
    assert sum(isinstance(m, nn.Linear) for m in head) == linears
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head) == norms
    assert not isinstance(head[-1], nn.ReLU)


def test_v2_last_batchnorm_scales_but_never_shifts() -> None:
    """simclr v2's final BN has center=False: a trainable gamma, no beta, even after requires_grad_(True)."""
    head = projection_head(8, version=2).requires_grad_(True)
    last = head[-1]
    assert isinstance(last, ScaleOnlyBatchNorm1d)
    assert [name for name, _ in last.named_parameters()] == ["weight"]
    assert "bias" in last.state_dict() and torch.equal(last.bias, torch.zeros(128))
    assert all(not isinstance(m, nn.Linear) or m.bias is None for m in head)
    with pytest.raises(ValueError, match="version"):
        projection_head(8, version=3)


def test_dense_head_shapes_dropout_and_linear_probe() -> None:
    probe = dense_head(32, (), 5)
    assert [type(m) for m in probe] == [nn.Flatten, nn.Linear]
    assert probe(torch.randn(4, 32, 1, 1)).shape == (4, 5)
    student = dense_head(32, (16, 8), 3, dropout=0.5)
    assert [m.out_features for m in student if isinstance(m, nn.Linear)] == [16, 8, 3]
    assert sum(isinstance(m, nn.Dropout) for m in student) == 2
    assert student(torch.randn(4, 32)).shape == (4, 3)
    with pytest.raises(ValueError, match="dropout"):
        dense_head(32, (), 3, dropout=0.5)
