"""``bench ingest`` and ``bench check``: results into MLflow, and the regression gate."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.commands import DEFAULT_RESULTS, results_dir
from bench.errors import BenchError
from bench.results.metrics import METRICS


def report_command(args: argparse.Namespace) -> int:
    from bench.report.build import report

    for path in report(args.target, results_dir(given=args.results), args.out):
        print(path)
    return 0


def ingest_command(args: argparse.Namespace) -> int:
    ingest_and_print(Path(args.dir) if args.dir else results_dir(args), args.tracking_uri)
    return 0


def ingest_and_print(root: Path, tracking_uri: str | None) -> None:
    """Ingest and tell the user where to look (used by ``bench ingest`` and ``bench collect``)."""
    from bench.results.ingest import ingest
    from bench.results.tracking_uri import is_http, scheme

    summary = ingest(root, tracking_uri)
    if summary.total == 0:
        broken = f" ({len(summary.unreadable)} unreadable, see above)" if summary.unreadable else ""
        print(f"{root}: no finished cells to ingest{broken}", file=sys.stderr)
        return
    for name, experiment_id in sorted(summary.experiments.items()):
        where = f": {summary.tracking_uri.rstrip('/')}/#/experiments/{experiment_id}" if is_http(summary.tracking_uri) else ""
        print(f"  {name} (experiment {experiment_id}){where}", file=sys.stderr)
    print(f"{summary.total} cells: {summary}", file=sys.stderr)
    if scheme(summary.tracking_uri) == "sqlite":
        print(f"view: mlflow ui --backend-store-uri {summary.tracking_uri}", file=sys.stderr)


def check_command(args: argparse.Namespace) -> int:
    from bench.matrix.smoke import is_smoke_folder

    if not args.baseline and not args.verdicts:
        raise BenchError("bench check: give --baseline (cells within tolerance), --verdicts (figures that stay reproduced), or both")
    if args.update and is_smoke_folder(Path(args.results)):
        raise BenchError(f"{args.results}: a rehearsal's folder (bench run --smoke): its cells measure nothing and are "
                         "never a baseline")
    codes = [verdict_check(args)] if args.verdicts else []
    if args.baseline:
        codes.append(metric_check(args))
    return max(codes)


def verdict_check(args: argparse.Namespace) -> int:
    """``--verdicts FILE``: every figure reading reproduced in FILE is still reproduced."""
    from bench.report.verdict_gate import current_verdicts, lost, read_verdicts, write_verdicts

    path = Path(args.verdicts)
    if args.update:
        frame = current_verdicts(Path(args.results))
        write_verdicts(frame, path)
        print(f"bench check: wrote {path}: {len(frame)} figure readings, {int((frame['verdict'] == 'reproduced').sum())} reproduced")
        return 0
    baseline = read_verdicts(path)
    failures, notes = lost(baseline, current_verdicts(Path(args.results)))
    for note in notes:
        print(f"note: {note}")
    if failures:
        print(f"bench check: FAILED against {path}: {len(failures)} verdict(s) lost")
        for line in failures:
            print(f"  {line}")
        return 1
    kept = int((baseline["verdict"] == "reproduced").sum())
    print(f"bench check: OK — the {kept} reproduced figure reading(s) of {path} are still reproduced")
    return 0


def metric_check(args: argparse.Namespace) -> int:
    from bench.report.gate import (GATE_METRIC, build_baseline, collect_results, compare, matrix_to_update, read_baseline, shown,
                             write_baseline)
    from bench.results.store import Store

    results, path = Path(args.results), Path(args.baseline)
    if not args.tolerance >= 0:
        raise BenchError(f"--tolerance must be >= 0, not {args.tolerance}")
    if args.update:
        table, _ = collect_results(results)
        matrix = matrix_to_update(table, path, args.matrix)
        rehearsed = table[table["matrix"] == matrix].get("smoke_batches")
        if "@smoke" in matrix or (rehearsed is not None and rehearsed.notna().any()):
            raise BenchError(f"{results}: {matrix} holds rehearsal cells (bench run --smoke): never a baseline")
        frame = build_baseline(table, matrix, args.metric)
        write_baseline(frame, path)
        plans = Store(results).plans()
        planned = {c["id"] for c in plans.get(matrix, {}).get("cells", [])}
        not_done = planned - set(frame["id"])
        if not_done:
            print(f"bench check: note: {len(not_done)} planned cell(s) of {matrix} are not done and not in the baseline: "
                  f"{', '.join(sorted(not_done))}", file=sys.stderr)
        print(f"bench check: wrote {path}: {len(frame)} cells ({frame['group'].nunique()} configs) of {matrix}, "
              f"{args.metric}")
        return 0

    baseline = read_baseline(path)  # before collecting: a garbage baseline fails first, and fast
    rows = baseline[baseline[GATE_METRIC] == args.metric]
    if rows.empty:
        have = ", ".join(shown(m) for m in sorted(set(baseline[GATE_METRIC]))) or "none"
        raise BenchError(f"{path}: no {args.metric} baseline (it has: {have}); use --metric or --update")
    table, unreadable = collect_results(results)
    outcome = compare(rows, table, args.metric, args.tolerance, unreadable)
    for note in outcome["notes"]:
        print(f"note: {note}")
    where = f"{path} ({args.metric}, tolerance {args.tolerance:g})"
    if outcome["failures"]:
        print(f"bench check: FAILED against {where}: {len(outcome['failures'])} problem(s)")
        for line in outcome["failures"]:
            print(f"  {line}")
        return 1
    print(f"bench check: OK — {len(rows)} cells ({len(outcome['checked'])} configs) of "
          f"{', '.join(sorted(set(rows['matrix'])))} within tolerance of {where}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="log finished cells into MLflow (one run per cell; safe to repeat)")
    p.add_argument("dir", nargs="?", help=f"results folder (default ${{BENCH_RESULTS}} or ./{DEFAULT_RESULTS})")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking URI, e.g. http://127.0.0.1:5000 (default sqlite:///<DIR>/mlflow.db)")
    p.set_defaults(handler=ingest_command)

    p = sub.add_parser(
        "report", help="paper figures reported vs reproduced, throughput, plots (markdown, HTML, CSV, PNG)",
        description="Write <out>/<matrix>/report.md, report.html, one CSV per paper table, cells.csv and PNG plots.")
    p.add_argument("target", metavar="MATRIX_OR_RESULTS", help="a matrix YAML file, or a results folder (every matrix in it)")
    p.add_argument("--results", help=f"results folder for a matrix file (default ${{BENCH_RESULTS}} or ./{DEFAULT_RESULTS})")
    p.add_argument("--out", help="report root; files go to OUT/<matrix>/ (default <results>/report)")
    p.set_defaults(handler=report_command)
    p = sub.add_parser(
        "check", help="compare a results folder with a baseline CSV; exit 1 on regressions, missing cells or lost verdicts",
        description="Exit 0 when every baseline cell is done and within tolerance (--baseline) and every figure "
                    "reading reproduced in the verdict baseline still is (--verdicts), 1 otherwise. Per group of "
                    "seeds, a drop larger than tolerance + 2*sqrt(s_b^2/n_b + s_now^2/n_now) is a regression.")
    p.add_argument("results", metavar="RESULTS", help="results folder")
    p.add_argument("--baseline", help="baseline CSV of cells (results/baselines/<matrix>.csv)")
    p.add_argument("--verdicts", metavar="FILE", help="verdict baseline CSV: fail when a figure reading reproduced "
                   "there is not any more (with --update: write it from RESULTS)")
    p.add_argument("--tolerance", type=float, default=0.02, help="absolute tolerance on the metric (default 0.02)")
    p.add_argument("--metric", default="test_acc", choices=METRICS, help="metric to compare (default test_acc)")
    p.add_argument("--update", action="store_true", help="write/overwrite the baseline from RESULTS and exit 0")
    p.add_argument("--matrix", help="--update: matrix to take (default: the baseline file's stem, or the only matrix)")
    p.set_defaults(handler=check_command)
