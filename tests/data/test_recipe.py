"""The imagenet recipe (issue 24, point 1): random-resized crop + flip of the decoded image,
evaluation resize + centre crop, checked against torchvision.transforms.v2 on the same boxes;
and the decoder's fallbacks (greyscale, CMYK, PNG named .JPEG)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from torchvision.transforms.v2 import functional as TF

from bench.cli import main
from bench.matrix.config import CellConfig
from bench.data.image_folders import with_recipe
from bench.data.images import StreamedImageSet, TensorImageSet
from bench.data.recipe import CropKey, ReplayCrops, crop_batch, decode_image, draw_box_and_flip, eval_crop
from bench.data.views import draw_crop_boxes, draw_flip
from tests.conftest import write_matrix


def _photo(side: tuple[int, int], seed: int) -> np.ndarray:
    """A crop of one of scikit-learn's sample photos (real JPEG statistics), H x W x 3 uint8."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    photo = photos[seed % len(photos)]
    h, w = side
    top, left = (seed * 37) % (photo.shape[0] - h), (seed * 53) % (photo.shape[1] - w)
    return np.ascontiguousarray(photo[top : top + h, left : left + w])


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two class folders of JPEGs of several sizes, and the odd files of real image folders."""
    root = tmp_path_factory.mktemp("photos")
    for k, side in enumerate([(300, 400), (375, 500), (333, 250), (240, 360)]):
        folder = root / f"c{k % 2}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(_photo(side, k)).save(folder / f"{k}.JPEG", quality=90)
    Image.fromarray(_photo((200, 300), 7)).convert("L").save(root / "c0" / "grey.JPEG", quality=90)
    Image.fromarray(_photo((200, 300), 8)).convert("CMYK").save(root / "c1" / "cmyk.JPEG", quality=90)
    Image.fromarray(_photo((200, 300), 9)).save(root / "c1" / "png.JPEG", format="PNG")
    return root


def test_batched_crops_of_in_memory_images_match_torchvision_v2() -> None:
    """crop_batch = resized_crop(antialias=False) + horizontal_flip per image on the same boxes
    and flips, up to the uint8 rounding of the result (one level)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), generator=g, dtype=torch.uint8)
    key = CropKey(3, 1)
    got = crop_batch(images, key, 5, 56)
    same = key.generator("batch", 5)
    boxes, flips = draw_crop_boxes(16, 32, 32, same), draw_flip(16, same)
    for image, box, flip, out in zip(images, boxes, flips, got):
        ref = TF.resized_crop(image.float() / 255, *box.tolist(), [56, 56], antialias=False)
        ref = TF.horizontal_flip(ref) if flip else ref
        assert (out.float() - ref * 255).abs().max() <= 0.5 + 1e-3
    assert got.shape == (16, 3, 56, 56) and got.dtype == torch.uint8
    assert torch.equal(got, crop_batch(images, key, 5, 56)) and not torch.equal(got, crop_batch(images, CropKey(3, 2), 5, 56))
    unflipped = crop_batch(images, CropKey(3, 1, flip=False), 5, 56)  # the same boxes, none mirrored
    assert torch.equal(unflipped[~flips], got[~flips]) and torch.equal(unflipped[flips], got[flips].flip(-1))


def test_boxes_keep_random_resized_crops_scale_and_ratio() -> None:
    """torchvision's get_params rules: area in [0.08, 1] of the image, aspect in [3/4, 4/3] (up
    to the rounding of the sides), inside the image; flips about half."""
    g = torch.Generator().manual_seed(1)
    boxes = draw_crop_boxes(4000, 375, 500, g)
    top, left, h, w = boxes.double().unbind(1)
    area = h * w / (375 * 500)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 375).all() and (left + w <= 500).all()
    assert area.min() >= 0.08 - 0.01 and area.max() <= 1.0
    assert ((w / h) >= 0.74).all() and ((w / h) <= 1.35).all()
    assert 0.45 < draw_flip(4000, g).float().mean() < 0.55


def test_a_streamed_image_s_box_and_flip_are_the_batched_draws_at_n_1() -> None:
    """The per-image draw (Python floats, for the loader's workers) gives draw_crop_boxes' and
    draw_flip's very box and flip from the image's generator: ImageNet's shapes, any size, and
    slivers whose ten attempts all fail (the central fallback)."""
    rng = np.random.default_rng(0)
    shapes = [(375, 500), (500, 375), (768, 1024), (10, 400), (400, 12), (1, 1)]
    for index in range(1500):
        key = CropKey(int(rng.integers(4)), int(rng.integers(90)), bool(rng.random() < 0.8))
        height, width = shapes[index % len(shapes)] if index % 2 else (int(rng.integers(1, 2000)), int(rng.integers(1, 2000)))
        box, flip = draw_box_and_flip(key, index, height, width)
        g = key.generator(index)
        assert torch.equal(box, draw_crop_boxes(1, height, width, g)[0]), (key, index, height, width)
        assert flip == (bool(draw_flip(1, g)[0]) and key.flip)


def test_decoder_reads_jpegs_with_libjpeg_and_falls_back_for_odd_files(photo_folder: Path) -> None:
    for path in sorted(photo_folder.rglob("*.JPEG")):
        image = decode_image(str(path))
        with Image.open(path) as im:
            ref = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
        assert image.dtype == torch.uint8 and image.shape == ref.shape, path.name
        tolerance = 0 if path.name == "png.JPEG" else 8  # libjpeg-turbo vs PIL's libjpeg: IDCT rounding
        assert (image.float() - ref.float()).abs().mean() <= max(tolerance, 0) / 4 + 1e-9, path.name


def test_streamed_training_and_evaluation_crops_match_torchvision_v2(photo_folder: Path) -> None:
    """A folder under the imagenet recipe: a training item is v2's resized_crop (antialiased) of
    the decoded image on its drawn box, flipped as drawn; the same with persistent workers and on
    every epoch; evaluation is v2's resize(256-of-224) + center_crop."""
    from torchvision.datasets import ImageFolder

    from bench.data.dataset_registry import stream_transform

    folder = ImageFolder(str(photo_folder), transform=stream_transform(64))
    plain = StreamedImageSet(folder, torch.tensor(folder.targets), 2, 3, 64, "photos")
    data = with_recipe(plain, "imagenet")
    assert with_recipe(plain, "pad_crop") is plain
    idx = torch.arange(len(folder))
    key = CropKey(0, 4)
    inline = torch.cat([b for b, _, _ in data.batches(idx, 3, 0, key)])
    for i in idx.tolist():
        whole = decode_image(folder.samples[i][0])
        box, flip = draw_box_and_flip(key, i, whole.shape[1], whole.shape[2])
        ref = TF.resized_crop(whole, *box.tolist(), [64, 64], antialias=True)
        assert torch.equal(inline[i], TF.horizontal_flip(ref) if flip else ref)
    evaluated = torch.cat([b for b, _, _ in data.batches(idx, 3)])
    for i in idx.tolist():
        whole = decode_image(folder.samples[i][0])
        assert torch.equal(evaluated[i], TF.center_crop(TF.resize(whole, [73], antialias=True), [64, 64]))
        assert torch.equal(evaluated[i], eval_crop(whole, 64))
    pools = []
    for _ in range(2):  # one pool of workers, two passes
        assert torch.equal(torch.cat([b for b, _, _ in data.batches(idx, 3, 1, key)]), inline)
        pools.append(data._loaders[1, False][0]._iterator)  # 1 worker, decoding in the worker
    assert pools[0] is pools[1] is not None


def test_batches_decoded_in_the_main_process_are_the_workers_pixels(photo_folder: Path) -> None:
    """``decode_device`` (the GPU's batched decode; 'cpu' here): the workers send the files' bytes
    and boxes, the main process decodes each batch in one call and crops it. On the CPU that
    is the worker path's every pixel, training and evaluation, odd files (greyscale, CMYK, a PNG
    named .JPEG) included, with and without workers."""
    from torchvision.datasets import ImageFolder

    from bench.data.dataset_registry import stream_transform

    folder = ImageFolder(str(photo_folder), transform=stream_transform(64))
    plain = StreamedImageSet(folder, torch.tensor(folder.targets), 2, 3, 64, "photos")
    workers, main = with_recipe(plain, "imagenet"), with_recipe(plain, "imagenet", decode_device="cpu")
    assert workers.decode_device is None and main.decode_device == "cpu" and main.files is not None
    idx = torch.randperm(len(folder), generator=torch.Generator().manual_seed(0))
    replay = ReplayCrops(torch.tensor([[2, 3, 20, 30]] * len(idx)), torch.arange(len(idx)) % 2 == 0)  # a view bank's stored crops
    for crop in (CropKey(0, 4), CropKey(1, 0, flip=False), replay, None):
        want = [(b, t, i) for b, t, i in workers.batches(idx, 3, 0, crop)]
        for n in (0, 1):
            got = list(main.batches(idx, 3, n, crop))
            assert len(got) == len(want)
            for (image, target, index), (ref, ref_target, ref_index) in zip(got, want):
                assert torch.equal(image, ref) and torch.equal(target, ref_target) and torch.equal(index, ref_index)
                assert image.dtype == torch.uint8 and target.dtype == torch.int64


def test_pooled_splits_keep_the_recipe(photo_folder: Path) -> None:
    """resplit_4_1_1 pools train and test (splits.concat): the pool crops as its parts did."""
    from torchvision.datasets import ImageFolder

    from bench.data.dataset_registry import stream_transform
    from bench.data.splits import concat

    folder = ImageFolder(str(photo_folder), transform=stream_transform(64))
    plain = StreamedImageSet(folder, torch.tensor(folder.targets), 2, 3, 64, "photos")
    for device in (None, "cpu"):
        part = with_recipe(plain, "imagenet", decode_device=device)
        pool = concat(part, part)
        key, idx = CropKey(0, 1), torch.arange(len(folder))
        twice = torch.cat([b for b, _, _ in pool.batches(torch.cat([idx, idx + len(folder)]), 4, 0, key)])
        once = torch.cat([b for b, _, _ in part.batches(idx, 4, 0, key)])
        assert pool.decode_device == device and torch.equal(twice[: len(folder)], once)
        assert twice.shape == (2 * len(folder), 3, 64, 64)


def test_recipe_default_is_pad_crop_and_a_bank_takes_imagenet_but_not_colour() -> None:
    base = dict(stage="s", method="supervised", arch="menghani_mlp", dataset="digits")
    assert CellConfig(**base).recipe == "pad_crop"
    assert CellConfig(**base, recipe="imagenet", augment=("crop", "flip"), teacher_targets="bank").recipe == "imagenet"
    with pytest.raises(ValidationError, match="replays crop and flip only"):
        CellConfig(**base, recipe="imagenet", augment=("crop", "color"), teacher_targets="bank")


def test_an_in_memory_cell_trains_on_the_imagenet_recipe(tmp_path: Path) -> None:
    """digits upsampled to 24 px under the recipe: its crops differ from pad-crop's, the cell
    runs and is reproducible."""
    matrix = {"name": "rrc", "defaults": {"dataset": "digits", "image_size": 24, "epochs": 1, "batch_size": 64,
                                          "augment": ["crop", "flip"], "arch": "menghani_mlp"},
              "stages": {"train": {"method": "supervised", "axes": {"recipe": ["pad_crop", "imagenet"]}}}}
    for run in ("a", "b"):
        assert main(["run", str(write_matrix(tmp_path, matrix)), "--results", str(tmp_path / run)]) == 0
    losses = {run: sorted(json.loads(p.read_text())[-1]["train_loss"] for p in (tmp_path / run).rglob("metrics.json"))
              for run in ("a", "b")}
    assert losses["a"] == losses["b"] and len(losses["a"]) == 2 and losses["a"][0] != losses["a"][1]


def test_in_memory_set_crops_from_native_images() -> None:
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    data = TensorImageSet(images, torch.arange(8), 8, "x").resized(224)
    got = next(data.batches(torch.arange(8), 8, crop=CropKey(0, 0)))[0]
    assert got.shape == (8, 3, 224, 224) and torch.equal(got, crop_batch(images, CropKey(0, 0), 0, 224))
