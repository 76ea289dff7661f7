"""SimCLR building blocks for nguyen2021: the NT-Xent loss, projection heads, dense heads.

Pure functions and modules; the training engine wires them into methods.

References (read for this module):
- google-research/simclr ``objective.py`` ``add_contrastive_loss`` (hidden_norm=True): the loss.
- google-research/simclr ``tf2/model.py`` ``ProjectionHead`` / ``LinearLayer`` and
  ``tf2/resnet.py`` ``BatchNormRelu``: the v2 projection head.
- Chen et al. 2020 (SimCLR v1), eq. 2, g(h) = W2 ReLU(W1 h): the v1 projection head.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# tf.math.l2_normalize's epsilon: it bounds the *squared* norm from below.
_L2_EPSILON = 1e-12


def _l2_normalize(x: Tensor) -> Tensor:
    """``tf.math.l2_normalize(x, -1)`` exactly: x * rsqrt(max(sum(x^2), 1e-12))."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True).clamp_min(_L2_EPSILON))


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's NT-Xent loss of two views' projections ``z1``, ``z2`` (N, D); mean over the 2N anchors.

    Anchor i's logits are its cosine similarities to the other 2N - 1 projections over
    ``temperature``; its target is the other view of the same image. google-research/simclr
    computes the same cross-entropies in two halves (view-1 anchors: ``[logits_ab, logits_aa]``,
    view-2 anchors: ``[logits_ba, logits_bb]``, self-similarity minus 1e9) and returns
    ``loss_a + loss_b``, each a mean over N anchors: that is exactly **2 x** this value. The mean is
    kept here (the usual PyTorch convention, a per-anchor mean); multiply by 2 to match
    simclr's loss scale, e.g. when reusing its learning rates with a non-LARS optimiser.

    Computed in float32 (float64 stays float64) with autocast disabled, via log-softmax, so low
    temperatures and bf16/fp16 inputs under autocast neither overflow nor lose the positives.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"nt_xent needs two (N, D) batches of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if not temperature > 0:
        raise ValueError(f"nt_xent: temperature must be > 0, got {temperature!r}")
    n = z1.shape[0]
    dtype = torch.promote_types(torch.promote_types(z1.dtype, z2.dtype), torch.float32)
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z = _l2_normalize(torch.cat([z1, z2]).to(dtype))
        logits = (z @ z.T) / temperature
        self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))
        positives = torch.arange(2 * n, device=z.device).roll(n)  # i <-> i + N
        return F.cross_entropy(logits, positives)


class ScaleOnlyBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d with a learned scale and no shift: TF's ``BatchNormalization(center=False)``.

    The shift stays a zero buffer, so it is in the state dict but no optimiser (nor a later
    ``requires_grad_(True)``) can move it.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        del self.bias
        self.register_buffer("bias", torch.zeros(num_features))


def projection_head(in_features: int, version: int = 1, hidden: int | None = None, out: int = 128) -> nn.Sequential:
    """SimCLR's projection head g(.) from the encoder's ``in_features`` to ``out`` (default 128).

    ``hidden`` defaults to ``in_features``, as in both SimCLR versions.

    - v1: Linear - ReLU - Linear, with biases (the SimCLR v1 paper, eq. 2). (The v1 code release
      also put BatchNorm after both linear layers; this follows the paper.)
    - v2: simclr ``tf2/model.py`` ``ProjectionHead`` with its defaults (``proj_head_mode=nonlinear``,
      ``num_proj_layers=3``): Linear(no bias) - BN - ReLU, Linear(no bias) - BN - ReLU,
      Linear(no bias) - BN with scale but no shift (``center=False``) and no ReLU. BN eps 1e-5 and
      momentum 0.1 (TF decay 0.9) are simclr's. PyTorch's default Linear init is kept (simclr
      initialises the dense kernels N(0, 0.01)).
    """
    width = in_features if hidden is None else hidden
    for label, value in (("in_features", in_features), ("hidden", width), ("out", out)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"projection_head: {label} must be a positive integer, got {value!r}")
    if version == 1:
        return nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, out))
    if version == 2:
        return nn.Sequential(
            nn.Linear(in_features, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(),
            nn.Linear(width, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(),
            nn.Linear(width, out, bias=False), ScaleOnlyBatchNorm1d(out),
        )
    raise ValueError(f"projection_head: version must be 1 or 2, got {version!r}")


def dense_head(in_features: int, hidden: Sequence[int], num_classes: int, dropout: float = 0.0) -> nn.Sequential:
    """The trainable layers on a frozen backbone: nguyen2021's students (Sec. 6.2.1, 7.3) and linear probes.

    Flatten, then per width in ``hidden`` a Linear - ReLU (- Dropout(``dropout``) when > 0), then a
    Linear to ``num_classes`` logits. ``hidden=()`` is a single linear layer (a linear probe). The
    paper gives no widths or dropout; the caller chooses them. Flatten lets it sit on pooled
    (N, D) features or on an unpooled (N, C, H, W) map, as a Keras Flatten-Dense top does.
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dense_head: dropout must be in [0, 1), got {dropout!r}")
    if dropout and not hidden:
        raise ValueError("dense_head: dropout follows hidden layers; with hidden=() it would do nothing")
    widths = [in_features, *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)
