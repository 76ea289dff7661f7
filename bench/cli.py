"""The ``bench`` command line. Every user error is one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

import pandas as pd

from bench.errors import BenchError
from bench.plan import DEFAULT_MAX_CELLS, plan_name, select  # noqa: F401  (select: also used by the cluster commands)
from bench.registry import Registry

DEFAULT_RESULTS = "runs"
# Modules that add subcommands: each has add_commands(subparsers) and registers handlers with @command.
COMMAND_MODULES = ("bench.tracking", "bench.report", "bench.check", "bench.executors.slurm_commands")
Command = Callable[[argparse.Namespace], int]
COMMANDS: Registry[Command] = Registry("command")


def command(name: str) -> Callable[[Command], Command]:
    """Register a subcommand's handler (its parser is added by the module's add_commands)."""
    return COMMANDS.register(name)


def results_dir(args: argparse.Namespace | None = None, given: str | None = None) -> Path:
    """--results (or ``given``), else $BENCH_RESULTS, else ./runs."""
    return Path(given or getattr(args, "results", None) or os.environ.get("BENCH_RESULTS") or DEFAULT_RESULTS)


def planned_cells(args: argparse.Namespace):
    from bench.matrix import load_matrix
    from bench.plan import expand, parse_sets

    matrix = load_matrix(args.matrix)
    cells = expand(matrix, parse_sets(args.set or []), getattr(args, "max_cells", DEFAULT_MAX_CELLS))
    return matrix, cells


def plan_table(cells) -> pd.DataFrame:
    rows = []
    for c in cells:
        cfg = c.config
        rows.append({
            "id": c.id, "stage": cfg.stage, "method": cfg.method, "dataset": cfg.dataset + (f"+{cfg.unlabeled}" if cfg.unlabeled else ""),
            "arch": cfg.arch, "labels": f"n={cfg.n_per_class}" if cfg.n_per_class is not None else f"{cfg.label_fraction:g}",
            "seed": cfg.seed, "epochs": cfg.epochs, "lr": cfg.lr,
            "needs": " ".join(f"{role}:{dep}" for role, dep in sorted(cfg.deps.items())) or "-",
        })
    return pd.DataFrame(rows)


def _print_frame(frame: pd.DataFrame) -> None:
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250,
                           "display.float_format", lambda v: f"{v:.4f}"):
        print(frame.to_string(index=False))


@command("plan")
def plan_command(args: argparse.Namespace) -> int:
    matrix, cells = planned_cells(args)
    cells = select(cells, args.only)
    _print_frame(plan_table(cells))
    counts = pd.Series([c.stage for c in cells]).value_counts()
    print(f"\n{matrix.name}: {len(cells)} cells (" + ", ".join(f"{stage} {counts[stage]}" for stage in matrix.stages if stage in counts) + ")")
    return 0


def parse_device(name: str):
    """``torch.device(name)``, or a one-line error (not a failure per cell)."""
    import torch

    try:
        return torch.device(name)
    except RuntimeError as error:
        raise BenchError(f"--device {name}: {str(error).splitlines()[0]}") from None


def checked_device(name: str | None) -> str:
    """A device torch knows and this machine has."""
    import torch

    from bench.runtime import default_device

    if name is None:
        return default_device()
    device = parse_device(name)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise BenchError(f"--device {name}: no such CUDA device here ({torch.cuda.device_count()} visible)")
    return name


def runtime_from(args: argparse.Namespace, local: bool = True):
    """This run's Runtime. For a cluster the device is chosen on the compute node, so only the
    syntax of --device is checked on the login node."""
    from bench.runtime import Runtime

    if local:
        device = checked_device(args.device)
    else:
        device = "cpu"
        if args.device:
            parse_device(args.device)
    return Runtime(device=device, amp=args.amp, workers=args.workers, data_root=Path(args.data_root) if args.data_root else None)


def record_plan(store, name: str, matrix, cells, sets: list[str]) -> None:
    from bench.plan import describe_cell

    store.write_plan(name, matrix.source, matrix.paper, [{"id": c.id, "stage": c.stage, "describe": describe_cell(c)} for c in cells], sets)


@command("run")
def run_command(args: argparse.Namespace) -> int:
    from bench.collect import collect, summary
    from bench.executors import get_executor
    from bench.store import Store

    matrix, all_cells = planned_cells(args)
    cells = select(all_cells, args.only)
    store = Store(results_dir(args))
    if args.data_root is None and matrix.data_root:
        args.data_root = matrix.data_root
    name = plan_name(matrix.name, args.set)
    runtime = runtime_from(args, local=args.executor == "local")
    record_plan(store, name, matrix, all_cells, args.set or [])
    from bench.preflight import check_inputs, check_parents

    to_run = [c for c in cells if not store.cell(c.id).is_done()]
    check_inputs(to_run, runtime.data_root)
    check_parents(to_run, store)
    where = f"{runtime.device} (local executor)" if args.executor == "local" else f"SLURM (profile {args.profile})"
    print(f"{name}: {len(cells)} cells -> {store.root}/ on {where}", file=sys.stderr)
    executor = get_executor(args.executor)(**executor_options(args))
    result = executor.run(cells, store, runtime)
    table = collect(store.root)
    if not table.empty:
        mine = table[(table["matrix"] == name) & table["id"].isin({c.id for c in cells})]
        if not mine.empty:
            _print_frame(summary(mine))
    print(f"\n{len(result.done)} done, {len(result.skipped)} already done, {len(result.submitted)} submitted, "
          f"{len(result.failed)} failed, {len(result.blocked)} blocked", file=sys.stderr)
    for cell_id, reason in result.failed.items():
        print(f"  failed {cell_id}: {reason}", file=sys.stderr)
    return 0 if result.ok else 1


def executor_options(args: argparse.Namespace) -> dict[str, object]:
    options: dict[str, object] = {}
    if args.executor == "slurm":
        options.update(profile=args.profile, wait=not args.no_wait, device=args.device)
    return options


@command("collect")
def collect_command(args: argparse.Namespace) -> int:
    from bench.collect import collect, summary, write_tables

    root = Path(args.dir or results_dir(args))
    if not root.is_dir():
        raise BenchError(f"{root}: no such results folder")
    table = collect(root)
    if table.empty:
        raise BenchError(f"{root}: no finished cells to collect")
    csv_path, parquet_path = write_tables(table, root)
    _print_frame(summary(table))
    print(f"\n{len(table)} rows -> {csv_path}, {parquet_path}", file=sys.stderr)
    if args.mlflow:
        from bench.tracking import ingest_and_print

        ingest_and_print(root, args.tracking_uri)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Reproducibility matrix for semi-supervised knowledge distillation.")
    sub = parser.add_subparsers(dest="command", required=True)

    def matrix_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("matrix", help="matrix YAML file (matrices/*.yaml)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field for every cell (epochs=2) or one stage (teacher.epochs=2)")
        p.add_argument("--only", metavar="PATTERN", help="only cells whose id, stage, method or arch matches (glob), plus what they need")
        p.add_argument("--max-cells", type=int, default=DEFAULT_MAX_CELLS, metavar="N",
                       help=f"refuse a matrix expanding to more cells (default {DEFAULT_MAX_CELLS:,})")

    p = sub.add_parser("plan", help="print every cell of a matrix without running")
    matrix_args(p)

    p = sub.add_parser("run", help="run a matrix's cells in dependency order")
    matrix_args(p)
    p.add_argument("--executor", default="local", help="local (this process) or slurm (submitit)")
    p.add_argument("--profile", default="local", help="slurm: cluster profile name or path (slurm/NAME.yaml)")
    p.add_argument("--no-wait", action="store_true", help="slurm: submit and return")
    p.add_argument("--results", help=f"results folder (default ${{BENCH_RESULTS}} or ./{DEFAULT_RESULTS})")
    p.add_argument("--data-root", help="dataset root (default: the matrix's data_root, ${BENCH_DATA}, ~/.cache/bench/data)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision (default: on for CUDA)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for datasets streamed from disk")

    p = sub.add_parser("collect", help="collect finished cells into results.csv / results.parquet")
    p.add_argument("dir", nargs="?", help=f"results folder (default ${{BENCH_RESULTS}} or ./{DEFAULT_RESULTS})")
    p.add_argument("--mlflow", action=argparse.BooleanOptionalAction, default=True,
                   help="also ingest into MLflow, one run per cell, idempotent (default: on)")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default sqlite:///<DIR>/mlflow.db)")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch system's end of time) ends a run like Ctrl-C: same hint."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        return COMMANDS.get(args.command)(args)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"bench: {'terminated' if isinstance(stop, Terminated) else 'interrupted'}; run the same command again to resume",
              file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # python -m bench.cli: run the imported module, where the commands registered
    from bench.cli import main as _main

    sys.exit(_main())
