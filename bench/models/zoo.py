"""Models: the papers' own architectures by name, else any timm architecture.

Weights are never downloaded at run time. ``create_model(..., pretrained=True)``
only looks in the local Hugging Face / torch hub caches (resolved from the
environment at call time) and fails at once with a one-line
:class:`DataNotFoundError` when the file is missing; ``prefetch_weights`` fills
those caches on a machine with internet.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlparse

import torch
from torch import nn

from bench.errors import BenchError, DataNotFoundError
from bench.registry import Registry

if TYPE_CHECKING:
    import timm

def _timm() -> ModuleType:
    """timm, imported when a timm architecture is asked for: it imports torchvision and
    torch._dynamo (~2 s), which a job training only the papers' own models does not need."""
    import timm

    return timm


ModelBuilder = Callable[[int, int, int], nn.Module]
"""``(num_classes, in_chans, image_size) -> nn.Module``."""

MODELS: Registry[ModelBuilder] = Registry("architecture")

PAPER_MEAN_STD = 0.5
"""Paper models are trained from scratch on inputs scaled to [-1, 1]."""

PREFETCH_HINT = "run `bench prefetch MATRIX` on a machine with internet, or set HF_HOME to a cache that has it"


def _flat_features(features: nn.Module, in_chans: int, image_size: int, arch: str) -> int:
    """Size of ``features``' flattened output, from one dummy forward.

    Run in eval mode so BatchNorm running statistics are not touched by the probe.
    """
    was_training = features.training
    features.eval()
    try:
        with torch.no_grad():
            out = features(torch.zeros(1, in_chans, image_size, image_size))
    except RuntimeError as exc:
        raise BenchError(f"architecture {arch!r} cannot take {in_chans}x{image_size}x{image_size} images: {exc}") from None
    finally:
        features.train(was_training)
    return out[0].numel()


class FeaturesThenLinear(nn.Module):
    """A feature extractor, a flatten and one linear classifier (sized for the input).

    It keeps timm's backbone/head contract (``forward_features``, ``forward_head``,
    ``reset_classifier``, ``num_features``), so a dependant can take its backbone and put a new
    head on it as with any timm model.
    """

    def __init__(self, features: nn.Module, num_classes: int, in_chans: int, image_size: int, arch: str,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.features = features
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.num_features = _flat_features(features, in_chans, image_size, arch)
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.features(x), 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(x)
        return x if pre_logits else self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class SequentialClassifier(nn.Sequential):
    """An ``nn.Sequential`` whose last layer is the classifier, with timm's backbone/head
    contract. Subclassing Sequential keeps its state-dict keys (``0.weight`` ...), so weights
    saved before the contract existed still load."""

    @property
    def num_features(self) -> int:
        return self[-1].in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for layer in list(self)[:-1]:
            x = layer(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self[-1](x)

    def reset_classifier(self, num_classes: int) -> None:
        features = self.num_features
        self[-1] = nn.Linear(features, num_classes) if num_classes else nn.Identity()
        if not num_classes:
            self[-1].in_features = features  # type: ignore[attr-defined]


class WithHead(nn.Module):
    """A backbone (its classifier removed: it returns its pooled embedding) and a new head, with
    the same backbone/head contract, so a dependant can take this backbone in turn."""

    def __init__(self, backbone: nn.Module, head: nn.Module, embedding_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_features = embedding_size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def create_backbone(name: str, in_chans: int, image_size: int, pretrained: bool = False) -> tuple[nn.Module, int]:
    """``name`` without its classifier (its forward returns the pooled embedding) and the
    embedding's size."""
    model = create_model(name, num_classes=1 if name in MODELS else 0, in_chans=in_chans, image_size=image_size, pretrained=pretrained)
    size = int(getattr(model, "head_hidden_size", None) or model.num_features)
    model.reset_classifier(0)
    return model, size


class Normalized(nn.Module):
    """A model that takes images in [0, 1] and normalises them with its own mean/std.

    Teacher and student may expect different normalisation (timm pretrained_cfg); feeding each
    the same [0, 1] tensor and letting each normalise is what keeps them both correct.
    ``embed`` is the backbone's pooled embedding (timm's ``forward_head(pre_logits=True)``), the
    input of a new head.
    """

    def __init__(self, inner: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner((images - self.mean) / self.std)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        features = self.inner.forward_features((images - self.mean) / self.std)
        return self.inner.forward_head(features, pre_logits=True)

    @property
    def embedding_size(self) -> int:
        return int(getattr(self.inner, "head_hidden_size", None) or self.inner.num_features)


def _conv_bn_relu(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


# menghani2019 gives only the layer types and a total (~1.12M params at 28x28x1 / 10
# classes), not the widths. Most of a 1.12M budget with a single FC layer must sit in that
# layer, so we keep the convolutions narrow-then-wide and cheap: 3x3 'same' convs, widths 16
# and 530, and, read literally, batch-norm and one 2x2 max-pool *between* them:
#   conv 1->16 (160) + bn (32) + pool + conv 16->530 (76,850)
#   + linear 14*14*530 -> 10 (1,038,810) = 1,115,852 params (-0.4% of 1.12M).
# ~15M multiply-adds per image; measured here (2 CPU cores, batch 128) it trains at ~650
# img/s against ~354 for 96/256-wide 5x5 convs of the same size.
MENGHANI_CNN_WIDTHS = (16, 530)
MENGHANI_CNN_KERNEL = 3


@MODELS.register("menghani_cnn")
def menghani_cnn(num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """menghani2019 MNIST CNN: two convs with BN and max-pool between them, one FC."""
    c1, c2 = MENGHANI_CNN_WIDTHS
    k = MENGHANI_CNN_KERNEL
    features = nn.Sequential(
        *_conv_bn_relu(in_chans, c1, k),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, k, padding=k // 2),
        nn.ReLU(inplace=True),
    )
    return FeaturesThenLinear(features, num_classes, in_chans, image_size, "menghani_cnn")


# menghani2019 MNIST MLP: "three fully connected layers, ~85,000 params".
# 784-100-50-10 gives 78,500 + 5,050 + 510 = 84,060 params (-1.1% of 85k).
MENGHANI_MLP_HIDDEN = (100, 50)


def _mlp(hidden: tuple[int, int], num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """Three fully connected layers on the flattened image (two hidden, ReLU)."""
    h1, h2 = hidden
    return SequentialClassifier(
        nn.Flatten(),
        nn.Linear(in_chans * image_size * image_size, h1),
        nn.ReLU(inplace=True),
        nn.Linear(h1, h2),
        nn.ReLU(inplace=True),
        nn.Linear(h2, num_classes),
    )


@MODELS.register("menghani_mlp")
def menghani_mlp(num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """menghani2019 MLP: three fully connected layers on the flattened image."""
    return _mlp(MENGHANI_MLP_HIDDEN, num_classes, in_chans, image_size)


# A wider MLP for analogs on our CPUs, the "large" model beside menghani_mlp (khose2021-analog's
# stand-in for EfficientNet-b5 as menghani_mlp is for MobileNetV3): 784-512-256-10, 535,818
# parameters at 28x28, still thousands of images per second on one core.
WIDE_MLP_HIDDEN = (512, 256)


@MODELS.register("wide_mlp")
def wide_mlp(num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """Not from a paper: menghani_mlp's shape, about six times its parameters."""
    return _mlp(WIDE_MLP_HIDDEN, num_classes, in_chans, image_size)


# menghani2019 CIFAR-10 CNN: "6 conv layers and one feed-forward layer with batch-norm
# and dropout". The paper gives no widths; we use the common VGG-style CIFAR-10 layout:
# three blocks of two 3x3 convs (32, 64, 128) with BN, a 2x2 max-pool and growing dropout
# (0.2, 0.3, 0.4) per block, then dropout 0.5 and one linear layer (308,394 params at 32x32x3).
MENGHANI_CIFAR_BLOCKS = ((32, 0.2), (64, 0.3), (128, 0.4))
MENGHANI_CIFAR_HEAD_DROPOUT = 0.5


@MODELS.register("menghani_cifar_cnn")
def menghani_cifar_cnn(num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """menghani2019 CIFAR-10 CNN: six convs with BN and dropout, one FC."""
    layers: list[nn.Module] = []
    cin = in_chans
    for width, drop in MENGHANI_CIFAR_BLOCKS:
        layers += _conv_bn_relu(cin, width, 3) + _conv_bn_relu(width, width, 3)
        layers += [nn.MaxPool2d(2), nn.Dropout(drop)]
        cin = width
    return FeaturesThenLinear(nn.Sequential(*layers), num_classes, in_chans, image_size,
                              "menghani_cifar_cnn", dropout=MENGHANI_CIFAR_HEAD_DROPOUT)


# A small CNN for analogs on our CPUs (SimCLR encoders, frozen-backbone students): three 3x3
# conv-BN-ReLU blocks (16, 32, 64) with two 2x2 max-pools and a global average pool, so its
# embedding is 64-d whatever the image size (~24k parameters, ~1.9 MFLOP per 28x28 image).
SMALL_CNN_WIDTHS = (16, 32, 64)


@MODELS.register("small_cnn")
def small_cnn(num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """Not from a paper: a compact encoder for the CPU-sized analogs."""
    layers: list[nn.Module] = []
    cin = in_chans
    for i, width in enumerate(SMALL_CNN_WIDTHS):
        layers += _conv_bn_relu(cin, width, 3)
        if i < len(SMALL_CNN_WIDTHS) - 1:
            layers.append(nn.MaxPool2d(2))
        cin = width
    layers.append(nn.AdaptiveAvgPool2d(1))
    return FeaturesThenLinear(nn.Sequential(*layers), num_classes, in_chans, image_size, "small_cnn")


# --------------------------------------------------------------------------- lookup


def architecture_exists(name: str) -> bool:
    """True if ``name`` is a paper model or a timm architecture; builds nothing."""
    return name in MODELS or _timm().is_model(name)


def _unknown(name: str) -> BenchError:
    return BenchError(
        f"unknown architecture {name!r}; known: paper models {', '.join(MODELS.names())} "
        "or any timm model name (timm.list_models)"
    )


def _timm_cfg(name: str) -> timm.models.PretrainedCfg | None:
    return _timm().models.get_pretrained_cfg(name)


def create_model(name: str, num_classes: int, in_chans: int, image_size: int,
                 pretrained: bool = False) -> nn.Module:
    """Build ``name``: a paper model from ``MODELS``, else a timm architecture.

    With ``pretrained=True`` the weights must already be in the local cache; nothing
    is downloaded (see :func:`prefetch_weights`).
    """
    if name in MODELS:
        if pretrained:
            raise _no_weights(name)
        return MODELS.get(name)(num_classes, in_chans, image_size)
    if not _timm().is_model(name):
        raise _unknown(name)
    kwargs: dict[str, object] = {"num_classes": num_classes, "in_chans": in_chans}
    cfg = _timm_cfg(name)
    if cfg is not None and cfg.fixed_input_size:
        # ViT-style models bake the image size into their position embeddings.
        kwargs["img_size"] = image_size
    if not pretrained:
        return _timm().create_model(name, pretrained=False, **kwargs)
    weights = _find_cached_weights(name)
    # Point timm at the local file: it then loads it without any network access and
    # still adapts the classifier (num_classes) and first conv (in_chans).
    overlay = {"file": weights.path, "source": "", "custom_load": weights.custom_load}
    return _timm().create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)


# --------------------------------------------------------------------------- weights cache


def hf_hub_cache_dir() -> str:
    """The Hugging Face hub cache, from the environment *now* (huggingface_hub reads it at import)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return os.path.expanduser(os.path.expandvars(explicit))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return os.path.join(os.path.expanduser(os.path.expandvars(home)), "hub")


def torch_hub_checkpoint_dir() -> str:
    """Where ``torch.hub.load_state_dict_from_url`` keeps downloads (timm's ``url`` weights)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


@dataclass(frozen=True)
class _Candidate:
    """One place the weights of an architecture may be cached."""

    where: str  # "hf" or "url" or "file"
    ref: str  # hf repo id, url or path
    filename: str
    revision: str | None = None
    custom_load: bool = False

    def describe(self) -> str:
        if self.where == "hf":
            return f"{self.ref}/{self.filename} in {hf_hub_cache_dir()}"
        if self.where == "url":
            return f"{self.filename} in {torch_hub_checkpoint_dir()}"
        return self.ref

    def cached_path(self) -> str | None:
        if self.where == "hf":
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(self.ref, self.filename, cache_dir=hf_hub_cache_dir(),
                                           revision=self.revision)
            return found if isinstance(found, str) else None
        path = os.path.join(torch_hub_checkpoint_dir(), self.filename) if self.where == "url" else self.ref
        return path if os.path.isfile(path) else None


@dataclass(frozen=True)
class _Weights:
    path: str
    custom_load: bool


def _no_weights(name: str) -> BenchError:
    return BenchError(f"architecture {name!r} is a paper model trained from scratch; no pretrained weights exist "
                      "(set pretrained: false)")


def _weight_candidates(name: str) -> list[_Candidate]:
    """Where timm would fetch ``name``'s weights from, preferred first (mirrors timm's resolution)."""
    if name in MODELS:
        raise _no_weights(name)
    if not _timm().is_model(name):
        raise _unknown(name)
    from timm.models._hub import HF_WEIGHTS_NAME, _get_safe_alternatives, hf_split

    cfg = _timm_cfg(name)
    out: list[_Candidate] = []
    if cfg is None:
        return out
    if cfg.file:
        out.append(_Candidate("file", str(cfg.file), os.path.basename(str(cfg.file)),
                              custom_load=bool(cfg.custom_load)))
    if cfg.hf_hub_id:
        repo, revision = hf_split(cfg.hf_hub_id)
        filename = cfg.hf_hub_filename or HF_WEIGHTS_NAME
        hf_custom = cfg.custom_load == "hf"
        names = [] if hf_custom else list(_get_safe_alternatives(filename))
        for fn in names + [filename]:
            out.append(_Candidate("hf", repo, fn, revision, custom_load=hf_custom))
    if cfg.url:
        out.append(_Candidate("url", cfg.url, os.path.basename(urlparse(cfg.url).path),
                              custom_load=cfg.custom_load is True))
    return out


def _find_cached_weights(name: str) -> _Weights:
    """The local weight file of timm architecture ``name``, or a fast one-line DataNotFoundError."""
    candidates = _weight_candidates(name)
    if not candidates:
        raise BenchError(f"timm architecture {name!r} has no pretrained weights; set pretrained: false")
    for cand in candidates:
        path = cand.cached_path()
        if path is not None:
            return _Weights(path, cand.custom_load)
    looked = "; ".join(c.describe() for c in candidates)
    raise DataNotFoundError(f"pretrained weights for architecture {name!r} not found in the local cache "
                            f"(looked for {looked}); {PREFETCH_HINT}")


def check_pretrained_available(name: str) -> None:
    """Raise the one-line error ``create_model(name, pretrained=True)`` would, without building it."""
    _find_cached_weights(name)


def cached_weights(name: str) -> str:
    """The local file ``create_model(name, pretrained=True)`` would load, else its DataNotFoundError."""
    return _find_cached_weights(name).path


def _hub_errors() -> tuple[type[BaseException], ...]:
    """huggingface_hub failures that are not OSError (its httpx HTTP base, Xet); names vary by version."""
    import huggingface_hub.errors as hub_errors

    found = (getattr(hub_errors, n, None) for n in ("HTTPError", "XetDownloadError"))
    return tuple(e for e in found if isinstance(e, type) and issubclass(e, BaseException))


def _file_not_in_repo(exc: BaseException) -> bool:
    """The Hub answered that this file is not in the repo: its next filename is worth a try.

    Any other failure (offline, DNS, HTTP 5xx, no such repo) would repeat for every file of the
    repo, each after huggingface_hub's own retries.
    """
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    return isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError)


def _download(cand: _Candidate) -> str | None:
    """Fetch one candidate into its cache; None for a local ``file`` source, which cannot be fetched."""
    if cand.where == "hf":
        from huggingface_hub import hf_hub_download

        return hf_hub_download(cand.ref, cand.filename, revision=cand.revision, cache_dir=hf_hub_cache_dir())
    if cand.where == "url":
        dst = os.path.join(torch_hub_checkpoint_dir(), cand.filename)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        torch.hub.download_url_to_file(cand.ref, dst, progress=False)
        return dst
    return None


def prefetch_weights(name: str) -> str:
    """Make ``name``'s timm weights loadable offline; returns the file path.

    A file :func:`cached_weights` already finds (from any source timm would use) is not
    downloaded again. Otherwise each source is tried in timm's order (needs internet); if none
    works, one BenchError line names the architecture, why, and what to do. Afterwards
    ``create_model(name, ..., pretrained=True)`` works offline with the same HF_HOME / TORCH_HOME.
    """
    from bench.data.datasets import DOWNLOAD_ERRORS, download_failed, short_reason

    try:
        return cached_weights(name)
    except DataNotFoundError:
        pass
    candidates = _weight_candidates(name)
    reasons: list[str] = []
    unreachable: set[str] = set()  # after a network failure, the same kind of source is not retried
    for cand in candidates:
        if cand.where in unreachable:
            continue
        try:
            path = _download(cand)
        except DOWNLOAD_ERRORS + _hub_errors() as exc:
            reasons.append(short_reason(exc))
            if not _file_not_in_repo(exc):
                unreachable.add(cand.where)
            continue
        if path is not None:
            return path
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        reasons.append("HF_HUB_OFFLINE is set: unset it to download")
    looked = "; ".join(c.describe() for c in candidates)
    reason = "; ".join(dict.fromkeys(reasons)) or "no downloadable source"
    raise download_failed(f"weights for architecture {name}", reason,
                          f"set HF_HOME / TORCH_HOME to a cache that has them (looked for {looked})")


# --------------------------------------------------------------------------- helpers


def _adapt_channels(values: tuple[float, ...], in_chans: int) -> tuple[float, ...]:
    """Match timm's first-conv adaptation: 1 channel sums RGB (so use the mean), else cycle RGB."""
    if in_chans == len(values):
        return tuple(values)
    if in_chans == 1:
        return (sum(values) / len(values),)
    return tuple(values[i % len(values)] for i in range(in_chans))


def normalization(name: str, in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per input channel that ``name`` expects.

    Teacher and student may differ (e.g. ImageNet stats vs 0.5), so each is fed its own.
    """
    if name in MODELS:
        return (PAPER_MEAN_STD,) * in_chans, (PAPER_MEAN_STD,) * in_chans
    if not _timm().is_model(name):
        raise _unknown(name)
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    cfg = _timm_cfg(name)
    mean = tuple(cfg.mean) if cfg is not None and cfg.mean else IMAGENET_DEFAULT_MEAN
    std = tuple(cfg.std) if cfg is not None and cfg.std else IMAGENET_DEFAULT_STD
    return _adapt_channels(tuple(mean), in_chans), _adapt_channels(tuple(std), in_chans)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters())
