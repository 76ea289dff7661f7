"""Deterministic test-time transforms of data distillation (Radosavovic et al. 2018): the teacher
sees every unlabeled image under each of them and its softmaxes are averaged.

A transform maps a float batch [B, C, H, W] in [0, 1] to one of the same shape, so any model
that takes the images takes the transformed ones. The set is: identity; each rescaling (resize
by the factor, then centre-crop back when larger or zero-pad back when smaller, as a detector
sees an image at another scale); each fixed crop (a square of ``crop_fraction`` of the side at a
corner or the centre, resized back); and with ``flip`` every one of those mirrored too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor], torch.Tensor]


class TransformSettings(Protocol):
    """The annotate fields of a cell's config (``bench.matrix.config.CellConfig``) the set is made of;
    a protocol, so the data package needs nothing of the matrix package."""

    annotate_scales: tuple[float, ...]
    annotate_crops: tuple[str, ...]
    annotate_crop_fraction: float
    annotate_flip: bool


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def rescale(factor: float) -> Transform:
    """Resize by ``factor``; centre-crop (factor > 1) or zero-pad (factor < 1) back to the size."""

    def apply(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
        if (nh, nw) == (h, w):
            return x
        y = _resize(x, nh, nw)
        if nh >= h and nw >= w:
            top, left = (nh - h) // 2, (nw - w) // 2
            return y[..., top : top + h, left : left + w]
        top, left = (h - nh) // 2, (w - nw) // 2
        return F.pad(y, (left, w - nw - left, top, h - nh - top))

    return apply


_CORNERS = {
    "center": (0.5, 0.5), "top_left": (0.0, 0.0), "top_right": (0.0, 1.0),
    "bottom_left": (1.0, 0.0), "bottom_right": (1.0, 1.0),
}


def fixed_crop(position: str, fraction: float) -> Transform:
    """The square of ``fraction`` of the side at ``position`` (a corner or the centre), resized back."""
    row, column = _CORNERS[position]

    def apply(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
        top, left = round((h - ch) * row), round((w - cw) * column)
        return _resize(x[..., top : top + ch, left : left + cw], h, w)

    return apply


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


@dataclass(frozen=True)
class NamedTransform:
    name: str
    apply: Transform


def transforms_of(config: TransformSettings) -> list[NamedTransform]:
    """The annotate cell's transform set, in a fixed order (its names go into the artifact)."""
    base = [NamedTransform("identity", identity)]
    base += [NamedTransform(f"scale{factor:g}", rescale(factor)) for factor in config.annotate_scales if factor != 1.0]
    base += [NamedTransform(f"crop_{pos}{config.annotate_crop_fraction:g}", fixed_crop(pos, config.annotate_crop_fraction))
             for pos in config.annotate_crops]
    if not config.annotate_flip:
        return base
    flipped = [NamedTransform(f"{t.name}+flip", lambda x, t=t: hflip(t.apply(x))) for t in base]
    return base + flipped
