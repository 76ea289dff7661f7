"""``bench plan``, ``bench run`` and ``bench collect``: a matrix's cells, run, then tabled."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.commands import DEFAULT_RESULTS, matrix_args, planned_cells, print_frame, results_dir
from bench.errors import BenchError
from bench.text_table import format_table


def plan_command(args: argparse.Namespace) -> int:
    from collections import Counter

    from bench.plan import PLAN_COLUMNS, plan_rows, select

    matrix, cells = planned_cells(args)
    cells = select(cells, args.only)
    print(format_table(PLAN_COLUMNS, plan_rows(cells)))
    counts = Counter(c.stage for c in cells)
    print(f"\n{matrix.name}: {len(cells)} cells (" + ", ".join(f"{stage} {counts[stage]}" for stage in matrix.stages if stage in counts) + ")")
    if args.cost:
        print_teacher_cost(cells)
    return 0


def print_teacher_cost(cells: list) -> None:
    from bench.plan_cost import COLUMNS, teacher_passes, total

    costs = teacher_passes(cells)
    if not costs:
        print("\nteacher forwards: no distilling students in this selection")
        return
    rows = [cost.row() for cost in costs] + ([total(costs).row()] if len(costs) > 1 else [])
    print("\nteacher forwards, in passes over each student's training items (logits cache: 1 per teacher and items; "
          "online: 1 per student epoch; view bank: bank_views per bank, shared)")
    print(format_table(COLUMNS, rows))


def run_command(args: argparse.Namespace) -> int:
    from bench.collect import collect, summary
    from bench.executors import get_executor
    from bench.plan import plan_name, record_plan, select
    from bench.preflight import check_inputs, check_parents
    from bench.runtime import Runtime
    from bench.store import Store

    matrix, all_cells = planned_cells(args)
    cells = select(all_cells, args.only)
    store = Store(results_dir(args))
    executor_class = get_executor(args.executor)
    runtime = Runtime.from_options(args.device, args.amp, args.workers, args.data_root or matrix.data_root,
                                   on_this_machine=executor_class.runs_here, compile=args.compile,
                                   infer_batch_size=args.infer_batch_size)
    name = plan_name(matrix.name, args.set)
    record_plan(store, name, matrix, all_cells, args.set or [])
    to_run = [c for c in cells if not store.cell(c.id).is_done()]
    check_inputs(to_run, runtime.data_root, load=executor_class.runs_here)
    check_parents(to_run, store)
    executor = executor_class.from_args(args)
    print(f"{name}: {len(cells)} cells -> {store.root}/ on {executor.describe(runtime)}", file=sys.stderr)
    result = executor.run(cells, store, runtime)
    table = collect(store.root)
    if not table.empty:
        mine = table[(table["matrix"] == name) & table["id"].isin({c.id for c in cells})]
        if not mine.empty:
            print_frame(summary(mine))
    print(f"\n{len(result.done)} done, {len(result.skipped)} already done, {len(result.submitted)} submitted, "
          f"{len(result.failed)} failed, {len(result.blocked)} blocked", file=sys.stderr)
    for cell_id, reason in result.failed.items():
        print(f"  failed {cell_id}: {reason}", file=sys.stderr)
    return 0 if result.ok else 1


def collect_command(args: argparse.Namespace) -> int:
    from bench.collect import collect, summary, write_tables
    from bench.commands.results import ingest_and_print

    root = Path(args.dir or results_dir(args))
    if not root.is_dir():
        raise BenchError(f"{root}: no such results folder")
    table = collect(root)
    if table.empty:
        raise BenchError(f"{root}: no finished cells to collect")
    csv_path, parquet_path = write_tables(table, root)
    print_frame(summary(table))
    print(f"\n{len(table)} rows -> {csv_path}, {parquet_path}", file=sys.stderr)
    if args.mlflow:
        ingest_and_print(root, args.tracking_uri)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="print every cell of a matrix without running")
    matrix_args(p)
    p.add_argument("--cost", action="store_true", help="also count the teacher forwards the distilling students need, "
                   "as configured and with teacher_targets online or bank")
    p.set_defaults(handler=plan_command)

    p = sub.add_parser("run", help="run a matrix's cells in dependency order")
    matrix_args(p)
    p.add_argument("--executor", default="local", help="local (this process) or slurm (submitit)")
    p.add_argument("--profile", default="local", help="slurm: cluster profile name or path (slurm/NAME.yaml)")
    p.add_argument("--no-wait", action="store_true", help="slurm: submit and return")
    p.add_argument("--results", help=f"results folder (default ${{BENCH_RESULTS}} or ./{DEFAULT_RESULTS})")
    p.add_argument("--data-root", help="dataset root (default: the matrix's data_root, ${BENCH_DATA}, ~/.cache/bench/data)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision (default: on for CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the trained model (worth it on GPUs for long cells)")
    p.add_argument("--infer-batch-size", type=int, metavar="N", help="batch of forwards without gradient (evaluation, "
                   "teacher logits, view banks; default 32 on the CPU, the cell's batch_size on GPUs)")
    p.add_argument("--workers", type=int, help="DataLoader workers for datasets streamed from disk (default: the "
                   "CPUs the job has: SLURM_CPUS_PER_TASK, else this process's CPU affinity); changes no result")
    p.set_defaults(handler=run_command)

    p = sub.add_parser("collect", help="collect finished cells into results.csv / results.parquet")
    p.add_argument("dir", nargs="?", help=f"results folder (default ${{BENCH_RESULTS}} or ./{DEFAULT_RESULTS})")
    p.add_argument("--mlflow", action=argparse.BooleanOptionalAction, default=True,
                   help="also ingest into MLflow, one run per cell, idempotent (default: on)")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default sqlite:///<DIR>/mlflow.db)")
    p.set_defaults(handler=collect_command)
