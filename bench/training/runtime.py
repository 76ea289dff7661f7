"""How a cell runs (not what it computes): device, AMP, memory format, loader workers.

None of these are part of a cell's id. Defaults pick the fast path on a GPU and the exact path
on the CPU.
"""
from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.errors import BenchError


def native_bf16(device: torch.device | str) -> bool:
    """Whether a CUDA device computes bfloat16 natively (Ampere and later); ``torch.cuda.
    is_bf16_supported()`` also says yes where it is emulated (V100, T4), and slow."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


CPU_INFER_BATCH = 32


def allotted_cpus() -> int:
    """The CPUs SLURM allotted this task (``SLURM_CPUS_PER_TASK``), else the ones this process
    may run on (``sched_getaffinity``: a taskset or cgroup), else the machine's."""
    value = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Runtime:
    device: str = field(default_factory=default_device)
    amp: bool | None = None  # None: on for CUDA, off on the CPU
    channels_last: bool | None = None  # None: on for CUDA
    workers: int | None = 0  # None (the command line's default): allotted_cpus(), resolved where the cell runs
    data_root: Path | None = None
    progress_seconds: float = 30.0  # print an in-epoch progress line at most this often
    compile: bool = False  # torch.compile the trained model (its forward, in place)
    infer_batch_size: int | None = None  # batch of no-grad forwards; None: CPU_INFER_BATCH on the CPU, the cell's on GPUs
    keep_checkpoints: bool = False  # a done cell keeps checkpoint.pt (and .prev): --keep-checkpoints
    rank: int = 0  # this process's rank in a data-parallel cell (bench.training.data_parallel); 0 writes the files
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.infer_batch_size is not None and self.infer_batch_size <= 0:
            raise BenchError(f"--infer-batch-size {self.infer_batch_size}: must be a positive number of images")

    @property
    def use_amp(self) -> bool:
        return self.amp if self.amp is not None else self.device.startswith("cuda")

    @property
    def use_channels_last(self) -> bool:
        return self.channels_last if self.channels_last is not None else self.device.startswith("cuda")

    @property
    def amp_dtype(self) -> torch.dtype:
        """bfloat16 where the device has it natively (Ampere and later; no loss scaling needed),
        else float16 (with a GradScaler) on CUDA."""
        if self.device.startswith("cuda") and not native_bf16(self.torch_device):
            return torch.float16
        return torch.bfloat16

    @property
    def amp_label(self) -> str:
        """The precision as a cache key and result field: ``False`` without AMP, else its dtype."""
        return str(self.amp_dtype).removeprefix("torch.") if self.use_amp else "False"

    @property
    def scales_loss(self) -> bool:
        """float16 AMP needs a GradScaler; bfloat16 and float32 do not."""
        return self.use_amp and self.amp_dtype == torch.float16

    def autocast(self) -> torch.autocast:
        """Mixed precision for a forward on this runtime's device (a no-op without AMP)."""
        return torch.autocast(self.torch_device.type, dtype=self.amp_dtype, enabled=self.use_amp)

    def inference_batch(self, batch_size: int) -> int:
        """The batch for forwards without gradient (evaluation, logits caches, the view bank,
        online teachers). They keep no activations for a backward, so the best size is the
        device's, not the training batch's: on the CPU small batches stay in cache (menghani_cnn's
        forward on 128 images took 155 ms whole and 86 ms in chunks of 32 on one core here, with
        bitwise the same logits there, within a float32 ulp on another CPU); on a GPU the cell's batch unless set."""
        if self.infer_batch_size is not None:
            return self.infer_batch_size
        return CPU_INFER_BATCH if self.torch_device.type == "cpu" else batch_size

    @property
    def writes(self) -> bool:
        """Whether this process writes the cell's files (rank 0 of a data-parallel cell)."""
        return self.rank == 0

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @classmethod
    def from_options(cls, device: str | None, amp: bool | None, workers: int | None, data_root: str | Path | None,
                     on_this_machine: bool = True, compile: bool = False, infer_batch_size: int | None = None,
                     keep_checkpoints: bool = False, progress_seconds: float = 30.0) -> "Runtime":
        """A run's Runtime from the command line. Cells that run elsewhere (on a cluster) choose
        their device on the compute node, so only the syntax of ``device`` is checked here."""
        if on_this_machine:
            chosen = checked_device(device)
        else:
            chosen = "cpu"
            if device:
                parse_device(device)
        if on_this_machine and workers is None:
            workers = allotted_cpus()
        return cls(device=chosen, amp=amp, workers=workers, data_root=Path(data_root) if data_root else None, compile=compile,
                   infer_batch_size=infer_batch_size, keep_checkpoints=keep_checkpoints,
                   progress_seconds=progress_seconds)

    def describe(self) -> dict[str, object]:
        name = torch.cuda.get_device_name(self.torch_device) if self.device.startswith("cuda") else "cpu"
        return {
            "device": self.device,
            "device_name": name,
            "amp": self.use_amp,
            "precision": str(self.amp_dtype).removeprefix("torch.") if self.use_amp else "float32",
            "compiled": self.compile,
            "infer_batch_size": self.infer_batch_size or 0,  # 0: the default (CPU_INFER_BATCH on the CPU)
            "channels_last": self.use_channels_last,
            "torch": torch.__version__,
            "cuda": torch.version.cuda or "",
            "threads": torch.get_num_threads(),
            "ranks": self.world_size,
            "host": os.uname().nodename,
            "git_commit": source_commit(),
        }


def parse_device(name: str) -> torch.device:
    """``torch.device(name)``, or a one-line error (not a failure per cell)."""
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise BenchError(f"--device {name}: {str(error).splitlines()[0]}") from None


def checked_device(name: str | None) -> str:
    """A device torch knows and this machine has (default: CUDA if there is one)."""
    if name is None:
        return default_device()
    device = parse_device(name)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise BenchError(f"--device {name}: no such CUDA device here ({torch.cuda.device_count()} visible)")
    return name


@functools.lru_cache(maxsize=1)
def source_commit() -> str:
    """HEAD of the git checkout holding the ``bench`` package, or ``"unknown"``. Computed once."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root:
        return "unknown"  # not a checkout, or bench installed inside somebody else's repository
    return lines[1]
