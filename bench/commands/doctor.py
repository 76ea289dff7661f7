"""``bench doctor --gpu``: the GPU check (see ``bench.run.gpu_check``)."""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.commands import print_frame


def _bench(*argv: str) -> int:
    """``bench ARGV`` in a process of its own (as a user would type it; the command layer never
    calls back into the command line that dispatched it)."""
    return subprocess.run([sys.executable, "-m", "bench", *argv], check=False).returncode


def doctor_command(args: argparse.Namespace) -> int:
    from bench.run import gpu_check
    from bench.report.gate import read_baseline
    from bench.results.collect import collect

    if not args.gpu:
        print("bench doctor: nothing asked; try --gpu")
        return 0
    device = args.device or "cuda"
    if device.startswith("cuda"):
        summary = gpu_check.cuda_summary()
        if summary is None:
            print(gpu_check.no_cuda_line())
            return 0
        print(f"bench doctor --gpu: {summary}", flush=True)
    out = Path(args.results or tempfile.mkdtemp(prefix="bench-gpu-check-"))
    cpu, gpu = out / "cpu-reference", out / device.replace(":", "-")
    matrix = str(gpu_check.MATRIX)
    fast = ["--amp"] + (["--compile"] if args.compile else [])
    if _bench("run", matrix, "--results", str(cpu), "--device", "cpu") != 0 or \
            _bench("run", matrix, "--results", str(gpu), "--device", device, *(fast if device != "cpu" else [])) != 0:
        print(f"bench doctor --gpu: a run failed; see the cells' log.txt under {out}")
        return 1
    on_gpu = "on" if device != "cpu" else "off"
    print(f"\nci.yaml on {device} (AMP {on_gpu}, channels_last {on_gpu}, torch.compile {'on' if args.compile else 'off'}) "
          "beside the CPU and the committed CPU baseline:")
    print_frame(gpu_check.side_by_side(collect(cpu), collect(gpu), read_baseline(gpu_check.BASELINE)))
    print(f"\nresults under {out}; the gate on the {device} results:", flush=True)
    return _bench("check", str(gpu), "--baseline", str(gpu_check.BASELINE), "--tolerance", str(args.tolerance))


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="checks of this machine: --gpu runs the CI matrix on a GPU with AMP beside the CPU")
    p.add_argument("--gpu", action="store_true", help="run matrices/ci.yaml on CUDA (AMP, channels_last) and on the CPU, "
                                                       "compare speed and accuracy; says so and exits 0 without CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the trained models of the GPU run")
    p.add_argument("--device", help="the device to check (default cuda; cpu runs the same comparison on the CPU, for a dry run)")
    p.add_argument("--results", help="where the two runs go (default: a new temporary folder)")
    p.add_argument("--tolerance", type=float, default=0.03, help="the gate's tolerance on test accuracy (default 0.03)")
    p.set_defaults(handler=doctor_command)
