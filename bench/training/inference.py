"""Forward passes without training: logits, embeddings, accuracy and images/s, in eval mode.

Shared by the engine (per-epoch evaluation), methods (teacher targets, kNN memories, agreement)
and anything else that needs a model's outputs on a set of items, so it imports no method.
"""
from __future__ import annotations

import hashlib

import math
import time
from typing import Callable

import torch
from torch import nn

from bench.data.images import ImageSet
from bench.training.runtime import Runtime


def to_device(images: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Copy a uint8 batch to the device without blocking (4x less traffic than float32)."""
    return images.to(runtime.torch_device, non_blocking=True)


def as_float(images: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """uint8 -> float in [0, 1], channels_last on GPUs."""
    return layout(images.float().div_(255.0), runtime)


def layout(x: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if runtime.use_channels_last else x


def outputs_key(source: ImageSet, items: torch.Tensor, transform: str, runtime: Runtime) -> str:
    """The key of a stored table of a teacher's outputs (beside the teacher, so the teacher is
    named by the folder): everything else that changes them — the inputs (dataset, size, items),
    their ``transform`` and how they were computed (precision, device type: a CPU run must not
    reuse AMP outputs)."""
    described = (f"{source.name}|{len(source)}|{source.channels}|{source.size}|{transform}"
                 f"|amp={runtime.amp_label}|{runtime.torch_device.type}")
    return hashlib.sha256(described.encode() + items.numpy().tobytes()).hexdigest()[:16]


def item_positions(items: torch.Tensor, source_size: int) -> torch.Tensor:
    """For every item of a source, its row in a table computed over ``items`` (-1 if absent)."""
    position = torch.full((source_size,), -1, dtype=torch.int64)
    position[items] = torch.arange(len(items))
    return position


def forward_in_batches(model: nn.Module, x: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """``model(x)`` without gradient, in inference batches (``Runtime.inference_batch``)."""
    size = runtime.inference_batch(len(x))
    with torch.no_grad(), runtime.autocast():
        if len(x) <= size:
            return model(x)
        return torch.cat([model(part) for part in x.split(size)])


@torch.no_grad()
def predict(model: nn.Module, source: ImageSet, items: torch.Tensor, batch_size: int, runtime: Runtime,
            forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Outputs (float32, CPU) of ``forward`` (default: the model; its logits) for ``items`` in
    order, in eval mode, without augmentation."""
    was_training = model.training
    model.eval()
    outputs = []
    for images, _, _ in source.batches(items, runtime.inference_batch(batch_size), runtime.workers):
        x = as_float(to_device(images, runtime), runtime)
        with runtime.autocast():
            outputs.append((forward or model)(x).float().cpu())
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0)


def embeddings(model: nn.Module, source: ImageSet, items: torch.Tensor, batch_size: int, runtime: Runtime) -> torch.Tensor:
    """The backbone's pooled embeddings (``Normalized.embed``) of ``items``, in eval mode."""
    return predict(model, source, items, batch_size, runtime, forward=model.embed)


@torch.no_grad()
def evaluate(model: nn.Module, source: ImageSet, items: torch.Tensor, batch_size: int, runtime: Runtime
             ) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Accuracy and cross-entropy over the items with known labels, and images/s; with those
    items and their logits (for metrics of the same outputs, and the cell's inference rate)."""
    items = items[source.targets[items] >= 0] if len(items) else items
    if len(items) == 0:
        return {"acc": math.nan, "loss": math.nan, "images_per_s": math.nan}, items, torch.empty(0)
    start = time.perf_counter()
    logits = predict(model, source, items, batch_size, runtime)
    synchronize(runtime)
    seconds = time.perf_counter() - start
    targets = source.targets[items]
    return {
        "acc": (logits.argmax(1) == targets).float().mean().item(),
        "loss": nn.functional.cross_entropy(logits, targets).item(),
        "images_per_s": len(items) / max(seconds, 1e-9),
    }, items, logits


def inference_rate(model: nn.Module, source: ImageSet, items: torch.Tensor, batch_size: int, runtime: Runtime) -> float:
    """Images per second of a forward pass in eval mode over ``items``."""
    start = time.perf_counter()
    predict(model, source, items, batch_size, runtime)
    synchronize(runtime)
    return len(items) / max(time.perf_counter() - start, 1e-9)


def synchronize(runtime: Runtime) -> None:
    if runtime.torch_device.type == "cuda":
        torch.cuda.synchronize(runtime.torch_device)
