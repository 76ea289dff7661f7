"""A cell's network built from its config: the architecture from the zoo, a dense head, the
backbone weights of an ``encoder_file``."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bench.errors import BenchError
from bench.matrix.config import CellConfig
from bench.models.zoo import Normalized, WithHead, create_backbone, create_model, normalization
from bench.results.store import UnreadableFile, load_tensors
from bench.training.contrastive import dense_head


def build_model(config: CellConfig, num_classes: int, in_chans: int, image_size: int) -> Normalized:
    """The cell's network, initialised from its seed: the architecture as a classifier; with
    ``head``, its backbone and a new dense head; with ``num_classes`` 0, the backbone alone (an
    encoder, as a SimCLR cell trains). ``encoder_file`` loads the backbone's weights."""
    torch.manual_seed(config.seed)
    if config.head is None and num_classes and config.encoder_file is None:
        inner = create_model(config.arch, num_classes=num_classes, in_chans=in_chans, image_size=image_size, pretrained=config.pretrained)
    else:
        backbone, size = create_backbone(config.arch, in_chans, image_size, config.pretrained)
        if config.encoder_file is not None:
            load_backbone(backbone, Path(config.encoder_file).expanduser())
        inner = backbone if config.head is None else WithHead(backbone, dense_head(size, config.head, num_classes), size)
    mean, std = normalization(config.arch, in_chans)
    return Normalized(inner, mean, std)


def load_backbone(backbone: nn.Module, path: Path) -> None:
    """Backbone weights from a state dict file (``weights_only``), a classifier's keys ignored."""
    try:
        state = load_tensors(path)
    except UnreadableFile as error:
        raise BenchError(f"encoder_file: {error}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BenchError(f"encoder_file {path}: not a state dict")
    missing, _ = backbone.load_state_dict(state, strict=False)
    if missing:
        raise BenchError(f"encoder_file {path}: {len(missing)} backbone weights missing (e.g. {missing[0]}); "
                         "is it a converted release of this architecture?")
