"""Cost figures reported beside accuracy: parameters, FLOPs per image, peak memory."""
from __future__ import annotations

import resource
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.models import count_parameters
from bench.runtime import Runtime


def flops_per_image(model: nn.Module, channels: int, size: int) -> int:
    """Forward FLOPs of one image, counted by torch.utils.flop_counter on the CPU (eval mode)."""
    was_training = model.training
    model.eval()
    probe = torch.zeros(1, channels, size, size, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(probe)
    model.train(was_training)
    return int(counter.get_total_flops())


def peak_memory(runtime: Runtime) -> dict[str, Any]:
    """Peak device memory on CUDA; on the CPU the process's peak resident set (ru_maxrss)."""
    if runtime.torch_device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(runtime.torch_device) / 2**20, "peak_memory_kind": "cuda_allocated"}
    return {"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_memory_kind": "process_rss"}


def reset_peak(runtime: Runtime) -> None:
    if runtime.torch_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(runtime.torch_device)


def model_costs(model: nn.Module, channels: int, size: int) -> dict[str, Any]:
    return {"params": count_parameters(model), "flops": flops_per_image(model, channels, size)}
