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

    from bench.matrix import Matrix
    from bench.plan import Cell
    from bench.smoke import Smoke

DEFAULT_RESULTS = "runs"
MODULES = ("bench.commands.runs", "bench.commands.results", "bench.commands.cluster", "bench.commands.doctor")
Handler = Callable[[argparse.Namespace], int]


def results_dir(args: argparse.Namespace | None = None, given: str | None = None) -> Path:
    """--results (or ``given``), else $BENCH_RESULTS, else ./runs."""
    return Path(given or getattr(args, "results", None) or os.environ.get("BENCH_RESULTS") or DEFAULT_RESULTS)


ONLY_WITH_NEEDS = "only cells whose id, stage, method or arch matches (glob), plus what they need"


def matrix_args(p: argparse.ArgumentParser, only: bool = True, only_help: str = ONLY_WITH_NEEDS) -> None:
    """The arguments every command on a matrix takes."""
    from bench.plan_limits import DEFAULT_MAX_CELLS

    p.add_argument("matrix", help="matrix YAML file (matrices/*.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a field for every cell (epochs=2) or one stage (teacher.epochs=2)")
    if only:
        p.add_argument("--only", metavar="PATTERN", help=only_help)
    p.add_argument("--max-cells", type=int, default=DEFAULT_MAX_CELLS, metavar="N",
                   help=f"refuse a matrix expanding to more cells (default {DEFAULT_MAX_CELLS:,})")


def planned_cells(args: argparse.Namespace, smoke: Smoke | None = None) -> tuple[Matrix, list[Cell]]:
    """The matrix named on the command line and its cells (``--set`` applied; their rehearsals with ``smoke``)."""
    from bench.matrix import load_matrix
    from bench.plan import DEFAULT_MAX_CELLS, Planner, parse_sets

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
