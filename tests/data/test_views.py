"""bench.data.views against torchvision.transforms.v2.functional, image by image, same parameters.

Tolerances (max abs diff, float32 images in [0, 1]): flip, grayscale, brightness 1e-6 (observed
0 to 1.2e-7); resized crop, contrast, saturation, blur 1e-5 (observed <= 1.1e-6: rounding of tap
weights, of a mean, of a separable vs a 2-d kernel); hue and the composed colour distortion 1e-4
(observed <= 7e-6: closed-form HSV round trip, small-chroma pixels). Probabilities: within 5 binomial
standard deviations, on fixed seeds.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import pytest
import torch
import torchvision.transforms as T1
import torchvision.transforms.v2.functional as TF

from bench.data import views
from bench.errors import BenchError

SHAPES = [(3, 32, 32), (1, 24, 40), (3, 40, 24)]  # C = 1 and 3, square and not
TORCHVISION_COLOR = {
    "brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast,
    "saturation": TF.adjust_saturation, "hue": TF.adjust_hue,
}
COLOR_TOL = {"brightness": 1e-6, "contrast": 1e-5, "saturation": 1e-5, "hue": 1e-4}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int, shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """Random images with the hard cases: saturated 0/1 values and gray (R = G = B) pixels."""
    c, h, w = shape
    x = ((torch.rand(n, c, h, w, generator=gen(seed)) - 0.1) * 1.25).clamp(0, 1)
    gray = torch.rand(n, 1, h, w, generator=gen(seed + 1)) < 0.1
    return torch.where(gray, x[:, :1], x)


def per_image(fn: Callable[[int, torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
    return torch.stack([fn(i, image) for i, image in enumerate(batch)])


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def within_binomial(flags: torch.Tensor, p: float) -> None:
    n = flags.numel()
    assert abs(flags.float().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)


# --- each op, explicit parameters, against torchvision -----------------------------------------

@pytest.mark.parametrize("shape", SHAPES + [(3, 120, 160)])
@pytest.mark.parametrize("size", [None, (17, 9), (64, 64)])
def test_resized_crop_matches_torchvision(shape: tuple[int, int, int], size: tuple[int, int] | None) -> None:
    x = images(48, shape)
    boxes = views.draw_crop_boxes(48, shape[1], shape[2], gen(1))
    boxes[0] = torch.tensor([0, 0, shape[1], shape[2]])  # the whole image
    out_size = list(size or shape[1:])
    want = per_image(lambda i, im: TF.resized_crop(im, *boxes[i].tolist(), size=out_size, antialias=False), x)
    assert max_diff(views.resized_crop_with(x, boxes, size), want) < 1e-5


@pytest.mark.parametrize("shape", SHAPES)
def test_flip_matches_torchvision(shape: tuple[int, int, int]) -> None:
    x = images(32, shape)
    flip = views.draw_flip(32, gen(1))
    want = per_image(lambda i, im: TF.horizontal_flip(im) if flip[i] else im, x)
    assert max_diff(views.flip_with(x, flip), want) < 1e-6


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", views.COLOR_OPS)
def test_each_colour_adjustment_matches_torchvision(shape: tuple[int, int, int], op: str) -> None:
    x = images(32, shape)
    k = views.COLOR_OPS.index(op)
    factors = views.draw_color(32, gen(1), strength=1.0)[0][:, k]
    want = per_image(lambda i, im: TORCHVISION_COLOR[op](im, factors[i].item()), x)
    assert max_diff(views.ADJUSTMENTS[k](x, factors), want) < COLOR_TOL[op]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("strength", [0.5, 1.0, 2.0])
def test_colour_distortion_matches_torchvision_in_each_images_order(shape: tuple[int, int, int], strength: float) -> None:
    x = images(64, shape)
    factors, order, apply = views.draw_color(64, gen(1), strength=strength)

    def jitter(i: int, im: torch.Tensor) -> torch.Tensor:
        for op in order[i].tolist() if apply[i] else []:
            im = TORCHVISION_COLOR[views.COLOR_OPS[op]](im, factors[i, op].item())
        return im

    assert max_diff(views.color_with(x, factors, order, apply), per_image(jitter, x)) < 1e-4


@pytest.mark.parametrize("shape", SHAPES)
def test_grayscale_matches_torchvision(shape: tuple[int, int, int]) -> None:
    x = images(32, shape)
    apply = views.draw_gray(32, gen(1), p=0.5)
    want = per_image(lambda i, im: TF.rgb_to_grayscale(im, num_output_channels=shape[0]) if apply[i] else im, x)
    out = views.gray_with(x, apply)
    assert max_diff(out, want) < 1e-6
    if shape[0] == 3:
        assert torch.equal(out[apply][:, 0], out[apply][:, 2])


@pytest.mark.parametrize("shape", SHAPES + [(3, 96, 64)])
@pytest.mark.parametrize("kernel", [None, (5, 7)])
def test_blur_matches_torchvision(shape: tuple[int, int, int], kernel: tuple[int, int] | None) -> None:
    x = images(32, shape)
    sigmas, apply = views.draw_blur(32, gen(1))
    kh, kw = kernel or views.blur_kernel_size(*shape[1:])
    want = per_image(lambda i, im: TF.gaussian_blur(im, [kw, kh], [sigmas[i].item()] * 2) if apply[i] else im, x)
    assert max_diff(views.blur_with(x, sigmas, apply, kernel), want) < 1e-5


def test_blur_kernel_is_about_a_tenth_of_the_side_and_odd() -> None:
    assert views.blur_kernel_size(32, 32) == (3, 3)
    assert views.blur_kernel_size(224, 96) == (23, 9)  # SimCLR: radius = (side // 10) // 2
    assert views.blur_kernel_size(8, 8) == (1, 1)


# --- parameter draws -----------------------------------------------------------------------------

@pytest.mark.parametrize(("height", "width", "scale", "ratio"), [
    (64, 96, (0.08, 1.0), (3 / 4, 4 / 3)),
    (224, 224, (0.08, 1.0), (3 / 4, 4 / 3)),
    (50, 30, (0.3, 0.5), (0.5, 2.0)),
])
def test_crop_boxes_respect_scale_and_ratio(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]) -> None:
    top, left, h, w = views.draw_crop_boxes(20_000, height, width, gen(0), scale, ratio).double().unbind(1)
    assert ((h >= 1) & (h <= height) & (w >= 1) & (w <= width)).all()
    assert ((top >= 0) & (top + h <= height) & (left >= 0) & (left + w <= width)).all()
    # w, h are sqrt(area * ratio), sqrt(area / ratio) rounded: these bounds hold exactly.
    area = height * width
    assert ((w + 0.5) * (h + 0.5) >= scale[0] * area).all() and ((w - 0.5) * (h - 0.5) <= scale[1] * area).all()
    assert ((w + 0.5) / (h - 0.5) >= ratio[0]).all() and ((w - 0.5) / (h + 0.5) <= ratio[1]).all()
    # Offsets cover the whole free range.
    assert top.min() == 0 and left.min() == 0 and (top + h).max() == height and (left + w).max() == width


def test_crop_box_distribution_matches_torchvision_get_params() -> None:
    n, height, width = 4000, 48, 64
    ours = views.draw_crop_boxes(n, height, width, gen(0)).double()
    torch.manual_seed(0)
    img = torch.zeros(1, height, width)
    theirs = torch.tensor([T1.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]).double()
    for boxes_stat in (lambda b: b[:, 2] * b[:, 3] / (height * width), lambda b: torch.log(b[:, 3] / b[:, 2])):
        a, b = boxes_stat(ours), boxes_stat(theirs)
        assert abs(a.mean() - b.mean()) < 5 * math.sqrt((a.var() + b.var()) / n)


@pytest.mark.parametrize(("height", "width"), [(20, 40), (40, 20), (30, 30)])
def test_crop_fallback_is_torchvisions_central_crop(height: int, width: int) -> None:
    scale, ratio = (1.5, 2.0), (3 / 4, 4 / 3)  # never fits: the fallback every time
    boxes = views.draw_crop_boxes(5, height, width, gen(0), scale, ratio)
    want = T1.RandomResizedCrop.get_params(torch.zeros(1, height, width), list(scale), list(ratio))
    assert boxes.tolist() == [list(want)] * 5


def test_probabilities_hold_over_a_large_batch() -> None:
    n = 100_000
    within_binomial(views.draw_gray(n, gen(0)), 0.2)
    within_binomial(views.draw_flip(n, gen(1)), 0.5)
    sigmas, blur = views.draw_blur(n, gen(2))
    within_binomial(blur, 0.5)
    assert sigmas.min() >= 0.1 and sigmas.max() <= 2.0 and abs(sigmas.mean().item() - 1.05) < 0.01
    factors, order, color = views.draw_color(n, gen(3), strength=0.5)
    within_binomial(color, 0.8)
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(n, 4))  # a permutation per image
    for op in range(4):
        within_binomial(order[:, 0] == op, 0.25)  # each adjustment first a quarter of the time
    lo, hi = factors.min(dim=0).values, factors.max(dim=0).values
    assert torch.allclose(lo, torch.tensor([0.6, 0.6, 0.6, -0.1]), atol=1e-3)
    assert torch.allclose(hi, torch.tensor([1.4, 1.4, 1.4, 0.1]), atol=1e-3)


def test_applied_grayscale_fraction_on_images() -> None:
    x = torch.rand(20_000, 3, 4, 4, generator=gen(0))
    out = views.random_grayscale(x, gen(1))
    within_binomial((out[:, 0] == out[:, 1]).flatten(1).all(dim=1), 0.2)


def test_strength_beyond_half_a_hue_turn_is_refused() -> None:
    with pytest.raises(ValueError, match="strength"):
        views.draw_color(4, gen(0), strength=3.0)


# --- the composed view -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_same_seed_same_view_other_seed_other_view(shape: tuple[int, int, int]) -> None:
    x = images(64, shape)
    first, again = views.simclr_view(x, gen(0)), views.simclr_view(x, gen(0))
    assert torch.equal(first, again)
    assert not torch.equal(first, views.simclr_view(x, gen(1)))
    params = views.draw_view_params(64, shape[1], shape[2], gen(0))
    assert torch.equal(views.apply_view(x, params), first)  # a stored view replays exactly


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("strength", [1.0, 2.5])
def test_views_stay_in_unit_range_and_shape(shape: tuple[int, int, int], strength: float) -> None:
    x = images(128, shape)
    out = views.simclr_view(x, gen(0), strength=strength)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1


def test_ops_switch_ops_on_and_off_and_keep_the_others_parameters() -> None:
    x = images(32, (3, 32, 32))
    assert torch.equal(views.simclr_view(x, gen(0), ops=()), x)
    full = views.draw_view_params(32, 32, 32, gen(0))
    crop_only = views.draw_view_params(32, 32, 32, gen(0), ops=("crop",))
    assert list(crop_only) == ["crop"] and torch.equal(crop_only["crop"][0], full["crop"][0])
    assert torch.equal(views.simclr_view(x, gen(0), ops=("crop",)), views.resized_crop_with(x, full["crop"][0]))
    assert torch.equal(views.simclr_view(x, gen(0), ops=("blur", "crop")), views.simclr_view(x, gen(0), ops=("crop", "blur")))
    with pytest.raises(BenchError, match="unknown view op 'jitter'"):
        views.simclr_view(x, gen(0), ops=("crop", "jitter"))


def test_one_channel_images_get_brightness_and_contrast_only() -> None:
    x = images(64, (1, 24, 40))
    factors, order, apply = views.draw_color(64, gen(0))
    neutral = factors.clone()
    neutral[:, 2:] = torch.tensor([1.0, 0.0])  # saturation x1, hue +0: the drawn ones are ignored
    assert torch.equal(views.color_with(x, factors, order, apply), views.color_with(x, neutral, order, apply))
    assert not torch.equal(views.color_with(x, factors, order, apply), x)
    assert torch.equal(views.gray_with(x, torch.ones(64, dtype=torch.bool)), x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_view_on_the_gpu_matches_the_cpu() -> None:
    x = images(64, (3, 32, 32))
    assert max_diff(views.simclr_view(x.cuda(), gen(0)).cpu(), views.simclr_view(x, gen(0))) < 1e-4


def test_speed_sanity(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a timed assertion: prints the cost of one view of a 256 x 3 x 32 x 32 batch, with the
    default thread count and with one thread (on a shared machine, thread contention dominates)."""
    x = torch.rand(256, 3, 32, 32, generator=gen(0))
    threads = torch.get_num_threads()
    lines = []
    try:
        for count in dict.fromkeys([threads, 1]):
            torch.set_num_threads(count)
            views.simclr_view(x, gen(0))  # warm-up
            start = time.perf_counter()
            for seed in range(3):
                views.simclr_view(x, gen(seed))
            lines.append(f"simclr_view 256x3x32x32, {count} thread(s): {(time.perf_counter() - start) / 3 * 1000:.1f} ms per view")
    finally:
        torch.set_num_threads(threads)
    with capsys.disabled():
        print("\n" + "\n".join(lines))
