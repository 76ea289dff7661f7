"""Top-k soft labels (FKD, Shen & Xing 2021): a view bank of 1000 classes keeps, per view, the
teacher's k largest logits and their classes instead of all of them.

FKD stores the top-k probabilities and spreads the rest of the probability mass uniformly over
the other classes (its ``marginal_smoothing_k5``). Our distillation loss takes logits at a
temperature T, so what is kept and rebuilt is logits:

* kept, per view: the top-k logits ``l_1..l_k``, their classes (int16), and one value
  ``r = log(mean(exp(l_j)) over the other C - k classes)`` (a log-mean-exp);
* rebuilt: ``r`` for every class, then the top-k logits at their classes.

At T = 1 the rebuilt softmax is exactly FKD's renormalised label: the top-k probabilities are
the teacher's, and each other class gets (1 - their sum) / (C - k), since
``(C - k) exp(r) = sum of exp(l_j) over the rest``. At any T the top-k classes keep the
teacher's ratios; the rest is one uniform value (``exp(r / T)`` each), as FKD's uniform spread
is a smoothing of the tail. Checked against a hand computation in tests/cell/test_bank_replay.py.
"""
from __future__ import annotations

import math

import torch

from bench.errors import BenchError

INDEX_DTYPE = torch.int16  # class indices below 32,768


def top_k(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [..., C] -> (values [..., k + 1]: the top-k logits, largest first, then ``r``;
    indices int16 [..., k]), computed in float32."""
    classes = logits.shape[-1]
    if not 0 < k < classes:
        raise BenchError(f"bank_top_k {k}: the teacher has {classes} classes; use a k below that, or null for full logits")
    if classes > torch.iinfo(INDEX_DTYPE).max:
        raise BenchError(f"bank_top_k: {classes} classes do not fit int16 indices")
    x = logits.float()
    top, index = x.topk(k, dim=-1)
    rest = torch.logsumexp(x.scatter(-1, index, -math.inf), dim=-1, keepdim=True) - math.log(classes - k)
    return torch.cat([top, rest], dim=-1), index.to(INDEX_DTYPE)


def rebuild(values: torch.Tensor, index: torch.Tensor, classes: int) -> torch.Tensor:
    """The logits [..., C] (float32) that ``top_k``'s (values, indices) stand for."""
    values = values.float()
    out = values[..., -1:].expand(*values.shape[:-1], classes).clone()
    return out.scatter_(-1, index.long(), values[..., :-1])
