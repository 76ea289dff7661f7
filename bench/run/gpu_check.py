"""The GPU check (``bench doctor --gpu``, ``slurm/gpu-check.sh``): the CI matrix on a GPU
with AMP (bfloat16 where supported), channels_last and optionally ``torch.compile``, beside the
same matrix on this machine's CPU and the committed CPU baseline.

No GPU is lent to us while we write this, so it is kept short: the day one is, it runs in a few
minutes and says whether the fast path trains as fast and as well as it should.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
MATRIX = ROOT / "matrices" / "ci.yaml"
BASELINE = ROOT / "results" / "baselines" / "ci.csv"
SHOWN = ["id", "stage", "method", "arch"]


def cuda_summary() -> str | None:
    """One line on the CUDA device (name, bf16 support, torch and CUDA versions), None without one."""
    import torch

    from bench.training.runtime import native_bf16

    if not torch.cuda.is_available():
        return None
    bf16 = "bf16" if native_bf16(0) else "fp16 (no native bf16)"
    return (f"{torch.cuda.get_device_name(0)} ({bf16}), {torch.cuda.device_count()} visible, "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}")


def no_cuda_line() -> str:
    import torch

    built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return f"bench doctor --gpu: no CUDA device here (torch {torch.__version__}, {built}); nothing to check"


def side_by_side(cpu: pd.DataFrame, gpu: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """Per cell: training images/s on the CPU and on the GPU with their ratio, and test accuracy
    on both beside the baseline's (which the gate compares)."""
    left = cpu.set_index("id")
    right = gpu.set_index("id")
    base = baseline.set_index("id")["value"] if not baseline.empty else pd.Series(dtype=float)
    rows = []
    for cell_id in right.index:
        row = {k: right.at[cell_id, k] for k in SHOWN[1:]}
        cpu_rate = left.at[cell_id, "train_images_per_s"] if cell_id in left.index else float("nan")
        gpu_rate = right.at[cell_id, "train_images_per_s"]
        row.update(id=cell_id, cpu_img_s=cpu_rate, gpu_img_s=gpu_rate, speedup=gpu_rate / cpu_rate,
                   baseline_acc=base.get(cell_id, float("nan")),
                   cpu_acc=left.at[cell_id, "test_acc"] if cell_id in left.index else float("nan"),
                   gpu_acc=right.at[cell_id, "test_acc"])
        row["gpu_minus_baseline"] = row["gpu_acc"] - row["baseline_acc"]
        rows.append(row)
    return pd.DataFrame(rows, columns=[*SHOWN, "cpu_img_s", "gpu_img_s", "speedup", "baseline_acc", "cpu_acc", "gpu_acc",
                                       "gpu_minus_baseline"])
