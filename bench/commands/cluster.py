"""``bench status``, ``bench cancel`` and ``bench prefetch``: the login-node side of a cluster run."""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from typing import TYPE_CHECKING

from bench.commands import ONLY_WITH_NEEDS, matrix_args, planned_cells, print_frame, results_dir
from bench.errors import BenchError
from bench.store import Store

if TYPE_CHECKING:
    import pandas as pd

    from bench.executors.slurm import JobRecord

LOG_LINES = 5


def _tail(path: Path, lines: int = LOG_LINES) -> str:
    if not path.exists():
        return ""
    return " | ".join(line.strip() for line in path.read_text(errors="replace").splitlines()[-lines:] if line.strip())


def in_running_pack(store: Store, cell_id: str, record) -> str:
    """Where a cell stands in a running job of several cells: done, failed or blocked in this job,
    running (the first of the rest), or pending behind the ones ahead of it."""
    from bench.executors.slurm import failure_in_job
    from bench.executors.slurm_job import BLOCKED

    ahead = 0
    for other in record.pack:
        reason = failure_in_job(store, other, record)
        if store.cell(other).is_done() or reason is not None:
            if other == cell_id:
                return "done" if reason is None else "blocked" if reason.startswith(BLOCKED) else "failed"
            continue
        if other == cell_id:
            return "running" if ahead == 0 else f"pending (in its job, {ahead} ahead)"
        ahead += 1
    return "running"


def cell_status(store: Store, cells) -> pd.DataFrame:
    """done / running / pending / failed / blocked / cancelled / not started, with the failure's
    last lines. A cell in a running job of several cells says where it stands in that job."""
    import pandas as pd

    from bench.executors.cell_output import read_failure
    from bench.executors.slurm import failure_in_job, job_states
    from bench.executors.slurm_job import BLOCKED

    states = job_states(store, [c.id for c in cells if not store.cell(c.id).is_done()])
    rows = []
    for cell in cells:
        handle = store.cell(cell.id)
        job, detail = "", ""
        if handle.is_done():
            status = "done"
        elif cell.id in states:
            state, record = states[cell.id]
            job = record.job_id
            status = in_running_pack(store, cell.id, record) if state == "RUNNING" and len(record.pack) > 1 else state.lower()
            reason = failure_in_job(store, cell.id, record) if status in ("failed", "completed") else None
            if reason is not None:
                status = "blocked" if reason.startswith(BLOCKED) else "failed"
        elif handle.failure.exists():
            status = "failed"
        elif handle.checkpoint.exists():
            status = "interrupted"
        else:
            status = "not started"
        if status in ("failed", "blocked", "cancelled", "timeout", "out_of_memory", "node_fail", "preempted"):
            written = read_failure(handle)
            reason = written["reason"] if written is not None else ""
            stderr = _tail(Path(states[cell.id][1].job().paths.stderr)) if cell.id in states else ""
            detail = "; ".join(x for x in (reason, _tail(handle.log), stderr) if x)
        rows.append({"id": cell.id, "stage": cell.stage, "arch": cell.config.arch, "status": status, "job": job, "detail": detail[:300]})
    return pd.DataFrame(rows)


def status_command(args: argparse.Namespace) -> int:
    from bench.plan import select

    matrix, cells = planned_cells(args)
    cells = select(cells, args.only)
    table = cell_status(Store(results_dir(args)), cells)
    print_frame(table)
    counts = table.status.value_counts()
    print(f"\n{matrix.name}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


def jobs_to_cancel(store: Store, chosen: set[str], records: dict[str, JobRecord]) -> tuple[list[str], dict[str, list[str]]]:
    """The active jobs that run only chosen (or done) cells, and, by job, the cells not chosen and
    not done that a packed job would take down with the chosen ones (SLURM cancels whole jobs)."""
    clean: set[str] = set()
    shared: dict[str, list[str]] = {}
    for record in records.values():
        others = [i for i in record.pack if i not in chosen and not store.cell(i).is_done()]
        if others:
            shared[record.job_id] = others
        else:
            clean.add(record.job_id)
    return sorted(clean), shared


def cancel_command(args: argparse.Namespace) -> int:
    """Cancel the queued or running jobs of the cells ``--only`` matches (all of the matrix's
    without it), not the cells they need. A packed job that also runs cells not matched is left
    queued, with a line naming them, unless ``--whole-jobs``."""
    from bench.executors.slurm import ACTIVE, job_states
    from bench.plan import matching

    _, cells = planned_cells(args)
    store = Store(results_dir(args))
    chosen = matching(cells, args.only) if args.only is not None else cells
    states = job_states(store, [c.id for c in chosen if not store.cell(c.id).is_done()])
    records = {record.job_id: record for state, record in states.values() if state in ACTIVE}
    active, shared = jobs_to_cancel(store, {c.id for c in chosen}, records)
    for job_id, others in sorted(shared.items()):
        if args.whole_jobs:
            print(f"job {job_id} also runs {len(others)} cell(s) not selected, cancelled with it: {' '.join(others)}")
        else:
            print(f"job {job_id} left queued: it also runs {len(others)} cell(s) not selected ({' '.join(others[:4])}"
                  f"{' ...' if len(others) > 4 else ''}); --whole-jobs cancels it with them")
    if args.whole_jobs:
        active = sorted({*active, *shared})
    if not active:
        print("nothing cancelled" if shared else "nothing queued")
        return 0
    result = subprocess.run(["scancel", *active], capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"scancel failed: {result.stderr.strip()}")
    print(f"cancelled {len(active)} job(s): {' '.join(active)}")
    return 0


def prefetch_command(args: argparse.Namespace) -> int:
    """Put every dataset split and pretrained weight file a matrix needs where `bench run` looks.

    What `bench run` would already find is skipped, so the command is cheap to repeat and works
    offline once everything is there. A failure does not stop the others: every item is tried,
    so one run on the login node reports every problem, each on its own line; then exit 2.
    """
    import functools
    import sys
    from collections.abc import Callable

    from bench.data.datasets import SPLITS, locate_dataset, prefetch_dataset
    from bench.errors import DataNotFoundError
    from bench.models import cached_weights, prefetch_weights
    from bench.preflight import encoder_file_path, needed_inputs

    matrix, cells = planned_cells(args)
    root = args.data_root or matrix.data_root

    def places(find: Callable[..., dict[str, Path]], name: str, wanted: list[str]) -> str:
        """One path when every split is in the same place, else ``path (split), ...``."""
        where = find(name, root, wanted)
        if len(set(where.values())) == 1:
            return str(next(iter(where.values())))
        return ", ".join(f"{path} ({split})" for split, path in where.items())

    def one(what: str, look: Callable[[], str], fetch: Callable[[], str]) -> tuple[str, bool]:
        """(the line to print, whether it was downloaded): what `bench run` already finds is only reported."""
        try:
            return f"{what}: found at {look()}", False
        except DataNotFoundError:
            pass
        return f"{what}: downloaded to {fetch()}", True

    datasets, weights, files = needed_inputs(cells)  # the very splits and weight files `bench run` checks
    needed = {(name, split) for name, split, _ in datasets}
    splits = {name: [s for s in SPLITS if (name, s) in needed] for name in sorted({name for name, _ in needed})}
    items: list[tuple[str, Callable[[], str], Callable[[], str]]] = [
        (f"dataset {name}", functools.partial(places, locate_dataset, name, wanted),
         functools.partial(places, prefetch_dataset, name, wanted))
        for name, wanted in splits.items()
    ] + [(f"weights {arch}", functools.partial(cached_weights, arch), functools.partial(prefetch_weights, arch))
         for arch in sorted(weights)] + [
        (f"encoder file {name}", lambda name=name: str(encoder_file_path(name)),
         lambda name=name: str(encoder_file_path(name))) for name in sorted(files)]
    downloaded = failed = 0
    for what, look, fetch in items:
        try:
            line, fetched = one(what, look, fetch)
        except BenchError as error:
            failed += 1
            print(f"bench: {error}", file=sys.stderr, flush=True)
            continue
        print(line, flush=True)
        downloaded += fetched
    if failed:
        raise BenchError(f"prefetch: {failed} of {len(items)} failed (see above), {len(items) - failed} ready; "
                         "fix those and run `bench prefetch` again")
    print(f"prefetch: {len(splits)} dataset(s) and {len(weights)} weight file(s) ready "
          f"({len(items) - downloaded} found, {downloaded} downloaded); compute nodes can now run with HF_HUB_OFFLINE=1")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    parsers = {}
    for name, text, handler, only_help in (
            ("status", "done / running / pending / failed per cell", status_command, ONLY_WITH_NEEDS),
            ("cancel", "cancel a matrix's queued SLURM jobs", cancel_command,
             "only the jobs of cells whose id, stage, method or arch matches (glob), not of what they need")):
        p = parsers[name] = sub.add_parser(name, help=text)
        matrix_args(p, only_help=only_help)
        p.add_argument("--results", help="results folder (as for bench run)")
        p.set_defaults(handler=handler)
    parsers["cancel"].add_argument("--whole-jobs", action="store_true",
                                   help="also cancel packed jobs that run cells --only does not match with the matched ones")
    p = sub.add_parser("prefetch", help="download the datasets and pretrained weights a matrix needs and `bench run` "
                                         "does not find yet (login node)")
    matrix_args(p, only=False)
    p.add_argument("--data-root", help="dataset root, as for `bench run` (default: the matrix's data_root, "
                                       "${BENCH_DATA}, ~/.cache/bench/data)")
    p.set_defaults(handler=prefetch_command)
