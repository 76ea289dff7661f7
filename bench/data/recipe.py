"""The training recipe of a cell's images (``CellConfig.recipe``): what ``augment``'s crop means.

* ``pad_crop`` (the default, unchanged): the loader serves each image at ``image_size``
  (in-memory sets resized, streamed ones Resize + CenterCrop with PIL); the engine then pads by
  ``crop_padding`` and crops back, and flips (bench/data/augment.py).
* ``imagenet``: the papers' ImageNet recipe. A training image is a random-resized crop of the
  whole decoded image (torchvision's ``RandomResizedCrop`` parameters: scale (0.08, 1), ratio
  (3/4, 4/3), ten attempts then the central fallback; bench/data/views.py ``draw_crop_boxes``)
  resized to ``image_size`` in one resize per image, and flipped with p 0.5 when ``augment``
  names flip. Evaluation resizes the
  shorter side to ``image_size / 0.875`` (256 for 224) and takes the centre crop. The crop of an
  in-memory set is taken from its native images (CIFAR's 32 px), batched; a streamed image is
  decoded (``torchvision.io.decode_jpeg``, PIL for other files) and cropped in the loader's
  worker. Each image's box and flip come from a generator of (cell seed, epoch, index), so an
  epoch is the same on resume and whichever worker or rank decodes the image. A view bank's
  student instead hands the loader given boxes and flips (``ReplayCrops``; per image a ``Crop``
  for a worker), and its build has the set cut K views of each image (``ViewDraw``).

Agreement with ``torchvision.transforms.v2.functional`` on the same boxes: tests/data/test_recipe.py.
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from bench.data.views import central_box, draw_crop_boxes, draw_flip, flip_with, resized_crop_with
from bench.seeding import derived_generator

# torchvision 0.29 deprecates its decoders in favour of TorchCodec (not installed here); they are
# libjpeg-turbo still, and the warning would repeat once per worker
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

RECIPES: tuple[str, ...] = ("pad_crop", "imagenet")
EVAL_CROP_FRACTION = 0.875  # centre crop of 224 from 256
CROP_SCALE, CROP_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # RandomResizedCrop's defaults, draw_crop_boxes'


def crops_in_loader(recipe: str, augment: Sequence[str]) -> bool:
    """Whether ``augment``'s crop is the recipe's random-resized crop, cut where the images are
    loaded (and a view bank stores boxes), rather than pad-crop on the served images."""
    return recipe != "pad_crop" and "crop" in augment


class _ItemCrop:
    """One image's training crop in a loader worker, from the box and flip its key gives."""

    def box_and_flip(self, index: int, height: int, width: int) -> tuple[torch.Tensor, bool]:
        raise NotImplementedError

    def cut(self, image: torch.Tensor, index: int, size: int) -> torch.Tensor:
        """A loader worker's training crop of one decoded image (uint8 [C, H, W])."""
        return train_crop(image, *self.box_and_flip(index, image.shape[1], image.shape[2]), size)


@dataclass(frozen=True)
class CropKey(_ItemCrop):
    """Where an epoch's crops come from: (seed, epoch); an image's generator adds its index.
    ``flip``: mirror the crops drawn so (augment names flip); the draw is the same either way,
    so a cell with and without flip sees the same boxes."""
    seed: int
    epoch: int
    flip: bool = True

    def generator(self, *more: object) -> torch.Generator:
        return derived_generator(self.seed, self.epoch, "recipe", *more)  # flip or not: the same draws

    def box_and_flip(self, index: int, height: int, width: int) -> tuple[torch.Tensor, bool]:
        return draw_box_and_flip(self, index, height, width)

    def on_batch(self, native: torch.Tensor, start: int, indices: torch.Tensor, size: int) -> torch.Tensor:
        """An in-memory batch's crops (its generator named by its first image)."""
        return crop_batch(native, self, int(indices[0]), size)

    def item_keys(self, indices: torch.Tensor) -> list[Any]:
        return [self] * len(indices)

    def part(self, positions: torch.Tensor) -> "CropKey":
        return self


@dataclass(frozen=True)
class Crop(_ItemCrop):
    """One image's given box (top, left, height, width on the decoded image) and flip: what a
    loader worker is handed to replay a view bank's view of that image."""
    top: int
    left: int
    height: int
    width: int
    flip: bool

    def box_and_flip(self, index: int, height: int, width: int) -> tuple[torch.Tensor, bool]:
        return torch.tensor([self.top, self.left, self.height, self.width]), self.flip


@dataclass(frozen=True)
class ReplayCrops:
    """Given crops for a pass: ``boxes`` (int [N, 4]) and ``flips`` (bool [N]), row i for the
    pass's i-th index (a view bank's stored views, which a student replays): in-memory sets
    crop their native images with them, batched (``crop_with_boxes``, as ``crop_batch``);
    streamed ones hand each worker its image's ``Crop``."""
    boxes: torch.Tensor
    flips: torch.Tensor

    def on_batch(self, native: torch.Tensor, start: int, indices: torch.Tensor, size: int) -> torch.Tensor:
        rows = slice(start, start + len(indices))
        return crop_with_boxes(native, self.boxes[rows], self.flips[rows], size)

    def item_keys(self, indices: torch.Tensor) -> list[Any]:
        return [Crop(*(int(v) for v in box), bool(flip)) for box, flip in zip(self.boxes.tolist(), self.flips.tolist())]

    def part(self, positions: torch.Tensor) -> "ReplayCrops":
        """The crops of some of the pass's items (``positions`` into it, or a mask)."""
        return ReplayCrops(self.boxes[positions], self.flips[positions])


@dataclass(frozen=True)
class ViewDraw:
    """A view bank's K views of each image (recipe imagenet): boxes on the decoded image and
    flips from a generator of (bank seed, index), so an image's views are the same whichever
    batch, shard or worker draws them, and whatever the image's size in pixels."""
    seed: int
    views: int
    flip: bool = True

    def params(self, index: int, height: int, width: int) -> torch.Tensor:
        """int16 [K, 5]: (top, left, height, width, flip) of the image's K views."""
        g = derived_generator(self.seed, "view-bank", index)
        boxes = draw_crop_boxes(self.views, height, width, g)
        flips = draw_flip(self.views, g) & self.flip
        return torch.cat([boxes, flips[:, None].long()], dim=1).to(torch.int16)

    def cut(self, image: torch.Tensor, index: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A worker's K views of one decoded image (uint8 [K, C, size, size]) and their params."""
        params = self.params(index, image.shape[1], image.shape[2])
        views = [train_crop(image, p[:4], bool(p[4]), size) for p in params]
        return torch.stack(views), params

    def on_batch(self, native: torch.Tensor, indices: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """An in-memory batch's K views (uint8 [B, K, C, size, size]) and params [B, K, 5]."""
        params = torch.stack([self.params(int(i), native.shape[2], native.shape[3]) for i in indices])
        views = [crop_with_boxes(native, params[:, k, :4].long(), params[:, k, 4].bool(), size) for k in range(self.views)]
        return torch.stack(views, dim=1), params


def draw_box_and_flip(key: CropKey, index: int, height: int, width: int) -> tuple[torch.Tensor, bool]:
    """One image's (top, left, height, width) box and flip, from its own generator: the draws of
    ``draw_crop_boxes(1, ...)`` then ``draw_flip(1, ...)`` and their arithmetic, all but ``exp``
    in Python floats (the same IEEE operations, so the same box; tests/data/test_recipe.py).
    A loader's worker calls it per image: a fifth of the batched version's ~140 us at n = 1."""
    g = key.generator(index)
    (s0, s1), (r0, r1) = CROP_SCALE, CROP_RATIO
    area = height * width
    target = [area * (s0 + (s1 - s0) * r) for r in torch.rand(10, generator=g, dtype=torch.float64).tolist()]
    lo, hi = math.log(r0), math.log(r1)
    aspect = torch.exp(lo + (hi - lo) * torch.rand(10, generator=g, dtype=torch.float64)).tolist()
    u = torch.rand(2, generator=g, dtype=torch.float64).tolist()
    flip = bool(torch.rand(1, generator=g)[0] < 0.5) and key.flip
    for t, a in zip(target, aspect):
        w, h = round(math.sqrt(t * a)), round(math.sqrt(t / a))  # half to even, as torch.round
        if 0 < w <= width and 0 < h <= height:
            box = (math.floor(u[0] * (height - h + 1)), math.floor(u[1] * (width - w + 1)), h, w)
            break
    else:
        box = central_box(height, width, CROP_RATIO)
    return torch.tensor(box), flip


def train_crop(image: torch.Tensor, box: torch.Tensor, flip: bool, size: int) -> torch.Tensor:
    """uint8 [C, H, W] -> its box resized to size x size (bilinear, antialiased: one resize,
    as ``RandomResizedCrop`` on a decoded image), mirrored when ``flip``."""
    from torchvision.transforms.v2 import functional as TF

    top, left, h, w = (int(v) for v in box)
    out = TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)
    return TF.horizontal_flip(out) if flip else out


def eval_size(size: int) -> int:
    return int(math.floor(size / EVAL_CROP_FRACTION))


def eval_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [C, H, W] -> shorter side to ``size / 0.875``, then the centre size x size."""
    from torchvision.transforms.v2 import functional as TF

    return TF.center_crop(TF.resize(image, [eval_size(size)], antialias=True), [size, size])


def crop_batch(images: torch.Tensor, key: CropKey, first: int, size: int) -> torch.Tensor:
    """A batch of an in-memory set (uint8 [N, C, H, W] at native size) as training views: boxes
    on the native images, then ``crop_with_boxes``. ``first`` (the batch's position in the
    epoch) picks the batch's generator."""
    n, _, h, w = images.shape
    g = key.generator("batch", first)
    return crop_with_boxes(images, draw_crop_boxes(n, h, w, g), draw_flip(n, g) & key.flip, size)


def crop_with_boxes(images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, C, H, W] -> each image's box, bilinear crop-resize to ``size`` on the batch's
    device (``resized_crop(antialias=False)``'s formula, checked in tests/data/test_views.py),
    mirrored where ``flips``; uint8 again. Image by image the same whatever else is in the batch
    (gathers and element-wise arithmetic), so a view bank's view replays bit for bit."""
    x = resized_crop_with(images.float().div_(255), boxes, (size, size))
    return flip_with(x, flips).mul_(255).round_().to(torch.uint8)


def decode_image(path: str) -> torch.Tensor:
    """An image file as uint8 RGB [3, H, W] (``decode_bytes`` of its bytes)."""
    from torchvision.io import read_file

    return decode_bytes(read_file(path))


def decode_bytes(data: torch.Tensor) -> torch.Tensor:
    """An image file's bytes (uint8 [n]) as uint8 RGB [3, H, W]: libjpeg-turbo
    (``torchvision.io.decode_jpeg``) for JPEG bytes; PIL for anything else and for the JPEGs it
    refuses, so a PNG named .JPEG (ImageNet has one) or an odd JPEG decodes all the same."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if _is_jpeg(data):
        try:
            image = decode_jpeg(data, mode=ImageReadMode.RGB)
            if image.shape[0] == 3:
                return image
        except RuntimeError:
            pass
    return _pil_decode(io.BytesIO(data.numpy()))


def decode_batch(datas: list[torch.Tensor], device: str | torch.device) -> list[torch.Tensor]:
    """Files' bytes decoded on ``device`` in one call (``decode_jpeg`` of the list: nvjpeg's
    batched decode on a GPU, libjpeg-turbo on the CPU, where the pixels are ``decode_bytes``');
    a batch with another format, or one the call refuses, file by file with ``decode_bytes``."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if all(_is_jpeg(data) for data in datas):
        try:
            images = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
            if all(image.shape[0] == 3 for image in images):
                return images
        except RuntimeError:
            pass
    return [decode_bytes(data).to(device) for data in datas]


def header_size(data: torch.Tensor) -> tuple[int, int]:
    """(height, width) of an image file's bytes, from its header (PIL reads no pixels for it)."""
    from PIL import Image

    with Image.open(io.BytesIO(data.numpy())) as im:
        return im.height, im.width


def _is_jpeg(data: torch.Tensor) -> bool:
    return data[:2].tolist() == [0xFF, 0xD8]


def _pil_decode(file: Any) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    with Image.open(file) as im:
        return TF.pil_to_tensor(im.convert("RGB"))


class ToTensorRGB:
    """A dataset's PIL image (or tensor) -> uint8 RGB [3, H, W] (a class: workers pickle it)."""

    def __call__(self, image: Any) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            return image
        from torchvision.transforms.v2 import functional as TF

        return TF.pil_to_tensor(image if image.mode == "RGB" else image.convert("RGB"))
