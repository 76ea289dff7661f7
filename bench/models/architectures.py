"""The architectures bench knows by name: the papers' own models (registered in ``MODELS``, trained
from scratch on inputs in [-1, 1]) and the way to timm's, imported only when one is asked for.
``bench.models.zoo`` builds either by name; ``bench.models.weights`` finds their pretrained weights.
"""
from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from bench.errors import BenchError
from bench.registry import Registry

if TYPE_CHECKING:
    import timm

def timm_module() -> ModuleType:
    """timm, imported when a timm architecture is asked for: it imports torchvision and
    torch._dynamo (~2 s), which a job training only the papers' own models does not need."""
    import timm

    return timm


ModelBuilder = Callable[[int, int, int], nn.Module]
"""``(num_classes, in_chans, image_size) -> nn.Module``."""

MODELS: Registry[ModelBuilder] = Registry("architecture")

PAPER_MEAN_STD = 0.5
"""Paper models are trained from scratch on inputs scaled to [-1, 1]."""

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
    return name in MODELS or timm_module().is_model(name)


def unknown_architecture(name: str) -> BenchError:
    return BenchError(
        f"unknown architecture {name!r}; known: paper models {', '.join(MODELS.names())} "
        "or any timm model name (timm.list_models)"
    )


def timm_pretrained_cfg(name: str) -> timm.models.PretrainedCfg | None:
    return timm_module().models.get_pretrained_cfg(name)


