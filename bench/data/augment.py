"""Batched augmentation on whole uint8 batches, on the batch's device (airbench-style).

Per-sample random crops with zero padding and horizontal flips are done with one gather per
batch instead of a PIL transform per image. The random draws come from an explicit generator
so a resumed epoch replays the same augmentation.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from bench.registry import Registry

Augmentation = Callable[[torch.Tensor, torch.Generator, int], torch.Tensor]
AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")


@AUGMENTATIONS.register("crop")
def random_crop(images: torch.Tensor, generator: torch.Generator, padding: int) -> torch.Tensor:
    """Pad by ``padding`` and take a random crop of the original size, per sample."""
    if padding == 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device)[None, :])[:, None, None, :]
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    chans = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


@AUGMENTATIONS.register("flip")
def random_flip(images: torch.Tensor, generator: torch.Generator, padding: int) -> torch.Tensor:
    """Flip each sample horizontally with probability 1/2."""
    flip = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def augment(images: torch.Tensor, names: Sequence[str], generator: torch.Generator, padding: int) -> torch.Tensor:
    for name in names:
        images = AUGMENTATIONS.get(name)(images, generator, padding)
    return images
