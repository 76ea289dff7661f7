"""Format-faithful stand-ins for the paper matrices' data and weights, written by tests only.

Each dataset is written in the on-disk layout its loader reads in the wild: CIFAR-10/100 as
torchvision's pickles, MNIST as IDX files, ImageNet / OpenImages / tf_flowers / cats_vs_dogs as
JPEG folders, Caltech-256, DTD and Food-101 in torchvision's layouts (with their label files),
cut from scikit-learn's sample photos at realistic sizes (333-800 px). Pretrained timm weights
are planted, randomly initialised, where ``pretrained: true`` looks offline (a Hugging Face hub
cache), and nguyen2021's converted SimCLR encoder where its matrix names it. Few images per
class: enough for every split, label fraction and per-class count of the four matrices at
``--smoke`` scale, not for learning anything.

torchvision checks the CIFAR files' md5 sums; :func:`cifar_md5_lists` gives the sums of the
files written here, for a test to put in place of the published ones (the package never does).
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


def _cut(photos: list[np.ndarray], rng: np.random.Generator, width: int, height: int) -> Any:
    """A crop of a sample photo (427x640) resized to ``width`` x ``height``: a JPEG-like natural image."""
    from PIL import Image

    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    ch, cw = int(rng.integers(h // 3, h)), int(rng.integers(w // 3, w))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return Image.fromarray(photo[top:top + ch, left:left + cw]).resize((width, height))


def _jpeg(image: Any, path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=int(rng.integers(75, 96)))


def write_jpegs(folder: Path, classes: list[str], per_class: int, seed: int, suffix: str = ".jpg",
                caltech: bool = False) -> dict[str, list[str]]:
    """``per_class`` JPEGs of 333-800 px per class folder; returns class -> file stems (Caltech-256's
    ``NNN_XXXX`` from 1 with ``caltech``, as torchvision's reader rebuilds them)."""
    rng = np.random.default_rng(seed)
    photos = _photos()
    names: dict[str, list[str]] = {}
    for c, cls in enumerate(classes):
        names[cls] = []
        for i in range(per_class):
            stem = f"{cls[:3]}_{i + 1:04d}" if caltech else f"{cls}_{i:04d}"
            size = (int(rng.integers(333, 801)), int(rng.integers(333, 601)))
            _jpeg(_cut(photos, rng, *size), folder / cls / f"{stem}{suffix}", rng)
            names[cls].append(stem)
    return names


IMAGENET_LIKE_SIZES = ((500, 375), (375, 500), (500, 333), (1024, 768))  # (width, height): ImageNet's common shapes


def write_imagenet_like(folder: Path, classes: int = 8, per_class: int = 48, seed: int = 24) -> list[Path]:
    """An ImageFolder of ``classes`` x ``per_class`` JPEGs of ImageNet's sizes (500x375, its
    portrait and 500x333, a quarter 1024x768: the speed suite's decode-bound stand-in), each a cut
    of a sample photo at JPEG quality 75-95. Returns the files, sorted as ImageFolder lists them."""
    rng = np.random.default_rng(seed)
    photos = _photos()
    files = []
    for c in range(classes):
        for i in range(per_class):
            path = folder / f"n{c:08d}" / f"n{c:08d}_{i}.JPEG"
            _jpeg(_cut(photos, rng, *IMAGENET_LIKE_SIZES[int(rng.integers(len(IMAGENET_LIKE_SIZES)))]), path, rng)
            files.append(path)
    return sorted(files)


def _small_images(n: int, side: int, channels: int, seed: int) -> np.ndarray:
    """``n`` natural images of ``side`` px (crops of the sample photos), uint8 NHWC."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = _photos()
    out = np.stack([np.asarray(_cut(photos, rng, side, side)) for _ in range(n)])
    if channels == 1:
        out = np.asarray([np.asarray(Image.fromarray(x).convert("L")) for x in out])[..., None]
    return out


def write_cifar(root: Path, name: str, per_class_train: int = 30, per_class_test: int = 10) -> None:
    """CIFAR-10 (5 data batches, test batch, batches.meta) or CIFAR-100 (train, test, meta)
    pickles, as torchvision reads them: rows of 3,072 uint8 (R, G, B planes) and label lists."""
    classes = 10 if name == "cifar10" else 100
    folder = root / name / CIFAR_FOLDERS[name]
    folder.mkdir(parents=True, exist_ok=True)

    def part(per_class: int, seed: int) -> tuple[np.ndarray, list[int]]:
        images = _small_images(per_class * classes, 32, 3, seed)
        labels = [i % classes for i in range(len(images))]
        return images.transpose(0, 3, 1, 2).reshape(len(images), -1), labels

    (train, train_labels), (test, test_labels) = part(per_class_train, 1), part(per_class_test, 2)
    key = "labels" if name == "cifar10" else "fine_labels"
    if name == "cifar10":
        for i, chunk in enumerate(np.array_split(np.arange(len(train)), 5), 1):
            _pickle(folder / f"data_batch_{i}", {"data": train[chunk], key: [train_labels[j] for j in chunk]})
        _pickle(folder / "test_batch", {"data": test, key: test_labels})
        _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(classes)]})
    else:
        _pickle(folder / "train", {"data": train, key: train_labels, "coarse_labels": [0] * len(train)})
        _pickle(folder / "test", {"data": test, key: test_labels, "coarse_labels": [0] * len(test)})
        _pickle(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(classes)]})


def _pickle(path: Path, value: dict[str, Any]) -> None:
    with open(path, "wb") as f:
        pickle.dump(value, f)


def cifar_md5_lists(root: Path, name: str) -> dict[str, Any]:
    """torchvision's ``train_list``, ``test_list`` and ``meta`` of CIFAR10/CIFAR100 with the md5
    sums of the files written by :func:`write_cifar` (monkeypatch them onto the class)."""
    import torchvision.datasets as tvd

    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    folder = root / name / CIFAR_FOLDERS[name]

    def md5(file: str) -> str:
        return hashlib.md5((folder / file).read_bytes()).hexdigest()

    return {"train_list": [[f, md5(f)] for f, _ in cls.train_list], "test_list": [[f, md5(f)] for f, _ in cls.test_list],
            "meta": {**cls.meta, "md5": md5(cls.meta["filename"])}}


def write_idx(folder: Path, per_class_train: int = 30, per_class_test: int = 10) -> None:
    """MNIST's four IDX files (big-endian magic, dimensions, uint8 data), digits-like 28x28 greys."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, per_class, seed in (("train", per_class_train, 3), ("t10k", per_class_test, 4)):
        images = _small_images(per_class * 10, 28, 1, seed)[..., 0]
        labels = np.arange(len(images), dtype=np.uint8) % 10
        (folder / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, len(images), 28, 28) + images.tobytes())
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, len(labels)) + labels.tobytes())


def write_image_folders(root: Path) -> None:
    """Every JPEG-folder dataset of the paper matrices, in its loader's layout."""
    for name, splits, classes, per_class in (
            ("imagenet", {"train": 12, "val": 4}, [f"n{i:08d}" for i in range(6)], None),
            ("tf_flowers", {"train": 12, "test": 4}, ["daisy", "dandelion", "roses", "sunflowers", "tulips"], None),
            ("cats_vs_dogs", {"train": 16, "test": 6}, ["Cat", "Dog"], None)):
        for split, count in splits.items():
            write_jpegs(root / name / split, classes, count, seed=zlib.crc32(f"{name}/{split}".encode()),
                        suffix=".JPEG" if name == "imagenet" else ".jpg")
    write_jpegs(root / "openimages" / "train" / "0", ["a", "b"], 12, seed=5)  # an unlabeled pool, any nesting
    write_jpegs(root / "caltech256" / "caltech256" / "256_ObjectCategories", [f"{i:03d}.class{i}" for i in range(1, 7)],
                12, seed=6, caltech=True)
    dtd = root / "dtd" / "dtd" / "dtd"
    names = write_jpegs(dtd / "images", ["banded", "braided", "bubbly", "cracked"], 12, seed=7)
    (dtd / "labels").mkdir(parents=True, exist_ok=True)
    for split, part in (("train", slice(0, 6)), ("val", slice(6, 8)), ("test", slice(8, 12))):
        lines = [f"{cls}/{stem}.jpg" for cls, stems in names.items() for stem in stems[part]]
        (dtd / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")
    food = root / "food101" / "food-101"
    names = write_jpegs(food / "images", ["apple_pie", "baklava", "churros", "donuts"], 12, seed=8)
    (food / "meta").mkdir(parents=True, exist_ok=True)
    for split, part in (("train", slice(0, 9)), ("test", slice(9, 12))):
        (food / "meta" / f"{split}.json").write_text(json.dumps({cls: [f"{cls}/{s}" for s in stems[part]] for cls, stems in names.items()}))


def write_paper_data(root: Path) -> Path:
    """Every dataset the four paper matrices read (Fashion-MNIST comes from Debian's package)."""
    for name in CIFAR_FOLDERS:
        write_cifar(root, name, *((30, 10) if name == "cifar10" else (3, 1)))
    write_idx(root / "mnist")
    write_image_folders(root)
    return root


def plant_timm_weights(hub: Path, archs: list[str]) -> None:
    """Randomly initialised weights of each timm architecture in a Hugging Face hub cache, under
    the repo and file name timm's pretrained config resolves to (what ``pretrained: true`` reads)."""
    import timm
    from safetensors.torch import save_file

    from bench.models.weights import _weight_candidates

    commit = "0123456789abcdef0123456789abcdef01234567"
    for arch in archs:
        candidate = next(c for c in _weight_candidates(arch) if c.where == "hf")
        folder = hub / f"models--{candidate.ref.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text(commit)
        snapshot = folder / "snapshots" / commit
        snapshot.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in timm.create_model(arch, pretrained=False).state_dict().items()}
        save_file(state, str(snapshot / candidate.filename))


def write_simclr_encoder(path: Path) -> None:
    """A converted SimCLR ResNet-50 1x as nguyen2021 reads it: a state dict of timm's resnet50
    backbone (random weights here), saved with torch.save."""
    import timm
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(timm.create_model("resnet50", pretrained=False, num_classes=0).state_dict(), buffer)
    path.write_bytes(buffer.getvalue())
