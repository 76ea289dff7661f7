"""`bench prefetch` on a hostile machine: offline, data already installed, downloads that break.

Every test runs behind a network guard: any attempt to resolve a host, open a socket, or fetch a
URL through urllib, torch.hub or huggingface_hub is recorded and fails as an offline login node
would, so "downloads nothing" is asserted, not assumed.
"""
from __future__ import annotations

import errno
import socket
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn.datasets
import torch.hub
import torchvision

from bench.cli import main
from bench.data import datasets as ds
from bench.data.datasets import load_dataset, locate_dataset, prefetch_dataset
from bench.data.idx import write_idx
from bench.errors import BenchError, DataNotFoundError
from tests.conftest import ROOT, write_matrix

DEMO = ROOT / "matrices" / "demo.yaml"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
SKLEARN_DIGITS = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
REFUSED = "network disabled by the test"
HINT = "download it on a machine with internet with `bench prefetch MATRIX`, or"


def _summary(datasets: int, weights: int, found: int, downloaded: int) -> str:
    return (f"prefetch: {datasets} dataset(s) and {weights} weight file(s) ready ({found} found, {downloaded} downloaded); "
            "compute nodes can now run with HF_HUB_OFFLINE=1")


@dataclass
class NetworkGuard:
    """Which network entry points were called (each one raised)."""

    attempts: list[str] = field(default_factory=list)

    def refuse(self, via: str, error: BaseException):
        def refused(*args: Any, **kwargs: Any) -> Any:
            self.attempts.append(via)
            raise error

        return refused


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> NetworkGuard:
    """No network, loudly; and no real data root or weight cache of the developer."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    guard = NetworkGuard()
    offline = urllib.error.URLError(REFUSED)
    unreachable = OSError(errno.ENETUNREACH, REFUSED)
    for target, name, error in (
        (urllib.request, "urlopen", offline),
        (torch.hub, "urlopen", offline),  # torch.hub binds its own name
        (socket, "getaddrinfo", unreachable),
        (socket, "create_connection", unreachable),
        (socket.socket, "connect", unreachable),
        (socket.socket, "connect_ex", unreachable),
    ):
        monkeypatch.setattr(target, name, guard.refuse(f"{target.__name__}.{name}", error))
    monkeypatch.setattr("huggingface_hub.hf_hub_download",
                        guard.refuse("huggingface_hub.hf_hub_download", LocalEntryNotFoundError(REFUSED)))
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "bench-data"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    ds.clear_cache()
    yield guard
    ds.clear_cache()


def _prefetch(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], list[str]]:
    """(exit code, stdout lines, stderr lines) of `bench prefetch ARGS`, run in-process."""
    code = main(["prefetch", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out.splitlines(), err.splitlines()


def _matrix(folder: Path, dataset: str, **students: str) -> Path:
    """A teacher on ``dataset`` and one blind student per ``stage=unlabeled pool``."""
    stages: dict[str, Any] = {"t": {"method": "supervised", "axes": {"arch": ["menghani_mlp"]}}}
    for stage, pool in students.items():
        stages[stage] = {"method": "blind", "needs": {"teacher": "t"}, "set": {"unlabeled": pool},
                         "axes": {"arch": ["menghani_mlp"]}}
    return write_matrix(folder, {"name": "p", "defaults": {"dataset": dataset, "epochs": 1}, "stages": stages})


def test_the_network_guard_refuses_and_records(network: NetworkGuard) -> None:
    with pytest.raises(urllib.error.URLError, match=REFUSED):
        urllib.request.urlopen("https://example.org")
    with pytest.raises(OSError, match=REFUSED):
        socket.create_connection(("example.org", 443))
    assert network.attempts == ["urllib.request.urlopen", "socket.create_connection"]


# --------------------------------------------------------------------------- already there


def test_demo_finds_digits_and_debian_fashion_mnist_and_downloads_nothing(
        network: NetworkGuard, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file(), "apt-get install dataset-fashion-mnist"
    code, out, err = _prefetch(capsys, str(DEMO))
    assert code == 0, err
    assert out == [
        f"dataset digits: found at {SKLEARN_DIGITS}",
        f"dataset fashion_mnist: found at {DEBIAN_FASHION}",
        _summary(2, 0, 2, 0),
    ]
    assert err == []
    assert network.attempts == []
    assert not (tmp_path / "bench-data").exists()  # not even an empty download folder


def test_splits_found_in_different_places_are_each_named(
        network: NetworkGuard, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Our own train files win over Debian's, Debian's test files fill in: exactly what load_dataset reads."""
    root = tmp_path / "root"
    (root / "fashion_mnist").mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    write_idx(root / "fashion_mnist" / "train-images-idx3-ubyte.gz", images)
    write_idx(root / "fashion_mnist" / "train-labels-idx1-ubyte.gz", np.arange(6, dtype=np.uint8))
    assert locate_dataset("fashion_mnist", root) == {"train": root / "fashion_mnist", "test": DEBIAN_FASHION}
    assert len(load_dataset("fashion_mnist", "train", root)) == 6
    assert len(load_dataset("fashion_mnist", "test", root)) == 10000

    code, out, err = _prefetch(capsys, str(_matrix(tmp_path, "fashion_mnist")), "--data-root", str(root))
    assert code == 0, err
    assert out[0] == f"dataset fashion_mnist: found at {root / 'fashion_mnist'} (train), {DEBIAN_FASHION} (test)"
    assert network.attempts == []


def test_cached_weights_are_skipped(network: NetworkGuard, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    snapshot = tmp_path / "hf" / "hub" / "models--timm--resnet18.a1_in1k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"weights")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    matrix = write_matrix(tmp_path, {"name": "w", "defaults": {"dataset": "digits", "epochs": 1, "pretrained": True},
                                     "stages": {"t": {"method": "supervised", "axes": {"arch": ["resnet18"]}}}})
    code, out, err = _prefetch(capsys, str(matrix))
    assert code == 0, err
    assert out[1] == f"weights resnet18: found at {snapshot / 'model.safetensors'}"
    assert out[-1] == _summary(1, 1, 2, 0)
    assert network.attempts == []


# --------------------------------------------------------------------------- downloads that fail


def test_absent_dataset_offline_is_one_line_and_exit_2(
        network: NetworkGuard, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = _prefetch(capsys, str(_matrix(tmp_path, "cifar10")), "--data-root", str(empty))
    assert code == 2
    assert network.attempts  # it did try, and was refused
    naming = [line for line in err if "cifar10" in line]
    assert naming == [(f"bench: dataset cifar10: download failed (URLError: {REFUSED}); {HINT} "
                       f"put the files under {empty / 'cifar10'}")]
    assert err[-1] == "bench: prefetch: 1 of 1 failed (see above), 0 ready; fix those and run `bench prefetch` again"
    assert len(err) == 2 and not any("found at" in line or "downloaded to" in line for line in out)


def test_one_failure_does_not_stop_the_others(
        network: NetworkGuard, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """cifar10 and cifar100 fail, fashion_mnist (sorted after them) is still checked and found."""
    matrix = _matrix(tmp_path, "cifar10", s1="fashion_mnist", s2="cifar100")
    code, out, err = _prefetch(capsys, str(matrix), "--data-root", str(tmp_path / "empty"))
    assert code == 2
    assert [line.split(":")[1].strip() for line in err[:-1]] == ["dataset cifar10", "dataset cifar100"]
    assert all("download failed (URLError" in line for line in err[:-1])
    assert err[-1].startswith("bench: prefetch: 2 of 3 failed (see above), 1 ready")
    assert f"dataset fashion_mnist: found at {DEBIAN_FASHION}" in out


def test_missing_weights_fail_in_one_line_naming_the_architecture(
        network: NetworkGuard, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    matrix = write_matrix(tmp_path, {"name": "w", "defaults": {"dataset": "digits", "epochs": 1, "pretrained": True},
                                     "stages": {"t": {"method": "supervised", "axes": {"arch": ["resnet18"]}}}})
    code, out, err = _prefetch(capsys, str(matrix))
    assert code == 2
    assert out[0].startswith("dataset digits: found at")  # the dataset is still reported
    naming = [line for line in err if "resnet18" in line]
    assert len(naming) == 1 and naming[0].startswith("bench: weights for architecture resnet18: download failed (")
    assert "LocalEntryNotFoundError" in naming[0] and "HF_HUB_OFFLINE is set" in naming[0]  # conftest sets it
    assert f"set HF_HOME / TORCH_HOME to a cache that has them (looked for timm/resnet18.a1_in1k/model.safetensors in {tmp_path / 'hf' / 'hub'}" in naming[0]
    # The Hub failed for a reason other than a missing file: its second filename is not retried, the URL source is.
    assert network.attempts[0] == "huggingface_hub.hf_hub_download"
    assert network.attempts.count("huggingface_hub.hf_hub_download") == 1 and len(network.attempts) >= 2


@pytest.mark.parametrize(("error", "reason"), [
    (urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution")),
     "URLError: [Errno -3] Temporary failure in name resolution"),
    (urllib.error.HTTPError("https://www.cs.toronto.edu/x.tar.gz", 503, "Service Unavailable", {}, None),
     "HTTPError: HTTP Error 503: Service Unavailable"),
    (TimeoutError("timed out"), "TimeoutError: timed out"),  # socket.timeout
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
     "ConnectionResetError: [Errno 104] Connection reset by peer"),
    (OSError(errno.ENOSPC, "No space left on device"), "OSError: [Errno 28] No space left on device"),
    (RuntimeError("File not found or corrupted."), "RuntimeError: File not found or corrupted."),
    (tarfile.ReadError("unexpected end of data"), "ReadError: unexpected end of data"),
    (EOFError("Compressed file ended before the end-of-stream marker was reached"),
     "EOFError: Compressed file ended before the end-of-stream marker was reached"),
])
def test_every_kind_of_failed_download_is_one_line(
        network: NetworkGuard, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: BaseException, reason: str) -> None:
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", NetworkGuard().refuse("cifar", error))
    with pytest.raises(BenchError) as failure:
        prefetch_dataset("cifar10", tmp_path)
    assert str(failure.value) == (f"dataset cifar10: download failed ({reason}); {HINT} "
                                  f"put the files under {tmp_path / 'cifar10'}")


def test_a_bug_during_download_keeps_its_traceback(network: NetworkGuard, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    """Only download failures become a user message; a TypeError is ours to fix, not the user's."""
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive",
                        NetworkGuard().refuse("cifar", TypeError("a bug")))
    with pytest.raises(TypeError, match="a bug"):
        prefetch_dataset("cifar10", tmp_path)


# --------------------------------------------------------------------------- "found" means what `bench run` finds


def test_a_half_extracted_archive_is_not_found_so_it_is_downloaded_again(
        network: NetworkGuard, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The marker folder exists but the batches are gone: `bench run` would fail, so prefetch must not skip it."""
    (tmp_path / "cifar10" / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(DataNotFoundError) as by_run:
        load_dataset("cifar10", "train", tmp_path)
    with pytest.raises(DataNotFoundError) as by_prefetch:
        locate_dataset("cifar10", tmp_path)
    assert str(by_prefetch.value) == str(by_run.value)
    download = NetworkGuard()
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive",
                        download.refuse("cifar", urllib.error.URLError(REFUSED)))
    with pytest.raises(BenchError, match="dataset cifar10: download failed"):
        prefetch_dataset("cifar10", tmp_path)
    assert download.attempts == ["cifar"]


def _fake_mnist_download(calls: list[str]):
    """A stand-in for torchvision's MNIST.download: what a successful one leaves, four IDX files in <root>/MNIST/raw."""

    def download(self: torchvision.datasets.MNIST) -> None:
        raw = Path(self.raw_folder)
        raw.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for prefix, n in (("train", 8), ("t10k", 4)):
            write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
        calls.append("train" if self.train else "test")

    return download


def test_a_download_lands_where_bench_run_looks_and_is_then_found(
        network: NetworkGuard, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    calls: list[str] = []
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", _fake_mnist_download(calls))
    root = tmp_path / "root"
    matrix = _matrix(tmp_path, "mnist")
    code, out, err = _prefetch(capsys, str(matrix), "--data-root", str(root))
    assert code == 0, err
    assert out == [f"dataset mnist: downloaded to {root / 'MNIST' / 'raw'}", _summary(1, 0, 0, 1)]
    assert len(load_dataset("mnist", "train", root)) == 8 and len(load_dataset("mnist", "test", root)) == 4

    code, out, _ = _prefetch(capsys, str(matrix), "--data-root", str(root))
    assert code == 0 and out[0] == f"dataset mnist: found at {root / 'MNIST' / 'raw'}"
    assert calls == ["train", "test"]  # once each, and not again once found
    assert network.attempts == []


LABELED = [name for name in ds.dataset_names() if ds.dataset_splits(name) != ("train",)]


@pytest.mark.parametrize("name", ds.dataset_names())
def test_a_prefetch_of_any_registered_dataset_is_never_a_traceback(
        name: str, network: NetworkGuard, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Absent, offline: found (shipped data), or one line per failure and exit 2; an unlabeled pool
    is asked for as one (a labeled teacher's pool), every labeled dataset as the teacher's data."""
    matrix = _matrix(tmp_path, name) if name in LABELED else _matrix(tmp_path, "digits", s=name)
    code, out, err = _prefetch(capsys, str(matrix), "--data-root", str(tmp_path / "empty"))
    assert code in (0, 2)
    assert all(line.startswith("bench: ") for line in err) and len(err) <= 3
    assert code == 0 or any(name in line for line in err)


def test_a_folder_too_small_for_its_fixed_split_is_one_line(
        network: NetworkGuard, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Caltech-256 split 80:20 per class: 8 classes of 2 images leave a test split of 4 (fewer than
    the classes). scikit-learn's ValueError was a traceback; now it says what the split needs."""
    from tests.paper_fixtures import write_jpegs

    write_jpegs(tmp_path / "data" / "caltech256" / "caltech256" / "256_ObjectCategories",
                [f"{i:03d}.c{i}" for i in range(1, 9)], 2, seed=0, caltech=True)
    code, out, err = _prefetch(capsys, str(_matrix(tmp_path, "caltech256")), "--data-root", str(tmp_path / "data"))
    assert code == 2 and not network.attempts  # found, so nothing downloaded; and no download would mend it
    assert "bench: dataset 'caltech256' at" in err[0] and "cannot be split 0.8:0.2" in err[0]
