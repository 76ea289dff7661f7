"""SimCLR's view augmentations, batched on the batch's device, replayable from explicit parameters.

The ops follow google-research/simclr ``data_util.py`` (Chen et al. 2020) with torchvision's
formulas: random resized crop (scale (0.08, 1), log-uniform ratio (3/4, 4/3)), horizontal flip
(p 0.5), colour distortion of strength ``s`` (brightness, contrast, saturation 0.8s, hue 0.2s,
applied with p 0.8), grayscale (p 0.2, ITU-R 601-2 luma) and Gaussian blur (p 0.5, sigma
U(0.1, 2), kernel ~10% of the side, odd). ``ops`` switches them on and off as nguyen2021's
Table 1 ablation does.

Each op comes three ways: ``*_with`` applies explicit per-image parameters, ``draw_*`` draws
them from a CPU ``torch.Generator`` (the parameters stay on the CPU; ``*_with`` moves them to
the batch's device), and ``random_*`` does both. ``simclr_view`` = ``draw_view_params`` then
``apply_view``, so a view bank can store the (small) parameters and replay a view exactly.
Two calls with two generators give SimCLR's two views.

Ordering: inside the colour distortion the four adjustments run in a random order per image,
as torchvision's ``ColorJitter`` and SimCLR's ``color_jitter_rand`` do (a fixed order would
make the distortion a narrower family than the paper's). Across ops the pipeline order is fixed,
as in SimCLR: crop, flip, colour, grayscale, blur, whatever the order of ``ops``.
``draw_view_params`` draws every op's parameters even when the op is off, so for one seed a
crop is the same with or without colour: ablation rows see paired views.

Where SimCLR's TensorFlow ops differ from torchvision's (contrast blends with a per-channel mean
there, with the gray mean here) torchvision's formulas are used, so the per-image reference
is ``torchvision.transforms.v2.functional``.

Inputs are float batches in [0, 1] of shape (N, C, H, W), C in {1, 3}; outputs stay in [0, 1]
(crop and blur clamp the one-ulp rounding overshoot that torchvision leaves).
For C = 1 saturation, hue and grayscale are the identity (as in torchvision).

Agreement with ``torchvision.transforms.v2.functional`` applied image by image with the same
parameters (float32; asserted bound in tests/data/test_views.py, then the largest diff observed):
  - flip, brightness: < 1e-6 (bitwise in practice); grayscale: < 1e-6 (1.2e-7);
  - resized_crop (bilinear, antialias=False): < 1e-5 (1.8e-7); contrast, saturation: < 1e-5
    (3e-7, a mean's summation order); Gaussian blur: < 1e-5 (1.1e-6, separable vs 2-d kernel);
  - hue: < 1e-4 (1.5e-6) and the composed colour distortion: < 1e-4 (7e-6): the HSV round trip
    is written in closed form and near-gray pixels divide by a small chroma.
The crop is an explicit two-tap gather rather than ``grid_sample`` (its normalised coordinates
cost ~3e-5 at 224 px) or ``roi_align`` (which clamps at the image border, where ``interpolate``
clamps at the crop's edge).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from bench.registry import Registry

Params = tuple[torch.Tensor, ...]
ViewParams = dict[str, Params]

PIPELINE: tuple[str, ...] = ("crop", "flip", "color", "gray", "blur")
COLOR_OPS: tuple[str, ...] = ("brightness", "contrast", "saturation", "hue")
LUMA = (0.2989, 0.587, 0.114)


def _check(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] not in (1, 3) or not images.is_floating_point():
        raise ValueError(f"expected a float (N, C, H, W) batch with C in (1, 3), got {tuple(images.shape)} {images.dtype}")


def _cpu(generator: torch.Generator) -> torch.Generator:
    if generator.device.type != "cpu":
        raise ValueError("parameters are drawn from a CPU generator, then moved to the batch's device")
    return generator


def _per_image(values: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """(N,) values as an (N, 1, 1, 1) tensor broadcasting over the batch's pixels."""
    return values.to(device=images.device, dtype=images.dtype).view(-1, 1, 1, 1)


def _where(apply: torch.Tensor, changed: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return torch.where(apply.to(images.device).view(-1, 1, 1, 1), changed, images)


PerImageOp = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _update(out: torch.Tensor, apply: torch.Tensor, fn: PerImageOp, values: torch.Tensor) -> None:
    """``out[i] = fn(out[i], values[i])`` in place for the selected images only, so a costly op
    (hue, blur) skips the others."""
    idx = apply.nonzero().squeeze(1)
    if idx.numel():
        on_device = idx.to(out.device)
        out[on_device] = fn(out[on_device], values[idx.to(values.device)])


# --- random resized crop ---------------------------------------------------------------------

def draw_crop_boxes(
    n: int, height: int, width: int, generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """(N, 4) int64 boxes (top, left, height, width) as ``RandomResizedCrop.get_params``: ten
    attempts per image (all drawn at once), the first that fits wins, else the central fallback."""
    g = _cpu(generator)
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, 10, generator=g, dtype=torch.float64))
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * torch.rand(n, 10, generator=g, dtype=torch.float64))
    w = torch.sqrt(target * aspect).round().long()  # round half to even, as Python's round
    h = torch.sqrt(target / aspect).round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first fitting attempt
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    top = (u[:, 0] * (height - h + 1)).floor().long()
    left = (u[:, 1] * (width - w + 1)).floor().long()

    boxes = torch.stack([top, left, h, w], dim=1)
    return torch.where(fits.any(dim=1, keepdim=True), boxes, torch.tensor(central_box(height, width, ratio)))


def central_box(height: int, width: int, ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """``RandomResizedCrop``'s fallback when no attempt fits: the central box of the image cut to the ratio range."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    return (height - fh) // 2, (width - fw) // 2, fh, fw


def _taps(start: torch.Tensor, length: torch.Tensor, out: int, device: torch.device, dtype: torch.dtype) -> Params:
    """Bilinear source taps along one axis, as ``interpolate(align_corners=False)`` computes them
    inside a crop [start, start + length): clamped at 0 and at the crop's last pixel. Computed on
    the CPU; the float64 product rounded once to float32 mimics the kernel's fused multiply-add
    (without it the weights drift by ~1e-5 on 224-pixel sides)."""
    start, length = start.cpu(), length.cpu()
    scale = (length.to(torch.float32)[:, None] / out).double()
    src = ((torch.arange(out, dtype=torch.float64)[None, :] + 0.5) * scale - 0.5).float().clamp_min(0)
    i0 = src.long()  # src >= 0, so truncation is floor
    i1 = i0 + (i0 < length[:, None] - 1)
    lam = (src - i0).to(device=device, dtype=dtype)
    return (start[:, None] + i0).to(device), (start[:, None] + i1).to(device), lam


def _lerp(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(1 - weight) a + weight b, in place in the fresh gathers ``a`` and ``b``."""
    return a.mul_(1 - weight).add_(b.mul_(weight))


def resized_crop_with(images: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Crop each image to its box (top, left, height, width) and resize it to ``size`` (default:
    the input's H, W) bilinearly, as ``resized_crop(..., antialias=False)``, all images at once:
    two-tap gathers along W, then along H (upsample_bilinear2d's order)."""
    _check(images)
    n, c, hgt, wid = images.shape
    out_h, out_w = size or (hgt, wid)
    top, left, bh, bw = boxes.unbind(1)
    y0, y1, ly = _taps(top, bh, out_h, images.device, images.dtype)
    x0, x1, lx = _taps(left, bw, out_w, images.device, images.dtype)
    picked = [images.gather(3, x[:, None, None, :].expand(n, c, hgt, out_w)) for x in (x0, x1)]
    across = _lerp(*picked, lx[:, None, None, :]).view(n * c * hgt, out_w)
    first_row = (torch.arange(n * c, device=images.device) * hgt).view(n, c, 1)  # of each (image, channel)
    picked = [across.index_select(0, (first_row + y[:, None, :]).view(-1)).view(n, c, out_h, out_w) for y in (y0, y1)]
    return _lerp(*picked, ly[:, None, :, None]).clamp_(0, 1)  # rounding can pass 1 by an ulp


def random_resized_crop(
    images: torch.Tensor, generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    boxes = draw_crop_boxes(images.shape[0], images.shape[2], images.shape[3], generator, scale, ratio)
    return resized_crop_with(images, boxes, size)


# --- horizontal flip --------------------------------------------------------------------------

def draw_flip(n: int, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    return torch.rand(n, generator=_cpu(generator)) < p


def flip_with(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror the selected images left-right (augment.random_flip's where, with given flags)."""
    return _where(flip, images.flip(-1), images)


def random_horizontal_flip(images: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    return flip_with(images, draw_flip(images.shape[0], generator, p))


# --- colour distortion ------------------------------------------------------------------------

def _luma(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) ITU-R 601-2 luma, in ``rgb_to_grayscale``'s order of operations."""
    r, g, b = images.unbind(1)
    return (r * LUMA[0] + g * LUMA[1] + b * LUMA[2]).unsqueeze(1)


def _blend(images: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    ratio = _per_image(ratio, images)
    return (images * ratio + other * (1 - ratio)).clamp(0, 1)


def adjust_brightness(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    return (images * _per_image(factors, images)).clamp(0, 1)


def adjust_contrast(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean gray level (the mean of the image itself when C = 1)."""
    gray = _luma(images) if images.shape[1] == 3 else images
    return _blend(images, gray.mean(dim=(1, 2, 3), keepdim=True), factors)


def adjust_saturation(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    return images if images.shape[1] == 1 else _blend(images, _luma(images), factors)


def adjust_hue(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``factors`` (in [-0.5, 0.5] turns) in HSV space, as ``adjust_hue``.

    Pillow's RGB -> HSV hue (in sixths of a turn), then the closed-form HSV -> RGB: channel n
    (5, 3, 1 for R, G, B) is max - (max - min) clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6.
    Value and chroma never change, so S is not formed and pixels with max == min stay put.
    """
    if images.shape[1] == 1:
        return images
    r, g, _ = images.unbind(1)
    minc, maxc = torch.aminmax(images, dim=1)
    chroma = maxc - minc
    rc, gc, bc = ((maxc.unsqueeze(1) - images) / torch.where(chroma == 0, 1.0, chroma).unsqueeze(1)).unbind(1)
    sixths = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    sixths = sixths + 6 * _per_image(factors, images).squeeze(1)
    offsets = torch.tensor([5.0, 3.0, 1.0], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    k = (offsets + sixths.unsqueeze(1)) % 6
    return maxc.unsqueeze(1) - chroma.unsqueeze(1) * torch.minimum(k, 4 - k).clamp(0, 1)


ADJUSTMENTS: tuple[PerImageOp, ...] = (
    adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)  # in COLOR_OPS order


def draw_color(n: int, generator: torch.Generator, strength: float = 1.0, p: float = 0.8) -> Params:
    """(factors (N, 4) in COLOR_OPS order, order (N, 4) a permutation of 0..3 per image, apply (N,)),
    the ranges of ``ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)``."""
    if not 0 <= 0.2 * strength <= 0.5:
        raise ValueError(f"colour strength {strength} must be in [0, 2.5] (hue 0.2s is at most half a turn)")
    g = _cpu(generator)
    jitter, hue = 0.8 * strength, 0.2 * strength
    lo = torch.tensor([max(0.0, 1 - jitter)] * 3 + [-hue])
    hi = torch.tensor([1 + jitter] * 3 + [hue])
    factors = lo + (hi - lo) * torch.rand(n, 4, generator=g)
    order = torch.rand(n, 4, generator=g).argsort(dim=1)
    apply = torch.rand(n, generator=g) < p
    return factors, order, apply


def color_with(images: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """Apply, to the images where ``apply``, adjustment ``order[i, k]`` at step k with its factor.
    Each (step, op) pair runs once on the images that need it: 16 small batched calls."""
    _check(images)
    ops = range(len(COLOR_OPS)) if images.shape[1] == 3 else range(2)  # saturation, hue: no-ops for C = 1
    out = images.clone()
    for step in range(len(COLOR_OPS)):
        for op in ops:
            _update(out, apply & (order[:, step] == op), ADJUSTMENTS[op], factors[:, op])
    return out


def random_color_distortion(images: torch.Tensor, generator: torch.Generator, strength: float = 1.0, p: float = 0.8) -> torch.Tensor:
    return color_with(images, *draw_color(images.shape[0], generator, strength, p))


# --- grayscale --------------------------------------------------------------------------------

def draw_gray(n: int, generator: torch.Generator, p: float = 0.2) -> torch.Tensor:
    return torch.rand(n, generator=_cpu(generator)) < p


def gray_with(images: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """Replace the selected images by their luma, repeated over the C channels."""
    _check(images)
    if images.shape[1] == 1:
        return images
    return _where(apply, _luma(images).expand_as(images), images)


def random_grayscale(images: torch.Tensor, generator: torch.Generator, p: float = 0.2) -> torch.Tensor:
    return gray_with(images, draw_gray(images.shape[0], generator, p))


# --- Gaussian blur ----------------------------------------------------------------------------

def blur_kernel_size(height: int, width: int) -> tuple[int, int]:
    """(kernel_h, kernel_w): SimCLR's side // 10 made odd (radius = (side // 10) // 2), per axis."""
    return 2 * (height // 10 // 2) + 1, 2 * (width // 10 // 2) + 1


def _kernels(sigmas: torch.Tensor, size: int) -> torch.Tensor:
    """(N, size) normalised 1-d Gaussians, on torchvision's grid (softmax of -(x / sigma)^2)."""
    lim = (size - 1) / (2.0 * math.sqrt(2.0))
    x = torch.linspace(-lim, lim, steps=size, device=sigmas.device, dtype=sigmas.dtype)
    return torch.softmax(-(x[None, :] / sigmas[:, None]).pow(2), dim=1)


def draw_blur(n: int, generator: torch.Generator, sigma: tuple[float, float] = (0.1, 2.0), p: float = 0.5) -> Params:
    g = _cpu(generator)
    sigmas = sigma[0] + (sigma[1] - sigma[0]) * torch.rand(n, generator=g)
    return sigmas, torch.rand(n, generator=g) < p


def _blur(images: torch.Tensor, sigmas: torch.Tensor, kernel_size: tuple[int, int]) -> torch.Tensor:
    """Separable per-image blur: one depthwise conv per axis with N * C groups, reflect padding."""
    n, c, h, w = images.shape
    kh, kw = kernel_size
    sigmas = sigmas.to(device=images.device, dtype=images.dtype).repeat_interleave(c)
    x = F.pad(images.reshape(1, n * c, h, w), (kw // 2, kw // 2, kh // 2, kh // 2), mode="reflect")
    x = F.conv2d(x, _kernels(sigmas, kh).view(n * c, 1, kh, 1), groups=n * c)
    x = F.conv2d(x, _kernels(sigmas, kw).view(n * c, 1, 1, kw), groups=n * c)
    return x.view(n, c, h, w).clamp_(0, 1)  # the weights sum to 1 only up to rounding


def blur_with(images: torch.Tensor, sigmas: torch.Tensor, apply: torch.Tensor, kernel_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Blur the selected images, each with its own sigma; ``kernel_size`` is (kernel_h, kernel_w),
    odd, default ``blur_kernel_size(H, W)``."""
    _check(images)
    size = kernel_size or blur_kernel_size(images.shape[2], images.shape[3])
    if size == (1, 1):
        return images
    out = images.clone()
    _update(out, apply, partial(_blur, kernel_size=size), sigmas)
    return out


def random_gaussian_blur(images: torch.Tensor, generator: torch.Generator, sigma: tuple[float, float] = (0.1, 2.0), p: float = 0.5) -> torch.Tensor:
    return blur_with(images, *draw_blur(images.shape[0], generator, sigma, p))


# --- composition ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ViewSettings:
    """The knobs of ``simclr_view``: colour strength, crop scale and ratio, blur sigma range."""
    strength: float = 1.0
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    sigma: tuple[float, float] = (0.1, 2.0)


@dataclass(frozen=True)
class ViewOp:
    """How to draw one op's parameters (n, height, width, generator, settings) and apply them."""
    draw: Callable[[int, int, int, torch.Generator, ViewSettings], Params]
    apply: Callable[..., torch.Tensor]


VIEW_OPS: Registry[ViewOp] = Registry("view op")
VIEW_OPS.register("crop")(ViewOp(lambda n, h, w, g, s: (draw_crop_boxes(n, h, w, g, s.scale, s.ratio),), resized_crop_with))
VIEW_OPS.register("flip")(ViewOp(lambda n, h, w, g, s: (draw_flip(n, g),), flip_with))
VIEW_OPS.register("color")(ViewOp(lambda n, h, w, g, s: draw_color(n, g, s.strength), color_with))
VIEW_OPS.register("gray")(ViewOp(lambda n, h, w, g, s: (draw_gray(n, g),), gray_with))
VIEW_OPS.register("blur")(ViewOp(lambda n, h, w, g, s: draw_blur(n, g, s.sigma), blur_with))


def draw_view_params(
    n: int, height: int, width: int, generator: torch.Generator, *,
    ops: Iterable[str] = PIPELINE, settings: ViewSettings = ViewSettings(),
) -> ViewParams:
    """CPU parameters of one view, keyed by op; every op is drawn (in PIPELINE order) so turning
    one off leaves the others' parameters unchanged, and only the ops in ``ops`` are kept."""
    wanted = {ops} if isinstance(ops, str) else set(ops)
    for name in wanted:
        VIEW_OPS.get(name)  # an unknown name raises BenchError, naming the known ones
    drawn = {name: VIEW_OPS.get(name).draw(n, height, width, generator, settings) for name in PIPELINE}
    return {name: params for name, params in drawn.items() if name in wanted}


def apply_view(images: torch.Tensor, params: ViewParams) -> torch.Tensor:
    """Replay a view: the ops present in ``params``, in PIPELINE order."""
    _check(images)
    for name in PIPELINE:
        if name in params:
            images = VIEW_OPS.get(name).apply(images, *params[name])
    return images


def simclr_view(
    images: torch.Tensor, generator: torch.Generator, *,
    ops: Iterable[str] = PIPELINE, strength: float = 1.0,
    scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
    sigma: tuple[float, float] = (0.1, 2.0),
) -> torch.Tensor:
    """One SimCLR view of each image; call twice with two generators for the two views."""
    n, _, h, w = images.shape
    settings = ViewSettings(strength, scale, ratio, sigma)
    return apply_view(images, draw_view_params(n, h, w, generator, ops=ops, settings=settings))
