"""Cost figures reported beside accuracy: parameters, FLOPs per image, peak memory."""
from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.models.zoo import count_parameters
from bench.training.runtime import Runtime


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


def _vm_hwm_kb() -> int | None:
    """The process's resident-set high-water mark since the last reset (Linux), in KiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory(runtime: Runtime) -> dict[str, Any]:
    """Peak device memory on CUDA; on the CPU the peak resident set since ``reset_peak``
    (VmHWM, reset per cell on Linux), else the process's lifetime peak (ru_maxrss)."""
    if runtime.torch_device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(runtime.torch_device) / 2**20, "peak_memory_kind": "cuda_allocated"}
    if _PEAK_RESET_WORKS and (hwm := _vm_hwm_kb()) is not None:
        return {"peak_memory_mb": hwm / 1024, "peak_memory_kind": "cell_rss"}
    return {"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_memory_kind": "process_rss"}


_PEAK_RESET_WORKS = False


def reset_peak(runtime: Runtime) -> None:
    """Start a cell's peak-memory measurement (so cells run in one process don't share a peak)."""
    global _PEAK_RESET_WORKS
    if runtime.torch_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(runtime.torch_device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        _PEAK_RESET_WORKS = True
    except OSError:
        _PEAK_RESET_WORKS = False


def model_costs(model: nn.Module, channels: int, size: int) -> dict[str, Any]:
    return {"params": count_parameters(model), "flops": flops_per_image(model, channels, size)}
