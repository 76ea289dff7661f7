"""bench.models: paper architectures, timm fallback, offline pretrained weights, normalisation."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bench.errors import BenchError, DataNotFoundError
from bench.models import weights
from bench.models.architectures import MODELS, architecture_exists
from bench.models.weights import prefetch_weights
from bench.models.zoo import count_parameters, create_model, normalization


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every weight cache at an empty tmp dir, network allowed (HF_HUB_OFFLINE unset)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def test_paper_models_registered() -> None:
    assert MODELS.names() == ["menghani_cifar_cnn", "menghani_cnn", "menghani_mlp", "small_cnn", "wide_mlp"]


def test_wide_mlp_is_menghani_mlps_shape_six_times_wider() -> None:
    from bench.models.zoo import create_model

    count = lambda arch: sum(p.numel() for p in create_model(arch, num_classes=10, in_chans=1, image_size=28).parameters())  # noqa: E731
    assert (count("menghani_mlp"), count("wide_mlp")) == (84_060, 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10)


def test_small_cnn_embeds_to_64_whatever_the_size() -> None:
    from bench.models.zoo import create_backbone

    for size in (16, 28, 32):
        backbone, width = create_backbone("small_cnn", in_chans=1, image_size=size)
        assert width == 64 and backbone(torch.zeros(2, 1, size, size)).shape == (2, 64)


@pytest.mark.parametrize(("name", "target", "exact"), [
    ("menghani_cnn", 1_120_000, 1_115_852),
    ("menghani_mlp", 85_000, 84_060),
])
def test_paper_param_counts_match_paper(name: str, target: int, exact: int) -> None:
    n = count_parameters(create_model(name, num_classes=10, in_chans=1, image_size=28))
    assert abs(n - target) / target <= 0.03
    assert n == exact  # documented in bench/models/architectures.py


@pytest.mark.parametrize(("name", "in_chans", "size"), [
    ("menghani_cnn", 1, 28),
    ("menghani_cnn", 3, 32),  # flatten size follows the input
    ("menghani_mlp", 1, 28),
    ("menghani_mlp", 3, 32),
    ("menghani_cifar_cnn", 3, 32),
    ("menghani_cifar_cnn", 1, 28),
    ("resnet18", 1, 28),
    ("mobilenetv3_large_100", 3, 32),
])
def test_forward_shapes(name: str, in_chans: int, size: int) -> None:
    model = create_model(name, num_classes=7, in_chans=in_chans, image_size=size)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_chans, size, size))
    assert out.shape == (2, 7)


def test_flatten_probe_leaves_batchnorm_stats_untouched() -> None:
    model = create_model("menghani_cnn", 10, 1, 28)
    bn = model.features[1]
    assert isinstance(bn, torch.nn.BatchNorm2d)
    assert int(bn.num_batches_tracked) == 0
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert model.training


def test_too_small_image_is_a_bench_error() -> None:
    with pytest.raises(BenchError, match="menghani_cifar_cnn.*1x4x4"):
        create_model("menghani_cifar_cnn", 10, 1, 4)


def test_fixed_input_size_timm_model_gets_image_size() -> None:
    model = create_model("vit_tiny_patch16_224", num_classes=10, in_chans=3, image_size=32)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_unknown_architecture() -> None:
    with pytest.raises(BenchError, match=r"unknown architecture 'resnet_nope'.*menghani_cnn.*timm"):
        create_model("resnet_nope", 10, 1, 28)
    with pytest.raises(BenchError, match="unknown architecture"):
        normalization("resnet_nope", 3)


def test_architecture_exists() -> None:
    assert architecture_exists("menghani_cnn")
    assert architecture_exists("menghani_cifar_cnn")
    assert architecture_exists("resnet18")
    assert architecture_exists("resnet18.tv_in1k")
    assert not architecture_exists("resnet_nope")
    assert not architecture_exists("")


def test_paper_model_pretrained_is_bench_error() -> None:
    with pytest.raises(BenchError, match="no pretrained weights") as info:
        create_model("menghani_cnn", 10, 1, 28, pretrained=True)
    assert not isinstance(info.value, DataNotFoundError)
    with pytest.raises(BenchError, match="no pretrained weights"):
        prefetch_weights("menghani_mlp")


def test_pretrained_missing_offline_fails_fast(empty_caches: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(DataNotFoundError) as info:
        create_model("resnet18", num_classes=10, in_chans=1, image_size=28, pretrained=True)
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert "\n" not in message
    assert "'resnet18'" in message
    assert "timm/resnet18.a1_in1k" in message
    assert str(empty_caches / "hf" / "hub") in message
    assert "bench prefetch" in message and "HF_HOME" in message
    assert elapsed < 20, elapsed


def _fake_hf_cache(hub: Path, repo: str, filename: str, tensors: dict[str, torch.Tensor]) -> None:
    """Lay out a Hugging Face hub cache entry the way hf_hub_download leaves it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = hub / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    save_file(tensors, str(snap / filename))


def test_pretrained_loads_from_local_hf_cache(empty_caches: Path) -> None:
    source = create_model("resnet18", num_classes=1000, in_chans=3, image_size=224)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    _fake_hf_cache(empty_caches / "hf" / "hub", "timm/resnet18.a1_in1k", "model.safetensors", state)

    model = create_model("resnet18", num_classes=10, in_chans=1, image_size=28, pretrained=True)
    # timm adapts a 3-channel stem to 1 channel by summing over RGB; the head is re-initialised.
    assert torch.allclose(model.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert model.fc.out_features == 10
    assert prefetch_weights("resnet18").endswith("model.safetensors")  # already cached: no download


def test_normalization_timm_one_channel() -> None:
    mean, std = normalization("resnet18", 1)
    assert mean == pytest.approx(((0.485 + 0.456 + 0.406) / 3,))
    assert std == pytest.approx(((0.229 + 0.224 + 0.225) / 3,))
    mean3, std3 = normalization("resnet18", 3)
    assert mean3 == pytest.approx((0.485, 0.456, 0.406))
    assert std3 == pytest.approx((0.229, 0.224, 0.225))


def test_normalization_differs_between_teacher_and_student() -> None:
    assert normalization("menghani_cnn", 1) == ((0.5,), (0.5,))
    assert normalization("menghani_cifar_cnn", 3) == ((0.5,) * 3, (0.5,) * 3)
    assert normalization("vit_tiny_patch16_224", 3) == ((0.5,) * 3, (0.5,) * 3)
    assert normalization("resnet18", 1) != normalization("menghani_cnn", 1)


def test_count_parameters_counts_frozen_not_buffers() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    model[0].weight.requires_grad_(False)
    assert count_parameters(model) == 3 * 2 + 2 + 2 + 2


def test_hf_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert weights.hf_hub_cache_dir() == str(tmp_path / "home" / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "explicit"))
    assert weights.hf_hub_cache_dir() == str(tmp_path / "explicit")
