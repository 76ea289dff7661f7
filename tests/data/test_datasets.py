"""The dataset registry: real small data (digits, Debian's Fashion-MNIST), IDX files, fake layouts."""
from __future__ import annotations

import gzip
import pickle
import struct
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from bench.data import dataset_registry, in_memory_sets, torchvision_sets
from bench.data import datasets as ds
from bench.data.dataset_registry import DATASETS
from bench.data.datasets import dataset_names, load_dataset, prefetch_dataset
from bench.data.image_folders import register_image_folder
from bench.data.idx import parse_idx, read_idx, write_idx
from bench.data.images import StreamedImageSet, TensorImageSet
from bench.errors import BenchError, DataNotFoundError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """No test may reach the network, nor see a developer's real data root or earlier cache entries."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args!r}")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", refuse)
    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", refuse)
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", refuse)
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "env-root"))
    ds.clear_cache()
    yield
    ds.clear_cache()


def _write_png(path: Path, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"RGB": (3,), "L": ()}[mode]
    pixels = rng.integers(0, 256, size=(size[1], size[0], *channels), dtype=np.uint8)
    Image.fromarray(pixels, mode=mode).save(path)


# --------------------------------------------------------------------------- registry


def test_registry_lists_the_datasets_and_rejects_unknown_names(tmp_path: Path) -> None:
    names = dataset_names()
    for expected in ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "caltech256", "flowers102",
                     "dtd", "food101", "oxford_pets", "imagenet", "openimages"):
        assert expected in names
    with pytest.raises(BenchError, match="unknown dataset 'no_such_set'.*digits"):
        load_dataset("no_such_set", "train", tmp_path)
    with pytest.raises(BenchError, match="unknown dataset"):
        prefetch_dataset("no_such_set", tmp_path)
    with pytest.raises(BenchError, match="unknown split 'val'"):
        load_dataset("digits", "val", tmp_path)
    with pytest.raises(BenchError, match="image_size"):
        load_dataset("digits", "train", tmp_path, image_size=0)


# --------------------------------------------------------------------------- digits


def test_digits_split_shapes_and_determinism(tmp_path: Path) -> None:
    train = load_dataset("digits", "train", tmp_path)
    test = load_dataset("digits", "test", tmp_path)
    assert isinstance(train, TensorImageSet)
    assert (len(train), len(test)) == (1347, 450)
    assert train.images.shape == (1347, 1, 8, 8) and train.images.dtype == torch.uint8
    assert train.targets.dtype == torch.int64
    assert train.num_classes == test.num_classes == 10 and train.channels == 1 and train.size == 8
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    # Stratified: every class in both splits, in about the overall 3:1 ratio.
    train_counts, test_counts = train.targets.bincount(minlength=10), test.targets.bincount(minlength=10)
    assert (test_counts >= 40).all() and ((train_counts.float() / test_counts.float() - 3).abs() < 0.2).all()

    # Disjoint and complete: the split indices partition the 1797 sklearn images, which the sets hold.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train_idx = dataset_registry.stratified_split(bunch.target, 0.25, "train")
    test_idx = dataset_registry.stratified_split(bunch.target, 0.25, "test")
    assert not set(train_idx.tolist()) & set(test_idx.tolist())
    assert sorted(train_idx.tolist() + test_idx.tolist()) == list(range(1797))
    full = torch.from_numpy(np.rint(bunch.images * 255 / 16).astype(np.uint8)).unsqueeze(1)
    assert torch.equal(test.images, full[torch.from_numpy(test_idx)])
    assert torch.equal(train.targets, torch.from_numpy(bunch.target[train_idx]))

    # Deterministic: a fresh load (cache cleared) gives the same split, and the cache shares objects.
    assert load_dataset("digits", "train", tmp_path) is train
    ds.clear_cache()
    again = load_dataset("digits", "test", tmp_path)
    assert again is not test
    assert torch.equal(again.images, test.images) and torch.equal(again.targets, test.targets)


def test_digits_resized_to_28(tmp_path: Path) -> None:
    small = load_dataset("digits", "test", tmp_path)
    big = load_dataset("digits", "test", tmp_path, image_size=28)
    assert big.images.shape == (450, 1, 8, 8) and big.size == 28  # native in memory, 28 px per batch
    assert torch.equal(big.targets, small.targets)
    served = next(big.batches(torch.arange(450), 450))[0]
    assert served.shape == (450, 1, 28, 28) and served.dtype == torch.uint8
    # Bilinear upsampling keeps the mean brightness of each image roughly.
    diff = (served.float().mean((1, 2, 3)) - small.images.float().mean((1, 2, 3))).abs()
    assert float(diff.max()) < 12
    images, targets, idx = next(big.batches(torch.arange(5, 15), batch_size=4))
    assert images.shape == (4, 1, 28, 28) and torch.equal(idx, torch.arange(5, 9)) and torch.equal(targets, big.targets[5:9])


# --------------------------------------------------------------------------- IDX files and (Fashion-)MNIST


def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    """IDX written by hand (independent of bench.data.idx.write_idx)."""
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("compressed", [False, True])
def test_idx_round_trip(tmp_path: Path, compressed: bool) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 7
    labels = np.array([3, 9], dtype=np.uint8)
    shorts = np.array([[1, -2], [300, -32768]], dtype=np.int16)
    suffix = ".gz" if compressed else ""
    for name, array, code in (("img", images, 0x08), ("lab", labels, 0x08), ("short", shorts, 0x0B)):
        raw = _idx_bytes(array, code)
        path = tmp_path / f"{name}-idx{suffix}"
        path.write_bytes(gzip.compress(raw) if compressed else raw)
        got = read_idx(path)
        assert got.dtype == array.dtype.newbyteorder("=") and got.shape == array.shape
        assert np.array_equal(got, array)
        # Our writer produces the same bytes (after gunzip) and reads back.
        again = write_idx(tmp_path / f"{name}-again{suffix}", array)
        data = again.read_bytes()
        assert (gzip.decompress(data) if compressed else data) == raw
        assert np.array_equal(read_idx(again), array)


def test_idx_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="bad magic"):
        parse_idx(b"\x01\x00\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(BenchError, match="size mismatch"):
        parse_idx(_idx_bytes(np.zeros((2, 2), np.uint8), 0x08)[:-1], "short.idx")
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02")[:-6])
    with pytest.raises(BenchError, match="bad.gz"):
        read_idx(bad)


def test_mnist_found_in_our_layout_plain_and_gz(tmp_path: Path) -> None:
    """An MNIST-style set is read from <root>/mnist with plain and gzipped files mixed."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 9, 9, 5], dtype=np.uint8)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    write_idx(folder / "t10k-labels-idx1-ubyte", labels)
    test = load_dataset("mnist", "test", tmp_path)
    assert test.images.shape == (6, 1, 28, 28) and torch.equal(test.images[:, 0], torch.from_numpy(images))
    assert test.targets.tolist() == [0, 1, 2, 9, 9, 5] and test.num_classes == 10
    # The train files are not there: the error lists both places searched.
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("mnist", "train", tmp_path)
    message = str(err.value)
    assert "'mnist'" in message and str(folder) in message and str(tmp_path / "MNIST" / "raw") in message
    assert "\n" not in message


def test_fashion_mnist_from_debian_package(tmp_path: Path) -> None:
    """dataset-fashion-mnist is installed here and in CI; an empty root falls through to it."""
    assert (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file(), "apt-get install dataset-fashion-mnist"
    train = load_dataset("fashion_mnist", "train", tmp_path)
    test = load_dataset("fashion_mnist", "test", tmp_path)
    assert isinstance(train, TensorImageSet)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.num_classes == test.num_classes == 10
    assert train.targets.bincount().tolist() == [6000] * 10
    assert test.targets.bincount().tolist() == [1000] * 10
    # Well-known first labels of the official files (ankle boot, t-shirt) and real pixel data.
    assert train.targets[:2].tolist() == [9, 0] and test.targets[:2].tolist() == [9, 2]
    assert 60 < float(train.images[:1000].float().mean()) < 90


def test_fashion_mnist_missing_message_mentions_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = in_memory_sets._IdxSpec("fashion_mnist", "FashionMNIST", system_dirs=(tmp_path / "nowhere",),
                       extra_hint=", or `apt-get install dataset-fashion-mnist`")
    with pytest.raises(DataNotFoundError, match=r"apt-get install dataset-fashion-mnist") as err:
        spec.load("train", tmp_path / "root", None)
    assert str(tmp_path / "nowhere") in str(err.value) and str(tmp_path / "root" / "fashion_mnist") in str(err.value)


# --------------------------------------------------------------------------- torchvision-backed sets


def test_missing_cifar10_raises_without_downloading(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("cifar10", "train", root)
    message = str(err.value)
    assert "'cifar10'" in message and str(root / "cifar10") in message and "bench prefetch" in message
    assert "torchvision.datasets.CIFAR10" in message and "\n" not in message
    assert list(root.iterdir()) == []  # nothing created, nothing downloaded

    # A corrupt download (folder present, files missing) is translated too, and the env var is the default root.
    (root / "cifar10" / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="cifar10.*torchvision: Dataset not found"):
        load_dataset("cifar10", "test", root)
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "env-root" / "cifar10")):
        load_dataset("cifar10", "test")


def test_cifar10_layout_loads_in_memory_as_nchw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake cifar-10-batches-py (torchvision's pickle layout) becomes uint8 NCHW in memory."""
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)

    def batch(name: str, n: int, first_label: int) -> np.ndarray:
        rows = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)  # CIFAR rows are CHW planes
        labels = [(first_label + i) % 10 for i in range(n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows, "labels": labels}, f)
        return rows

    rows = [batch(f"data_batch_{i}", 2, i) for i in range(1, 6)]
    test_rows = batch("test_batch", 3, 7)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    # Our fake files have other MD5 sums than the real ones torchvision checks.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)

    train = load_dataset("cifar10", "train", tmp_path)
    test = load_dataset("cifar10", "test", tmp_path)
    assert train.images.shape == (10, 3, 32, 32) and test.images.shape == (3, 3, 32, 32)
    assert train.images.is_contiguous() and train.num_classes == 10
    assert torch.equal(train.images.reshape(10, -1), torch.from_numpy(np.concatenate(rows)))
    assert torch.equal(test.images.reshape(3, -1), torch.from_numpy(test_rows))
    assert test.targets.tolist() == [7, 8, 9]
    small = load_dataset("cifar10", "test", tmp_path, image_size=16)
    assert small.images.shape == (3, 3, 32, 32) and small.size == 16  # kept native, resized per batch
    assert next(small.batches(torch.arange(3), 3))[0].shape == (3, 3, 16, 16)


def test_caltech256_fixed_split_streams_rgb(tmp_path: Path) -> None:
    """A fake Caltech256 tree: stratified fixed split, grayscale files come out as RGB."""
    cats = tmp_path / "caltech256" / "caltech256" / "256_ObjectCategories"
    for c, cat in enumerate(["001.ak47", "002.bat", "003.cake"]):
        for i in range(1, 6):
            mode = "L" if i == 2 else "RGB"
            _write_png(cats / cat / f"{c + 1:03d}_{i:04d}.jpg", (20 + i, 14), mode=mode, seed=10 * c + i)
    train = load_dataset("caltech256", "train", tmp_path, image_size=12)
    test = load_dataset("caltech256", "test", tmp_path, image_size=12)
    assert isinstance(train, StreamedImageSet)
    assert (len(train), len(test)) == (12, 3)
    assert train.num_classes == 3 and train.size == 12 and train.channels == 3
    assert sorted(test.targets.tolist()) == [0, 1, 2] and train.targets.bincount().tolist() == [4, 4, 4]
    assert set(train.dataset.indices).isdisjoint(test.dataset.indices)
    images, targets, idx = next(test.batches(torch.arange(3), batch_size=3))
    assert images.shape == (3, 3, 12, 12) and images.dtype == torch.uint8
    assert torch.equal(targets, test.targets)
    again = torchvision_sets._VisionSpec("caltech256", "Caltech256", "caltech256/256_ObjectCategories",
                           {"train": ({},), "test": ({},)}, test_size=0.2).build("test", tmp_path, None)
    assert again.indices == test.dataset.indices  # deterministic


# --------------------------------------------------------------------------- image folders


def test_openimages_pool_from_nested_pngs(tmp_path: Path) -> None:
    pool_dir = tmp_path / "openimages"
    _write_png(pool_dir / "a.png", (40, 30))
    _write_png(pool_dir / "x" / "b.png", (17, 33), mode="L", seed=1)
    _write_png(pool_dir / "x" / "y" / "z" / "c.PNG", (64, 64), seed=2)
    (pool_dir / "x" / "notes.txt").write_text("not an image")
    pool = load_dataset("openimages", "train", tmp_path, image_size=16)
    assert isinstance(pool, StreamedImageSet)
    assert len(pool) == 3 and pool.num_classes == 0 and pool.targets.tolist() == [-1, -1, -1]
    batches = list(pool.batches(torch.tensor([2, 0, 1]), batch_size=2))
    assert [b[0].shape for b in batches] == [(2, 3, 16, 16), (1, 3, 16, 16)]
    assert all(b[0].dtype == torch.uint8 for b in batches)
    assert [b[2].tolist() for b in batches] == [[2, 0], [1]]
    assert torch.cat([b[1] for b in batches]).tolist() == [-1, -1, -1]
    # Workers get a picklable dataset and return the same pixels.
    (w_images, _, _), = pool.batches(torch.arange(3), batch_size=3, workers=1)
    (images, _, _), = pool.batches(torch.arange(3), batch_size=3)
    assert torch.equal(w_images, images)
    # Default size for streamed sets.
    assert load_dataset("openimages", "train", tmp_path).size == 224
    with pytest.raises(BenchError, match="unlabeled pool"):
        load_dataset("openimages", "test", tmp_path)
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "elsewhere" / "openimages")):
        load_dataset("openimages", "train", tmp_path / "elsewhere")


def test_labeled_image_folder_and_imagenet_layout(tmp_path: Path) -> None:
    name = f"folder_{uuid.uuid4().hex[:8]}"
    register_image_folder(name, splits={"train": "train", "test": "test"})
    for split, n in (("train", 3), ("test", 1)):
        for cls in ("cat", "dog"):
            for i in range(n):
                _write_png(tmp_path / name / split / cls / f"{i}.png", (10, 12), seed=i)
    train = load_dataset(name, "train", tmp_path, image_size=8)
    assert len(train) == 6 and train.num_classes == 2 and train.targets.tolist() == [0, 0, 0, 1, 1, 1]
    images, targets, _ = next(train.batches(torch.arange(6), batch_size=6))
    assert images.shape == (6, 3, 8, 8) and torch.equal(targets, train.targets)
    assert len(load_dataset(name, "test", tmp_path, image_size=8)) == 2

    # imagenet: test is <root>/imagenet/val.
    for cls in ("n01", "n02"):
        _write_png(tmp_path / "imagenet" / "val" / cls / "v.png", (9, 9))
    val = load_dataset("imagenet", "test", tmp_path, image_size=8)
    assert len(val) == 2 and val.num_classes == 2
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "imagenet" / "train")):
        load_dataset("imagenet", "train", tmp_path)


def test_prefetch_refuses_datasets_that_cannot_be_downloaded(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="imagenet.*cannot be downloaded.*imagenet/train"):
        prefetch_dataset("imagenet", tmp_path)
    with pytest.raises(BenchError, match="openimages.*cannot be downloaded"):
        prefetch_dataset("openimages", tmp_path)
    # digits ships with scikit-learn: nothing to do, and prefetch says where it is.
    import sklearn.datasets

    bundled = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    assert prefetch_dataset("digits", tmp_path) == {"train": bundled, "test": bundled}
    assert list(tmp_path.iterdir()) == []
    names = set(DATASETS.names())
    assert names == set(dataset_registry.PREFETCHERS.names()) == set(dataset_registry.LOCATORS.names()) == set(dataset_registry.DATASET_SPLITS.names())
    assert ds.dataset_splits("openimages") == ("train",) and ds.dataset_splits("cifar10") == ("train", "test")


def _nothing(root: Path) -> None:
    """No files at all."""


def _marker_only(root: Path) -> None:
    """A half-extracted CIFAR-10: its folder, none of its batches."""
    (root / "cifar10" / "cifar-10-batches-py").mkdir(parents=True)


def _class_folder_without_images(root: Path) -> None:
    (root / "imagenet" / "train" / "n01").mkdir(parents=True)
    (root / "imagenet" / "train" / "n01" / "readme.txt").write_text("no image")


def _pool_without_images(root: Path) -> None:
    (root / "openimages" / "x").mkdir(parents=True)
    (root / "openimages" / "x" / "notes.txt").write_text("no image")


@pytest.mark.parametrize(("name", "split", "make"), [
    ("mnist", "train", _nothing),
    ("cifar10", "test", _marker_only),
    ("caltech256", "train", _nothing),
    ("imagenet", "train", _class_folder_without_images),
    ("openimages", "train", _pool_without_images),
])
def test_locate_fails_exactly_where_load_fails(tmp_path: Path, name: str, split: str, make: Callable[[Path], None]) -> None:
    """`bench prefetch` decides "missing" by the loader's own search: same error, same places."""
    make(tmp_path)
    with pytest.raises(DataNotFoundError) as by_load:
        load_dataset(name, split, tmp_path, image_size=8)
    with pytest.raises(dataset_registry.MissingData) as by_locate:
        ds.locate_dataset(name, tmp_path, [split])
    assert str(by_locate.value) == str(by_load.value)
    assert by_locate.value.places and all(str(place) in str(by_load.value) for place in by_locate.value.places)


def test_locate_finds_what_load_reads(tmp_path: Path) -> None:
    _write_png(tmp_path / "openimages" / "deep" / "a.png", (9, 9))
    assert ds.locate_dataset("openimages", tmp_path) == {"train": tmp_path / "openimages"}
    assert len(load_dataset("openimages", "train", tmp_path, image_size=8)) == 1
    assert ds.locate_dataset("fashion_mnist", tmp_path) == {"train": DEBIAN_FASHION, "test": DEBIAN_FASHION}
    with pytest.raises(BenchError, match="only a 'train' split"):  # as load_dataset says, not "not found"
        ds.locate_dataset("openimages", tmp_path, ["test"])


def test_corrupt_gzip_idx_is_a_one_line_error(tmp_path: Path) -> None:
    import gzip

    from bench.data.idx import read_idx

    path = tmp_path / "broken-idx1-ubyte.gz"
    data = gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]))
    path.write_bytes(data[:12] + bytes(b ^ 0xFF for b in data[12:]))  # a valid header, a garbled deflate stream
    with pytest.raises(BenchError, match="corrupt gzip file"):
        read_idx(path)
