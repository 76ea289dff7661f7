"""The model zoo: any architecture by name (a paper model from ``MODELS``, else timm's) as a
classifier or a backbone, each fed its own input normalisation (``Normalized``), and a new head on
a backbone (``WithHead``).

Weights are never downloaded at run time. ``create_model(..., pretrained=True)`` only looks in the
local caches and fails at once with a one-line :class:`DataNotFoundError` when the file is missing
(``bench.models.weights``).
"""
from __future__ import annotations

import torch
from torch import nn

from bench.models.architectures import MODELS, PAPER_MEAN_STD, timm_module, timm_pretrained_cfg, unknown_architecture
from bench.models.weights import find_cached_weights, no_weights

def create_model(name: str, num_classes: int, in_chans: int, image_size: int,
                 pretrained: bool = False) -> nn.Module:
    """Build ``name``: a paper model from ``MODELS``, else a timm architecture.

    With ``pretrained=True`` the weights must already be in the local cache; nothing
    is downloaded (see :func:`prefetch_weights`).
    """
    if name in MODELS:
        if pretrained:
            raise no_weights(name)
        return MODELS.get(name)(num_classes, in_chans, image_size)
    if not timm_module().is_model(name):
        raise unknown_architecture(name)
    kwargs: dict[str, object] = {"num_classes": num_classes, "in_chans": in_chans}
    cfg = timm_pretrained_cfg(name)
    if cfg is not None and cfg.fixed_input_size:
        # ViT-style models bake the image size into their position embeddings.
        kwargs["img_size"] = image_size
    if not pretrained:
        return timm_module().create_model(name, pretrained=False, **kwargs)
    weights = find_cached_weights(name)
    # Point timm at the local file: it then loads it without any network access and
    # still adapts the classifier (num_classes) and first conv (in_chans).
    overlay = {"file": weights.path, "source": "", "custom_load": weights.custom_load}
    return timm_module().create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)


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
    if not timm_module().is_model(name):
        raise unknown_architecture(name)
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    cfg = timm_pretrained_cfg(name)
    mean = tuple(cfg.mean) if cfg is not None and cfg.mean else IMAGENET_DEFAULT_MEAN
    std = tuple(cfg.std) if cfg is not None and cfg.std else IMAGENET_DEFAULT_STD
    return _adapt_channels(tuple(mean), in_chans), _adapt_channels(tuple(std), in_chans)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters())
