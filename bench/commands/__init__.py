"""The command layer: one function per ``bench`` subcommand, grouped by what it works on.

Each module has ``add_commands(subparsers)``, which adds its parsers and binds each to its
handler (``set_defaults(handler=...)``). Handlers parse nothing themselves and hold no logic of
their own beyond calling the libraries (plan, executors, collect, tracking, check, report) and
printing; the libraries never import this package. ``bench.cli`` builds the parser from the
modules listed here and turns errors into one line.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import pandas as pd

    from bench.matrix.schema import Matrix
    from bench.matrix.plan import Cell
    from bench.matrix.smoke import Smoke

DEFAULT_RESULTS = "runs"
MODULES = ("bench.commands.runs", "bench.commands.results", "bench.commands.cluster", "bench.commands.doctor")
Handler = Callable[[argparse.Namespace], int]


def results_dir(args: argparse.Namespace | None = None, given: str | None = None) -> Path:
    """--results (or ``given``), else $BENCH_RESULTS, else ./runs."""
    return Path(given or getattr(args, "results", None) or os.environ.get("BENCH_RESULTS") or DEFAULT_RESULTS)


ONLY_WITH_NEEDS = "only cells whose id, stage, method or arch matches (glob), plus what they need"


def matrix_args(p: argparse.ArgumentParser, only: bool = True, only_help: str = ONLY_WITH_NEEDS) -> None:
    """The arguments every command on a matrix takes."""
    from bench.matrix.limits import DEFAULT_MAX_CELLS

    p.add_argument("matrix", help="matrix YAML file (matrices/*.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a field for every cell (epochs=2) or one stage (teacher.epochs=2)")
    if only:
        p.add_argument("--only", metavar="PATTERN", help=only_help)
    p.add_argument("--max-cells", type=int, default=DEFAULT_MAX_CELLS, metavar="N",
                   help=f"refuse a matrix expanding to more cells (default {DEFAULT_MAX_CELLS:,})")


def smoke_args(p: argparse.ArgumentParser, help: str) -> None:
    """``--smoke`` and how it shortens cells: the same flags give the same rehearsal cells (run, status, cancel)."""
    from bench.matrix.smoke import DEFAULT_BATCH_SIZE, DEFAULT_BATCHES

    p.add_argument("--smoke", action="store_true", help=help)
    p.add_argument("--smoke-batches", type=int, default=DEFAULT_BATCHES, metavar="N", help="--smoke: batches per "
                   f"epoch and per evaluation set (default {DEFAULT_BATCHES})")
    p.add_argument("--smoke-batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N", help="--smoke: at most "
                   f"N images a batch (default {DEFAULT_BATCH_SIZE}; 0: the cells' own batch size)")


def rehearsal(args: argparse.Namespace) -> Smoke | None:
    """``--smoke``'s shortening of every cell, or None for a real run."""
    from bench.errors import BenchError
    from bench.matrix.smoke import Smoke

    if not getattr(args, "smoke", False):
        return None
    if args.smoke_batches <= 0 or args.smoke_batch_size < 0:
        raise BenchError("--smoke-batches must be >= 1 and --smoke-batch-size >= 0 (0: the cells' own batch size)")
    return Smoke(args.smoke_batches, args.smoke_batch_size or None)


def run_folder(args: argparse.Namespace, smoke: Smoke | None) -> Path:
    """--results, else a rehearsal's own folder beside the default results (``<results>-smoke``), else the default."""
    from bench.matrix.smoke import default_folder

    return default_folder(results_dir(args)) if smoke is not None and not args.results else results_dir(args)


def planned_cells(args: argparse.Namespace, smoke: Smoke | None = None) -> tuple[Matrix, list[Cell]]:
    """The matrix named on the command line and its cells (``--set`` applied; their rehearsals with ``smoke``)."""
    from bench.matrix.schema import load_matrix
    from bench.matrix.plan import DEFAULT_MAX_CELLS, Planner, parse_sets

    matrix = load_matrix(args.matrix)
    planner = Planner(matrix, parse_sets(args.set or []), getattr(args, "max_cells", DEFAULT_MAX_CELLS), smoke)
    cells = planner.cells()
    for stage in planner.trained_by_sets:
        print(f"bench: note: --set epochs makes stage {stage!r} train, which the matrix evaluates as it is (epochs: 0); "
              f"set other stages' epochs by name (--set STAGE.epochs=N) to leave it so", file=sys.stderr)
    return matrix, cells


def print_frame(frame: pd.DataFrame) -> None:
    """A table on stdout, whole (no elided rows or columns), four decimals."""
    from bench.text_table import frame_text

    print(frame_text(frame))
