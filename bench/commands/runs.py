"""``bench plan``, ``bench run`` and ``bench collect``: a matrix's cells, run, then tabled."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.commands import (DEFAULT_RESULTS, matrix_args, planned_cells, print_frame, rehearsal, results_dir, run_folder,
                            smoke_args)
from bench.errors import BenchError
from bench.text_table import format_table


def plan_command(args: argparse.Namespace) -> int:
    from collections import Counter

    from bench.matrix.plan import PLAN_COLUMNS, plan_rows, select

    matrix, cells = planned_cells(args)
    cells = select(cells, args.only)
    print(format_table(PLAN_COLUMNS, plan_rows(cells)))
    counts = Counter(c.stage for c in cells)
    print(f"\n{matrix.name}: {len(cells)} cells (" + ", ".join(f"{stage} {counts[stage]}" for stage in matrix.stages if stage in counts) + ")")
    if args.cost:
        print_teacher_cost(cells)
        print_cost_estimate(cells)
    return 0


def print_cost_estimate(cells: list, seconds=None, heading: str | None = None) -> None:
    """Per stage: images, GPU-hours (or hours at measured rates), disk and host memory."""
    from bench.matrix.cost_estimate import ASSUMPTION, COLUMNS, estimate, stage_rows

    works = estimate(cells)
    columns = COLUMNS if seconds is None else tuple("hours here" if c == "GPU-hours" else c for c in COLUMNS)
    print(f"\n{heading or ASSUMPTION}")
    print(format_table(columns, stage_rows(works, seconds)))


def print_teacher_cost(cells: list) -> None:
    from bench.matrix.plan_cost import COLUMNS, teacher_passes, total

    costs = teacher_passes(cells)
    if not costs:
        print("\nteacher forwards: no distilling students in this selection")
        return
    rows = [cost.row() for cost in costs] + ([total(costs).row()] if len(costs) > 1 else [])
    print("\nteacher forwards, in passes over each student's training items (logits cache: 1 per teacher and items; "
          "online: 1 per student epoch; view bank: bank_views per bank, shared)")
    print(format_table(COLUMNS, rows))
    from bench.matrix.cost_estimate import BANK_COLUMNS, bank_rows

    banks = bank_rows(cells)
    if banks:
        print("\nview banks, each built once beside its teacher, and their size on disk before they are built")
        print(format_table(BANK_COLUMNS, banks))


def run_command(args: argparse.Namespace) -> int:
    from bench.results.collect import collect, summary
    from bench.executors import get_executor
    from bench.matrix.plan import plan_name, record_plan, select
    from bench.matrix.preflight import check_inputs, check_parents
    from bench.training.runtime import Runtime
    from bench.matrix.smoke import claim_folder
    from bench.results.store import Store

    smoke = rehearsal(args)
    matrix, all_cells = planned_cells(args, smoke)
    cells = select(all_cells, args.only)
    store = Store(run_folder(args, smoke))
    executor_class = get_executor(args.executor)
    runtime = Runtime.from_options(args.device, args.amp, args.workers, args.data_root or matrix.data_root,
                                   on_this_machine=executor_class.runs_here, compile=args.compile,
                                   infer_batch_size=args.infer_batch_size, keep_checkpoints=args.keep_checkpoints,
                                   progress_seconds=args.log_every)
    name = plan_name(matrix.name, args.set, smoke)
    claim_folder(store, smoke is not None)
    record_plan(store, name, matrix, all_cells, args.set or [], smoke)
    to_run = [c for c in cells if not store.cell(c.id).is_done()]
    check_inputs(to_run, runtime.data_root, load=executor_class.runs_here)
    check_parents(to_run, store, all_cells)
    executor = executor_class.from_args(args)
    print(f"{name}: {len(cells)} cells -> {store.root}/ on {executor.describe(runtime)}", file=sys.stderr)
    executor.echo = display = run_display(args, cells, executor_class.runs_here)
    try:
        result = executor.run(cells, store, runtime)
    finally:
        display.close()
    table = collect(store.root)
    if not table.empty and smoke is None:
        mine = table[(table["matrix"] == name) & table["id"].isin({c.id for c in cells})]
        if not mine.empty:
            print_frame(summary(mine))
    print(f"\n{len(result.done)} done, {len(result.skipped)} already done, {len(result.submitted)} submitted, "
          f"{len(result.failed)} failed, {len(result.blocked)} blocked", file=sys.stderr)
    for cell_id, reason in result.failed.items():
        print(f"  failed {cell_id}: {reason}", file=sys.stderr)
    if result.done or result.skipped:
        print_report_end(store.root, name)
    if smoke is not None and not result.submitted:
        finish_rehearsal(args, matrix, cells, table, store)
    return 0 if result.ok else 1


def run_display(args: argparse.Namespace, cells: list, runs_here: bool):
    """Live progress on a terminal for cells run here (their work from the plan, for the ETA);
    plain lines otherwise (a cluster's jobs report through ``bench status --watch``)."""
    from bench.console import echo
    from bench.live import open_display, wants_live

    if not runs_here or not wants_live(args.no_progress):
        return echo
    from bench.matrix.cost_estimate import work_units

    return open_display(args.no_progress, work_units(cells))


def finish_rehearsal(args: argparse.Namespace, matrix, ran: list, table, store) -> None:
    """After a rehearsal (whose report the run has written): its tables, then what the real run
    will cost, priced at the GPU assumption and at the rates the rehearsal measured (this
    machine, its small batches)."""
    import math

    from bench.results.collect import write_tables
    from bench.matrix.plan import expand, parse_sets
    from bench.matrix.plan import structural_key
    from bench.matrix.smoke import SHORTENED

    if not table.empty:
        csv_path, _ = write_tables(table, store.root)
        print(f"tables: {csv_path} (and .parquet)", file=sys.stderr)
    real = expand(matrix, parse_sets(args.set or []), args.max_cells)
    rehearsal_of = {structural_key(s): s.id for s in ran}
    wanted = [r for r in real if structural_key(r) in rehearsal_of]
    if len(wanted) > len(ran):
        print(f"{len(ran)} rehearsal cells stood for {len(wanted)} cells of the matrix (cells differing only in "
              f"{', '.join(SHORTENED[:3])} are one at smoke scale)", file=sys.stderr)
    measured: dict[str, tuple[float, float]] = {}
    if not table.empty:
        for row in table[table["id"].isin(set(rehearsal_of.values()))].to_dict("records"):
            measured[row["id"]] = (float(row.get("train_images_per_s", math.nan)), float(row.get("infer_images_per_s", math.nan)))
    rates = {r.id: measured.get(rehearsal_of[structural_key(r)], (math.nan, math.nan)) for r in wanted}
    print_cost_estimate(wanted)
    print_cost_estimate(wanted, lambda work: work.seconds_at(*rates.get(work.cell.id, (math.nan, math.nan))),
                        heading=f"the same work at the rates this rehearsal measured ({', '.join(sorted(set(table['device']))) if 'device' in table else 'here'}, "
                                "its small batches and few steps: an upper bound for a GPU, a rough one for this machine)")


def print_report_end(root: Path, matrix: str) -> None:
    """The run's product: its report's summary line, where report.html is, and how to browse the runs."""
    from bench.report.build import report_matrix
    from bench.results.tracking_uri import default_tracking_uri

    try:
        written = report_matrix(root, matrix)
    except BenchError as error:
        print(f"report: not written ({error})", file=sys.stderr)
        return
    print(f"\n{matrix}: {written.summary or 'no paper named, so no verdicts'}")
    print(f"report: {written.html}")
    print(f"MLflow: bench collect {root} && mlflow ui --backend-store-uri {default_tracking_uri(root)}")


def collect_command(args: argparse.Namespace) -> int:
    from bench.results.collect import collect, summary, write_tables
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
    p.add_argument("--no-progress", action="store_true", help="plain lines even on a terminal (no live display)")
    p.add_argument("--log-every", type=float, default=30.0, metavar="SECONDS", help="at most one in-epoch progress "
                   "line per SECONDS in the log (default 30)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep a done cell's checkpoint.pt (and .prev); "
                   "by default they are removed once model.pt and the result are written")
    smoke_args(p, "rehearse: every cell for a few batches (1 epoch; 0 stays 0) into a folder of its own (default "
                  "<results>-smoke), then its report and the cost of the real run")
    p.set_defaults(handler=run_command)

    p = sub.add_parser("collect", help="collect finished cells into results.csv / results.parquet")
    p.add_argument("dir", nargs="?", help=f"results folder (default ${{BENCH_RESULTS}} or ./{DEFAULT_RESULTS})")
    p.add_argument("--mlflow", action=argparse.BooleanOptionalAction, default=True,
                   help="also ingest into MLflow, one run per cell, idempotent (default: on)")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default sqlite:///<DIR>/mlflow.db)")
    p.set_defaults(handler=collect_command)
