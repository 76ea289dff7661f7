"""The views of a teacher's view bank: what a bank is (``BankSpec``), how its views' parameters
are drawn and stored, and how the build makes each view (bench/cell/view_bank.py stores them).

Two kinds of views, by the cell's recipe (bench/data/recipe.py):

* pad-crop (``recipe: pad_crop``, or no crop in ``augment``): per image and view an offset
  into the zero-padded image (dy, dx) and a flip bit, all drawn at once from one generator of
  the bank seed, kept in ``bank-<key>.pt``; a view is remade from the served uint8 image on the
  device (``apply_params``), by the build as by the student.
* random-resized crops (``recipe: imagenet`` with crop): per image and view a box (top, left,
  height, width) on the decoded image at its own size and a flip bit (``ViewDraw``: a generator
  of (bank seed, image index), as torchvision's ``RandomResizedCrop``), stored per shard as
  int16 ``params-NNNNN.npy``. The build has the set cut the views where the student's loader
  will cut them (in-memory: batched on the native images; streamed: in the loader's worker,
  decoding each image once for its K views), and a student's loader is handed the stored boxes
  (``ReplayCrops``): the teacher's logits are of the very view the student sees, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from bench.matrix.config import CellConfig
from bench.data.augment import crop_with, flip_with
from bench.data.images import ImageSet
from bench.data.recipe import ViewDraw, crops_in_loader
from bench.training.inference import to_device
from bench.training.runtime import Runtime
from bench.seeding import derived_generator

PARAMS = ("top", "left", "height", "width", "flip")  # the columns of a stored random-resized view


@dataclass(frozen=True)
class BankSpec:
    """What a bank holds: views per image, how they are drawn and how their logits are kept
    (``top_k``: the k largest logits and the rest's log-mean-exp, bench/cell/soft_labels.py; None:
    all logits)."""

    augment: tuple[str, ...]
    padding: int
    views: int
    seed: int
    precision: str
    recipe: str = "pad_crop"
    top_k: int | None = None

    @property
    def boxes(self) -> bool:
        """Views are random-resized crops of the decoded image (else pad-crop offsets)."""
        return crops_in_loader(self.recipe, self.augment)

    def describe(self) -> str:
        """The spec in a bank's key: today's text for pad-crop banks of full logits (their keys
        stay), the recipe and k appended when set."""
        more = (f"|recipe={self.recipe}" if self.recipe != "pad_crop" else "") + (f"|top_k={self.top_k}" if self.top_k else "")
        return f"augment={','.join(self.augment)}|padding={self.padding}|views={self.views}|seed={self.seed}|{self.precision}{more}"

    def draw(self) -> ViewDraw:
        return ViewDraw(self.seed, self.views, "flip" in self.augment)


def bank_spec(c: CellConfig) -> BankSpec:
    """The view bank a cell with ``teacher_targets: bank`` replays."""
    return BankSpec(tuple(c.augment), c.crop_padding, c.bank_views, c.bank_seed, c.bank_precision, c.recipe, c.bank_top_k)


def draw_params(n: int, spec: BankSpec) -> dict[str, torch.Tensor]:
    """Every image's K pad-crop views' parameters, from one generator of the bank seed: offsets
    into the zero-padded image (``padding`` = no shift) and flip bits."""
    generator = derived_generator(spec.seed, "view-bank")
    shape = (n, spec.views)
    dy = torch.randint(0, 2 * spec.padding + 1, shape, generator=generator)
    dx = torch.randint(0, 2 * spec.padding + 1, shape, generator=generator)
    flip = torch.rand(shape, generator=generator) < 0.5
    if "crop" not in spec.augment:
        dy.fill_(spec.padding)
        dx.fill_(spec.padding)
    if "flip" not in spec.augment:
        flip.fill_(False)
    return {"dy": dy.to(torch.int16), "dx": dx.to(torch.int16), "flip": flip}


def apply_params(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, spec: BankSpec) -> torch.Tensor:
    """The uint8 views of ``images`` with the given parameters, in the cell's augmentation order,
    as float in [0, 1] (what the student and the teacher see)."""
    for name in spec.augment:
        if name == "crop":
            images = crop_with(images, dy.to(images.device), dx.to(images.device), spec.padding)
        elif name == "flip":
            images = flip_with(images, flip.to(images.device))
    return images.float().div_(255.0)


ViewOf = Callable[[int], torch.Tensor]  # view k of a batch, float in [0, 1] on the device


def view_batches(source: ImageSet, part: torch.Tensor, first_row: int, spec: BankSpec, pad_params: dict[str, torch.Tensor] | None,
                 batch_size: int, runtime: Runtime) -> Iterator[tuple[torch.Tensor, ViewOf, torch.Tensor | None]]:
    """The build's batches of ``part`` (the bank's rows from ``first_row``): (indices, view k of
    the batch, the batch's stored params int16 [B, K, 5] or None for pad-crop, whose params are
    ``pad_params``, drawn up front)."""
    if spec.boxes:
        for views, params, idx in source.views(part, batch_size, runtime.workers, spec.draw()):
            on_device = to_device(views, runtime)
            yield idx, (lambda k, v=on_device: v[:, k].float().div_(255.0)), params
        return
    assert pad_params is not None
    row = first_row
    for images, _, idx in source.batches(part, batch_size, runtime.workers):
        x, rows = to_device(images, runtime), slice(row, row + len(idx))
        p = {name: value[rows] for name, value in pad_params.items()}
        yield idx, (lambda k, x=x, p=p: apply_params(x, p["dy"][:, k], p["dx"][:, k], p["flip"][:, k], spec)), None
        row += len(idx)
