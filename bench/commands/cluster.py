"""``bench status``, ``bench cancel`` and ``bench prefetch``: the login-node side of a cluster run."""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from typing import TYPE_CHECKING

from bench.commands import ONLY_WITH_NEEDS, matrix_args, planned_cells, print_frame, rehearsal, run_folder, smoke_args
from bench.errors import BenchError
from bench.results.store import Store, read_json

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


ACTIVE_LOG_SECONDS = 120.0


def _recently_logged(log: Path) -> bool:
    """A cell whose log had a line in the last two minutes, the last not an interruption."""
    import time

    try:
        if time.time() - log.stat().st_mtime >= ACTIVE_LOG_SECONDS:
            return False
        with open(log, "rb") as handle:
            handle.seek(max(0, log.stat().st_size - 300))
            return b"interrupted" not in handle.read().splitlines()[-1]
    except (OSError, IndexError):
        return False


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
        elif _recently_logged(handle.log):  # run by a local `bench run` (its log gets a line at least every --log-every)
            status = "running"
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
    from bench.matrix.plan import select

    smoke = rehearsal(args)
    matrix, cells = planned_cells(args, smoke)
    cells = select(cells, args.only)
    store = Store(run_folder(args, smoke))
    if args.watch:
        return watch_status(matrix.name, cells, store, args.interval)
    table = cell_status(store, cells)
    print_frame(table)
    print(f"\n{status_summary(matrix.name, table)}")
    return 0


SETTLED = ("done", "failed", "blocked", "cancelled", "timeout", "out_of_memory", "node_fail", "not started", "interrupted")
"""States in which a cell will not move without a new `bench run`: `--watch` ends when every cell is in one."""


def status_summary(name: str, table: pd.DataFrame) -> str:
    """``m: 3 done, 1 running, ...`` and, per stage, its done count."""
    counts = table.status.value_counts()
    stages = table.groupby("stage", sort=False).status.agg(lambda s: f"{int((s == 'done').sum())}/{len(s)}")
    return (f"{name}: " + ", ".join(f"{n} {s}" for s, n in counts.items())
            + "; done per stage: " + ", ".join(f"{stage} {text}" for stage, text in stages.items()))


def with_epochs(store: Store, cells, table: pd.DataFrame) -> pd.DataFrame:
    """An ``epoch`` column: epochs finished of the cell's epochs, for cells that have started."""
    from bench.results.store import UnreadableFile

    epochs = []
    for cell, status in zip(cells, table.status):
        metrics = store.cell(cell.id).metrics
        try:
            done = len(read_json(metrics)) if status != "done" and metrics.exists() else None
        except (UnreadableFile, TypeError, BenchError):
            done = None
        epochs.append(f"{cell.config.epochs}/{cell.config.epochs}" if status == "done"
                      else f"{done}/{cell.config.epochs}" if done is not None else "")
    return table.assign(epoch=epochs)


def watch_eta(store: Store, cells, table: pd.DataFrame, work: dict[str, float], now: float) -> float | None:
    """Seconds left at the pace since the first of these cells started (its config.json is written first)."""
    from bench.progress import eta_from_finished

    started = [store.cell(c.id).config.stat().st_mtime for c in cells if store.cell(c.id).config.exists()]
    done = set(table.loc[table.status == "done", "id"])
    if not started:
        return None
    return eta_from_finished(sum(work[c] for c in done), min(started), now,
                             sum(work[c.id] for c in cells if c.id not in done))


def watch_status(name: str, cells, store: Store, interval: float) -> int:
    """The status table, refreshed every ``interval`` seconds (in place on a terminal, printed
    again when it changes elsewhere), until no cell is queued or running."""
    import time

    from bench.matrix.cost_estimate import work_units
    from bench.live import wants_live
    from bench.progress import duration
    from bench.text_table import frame_text

    if not interval > 0:
        raise BenchError(f"--interval {interval}: must be a positive number of seconds")
    work = work_units(cells)
    live = None
    if wants_live(False):
        from rich.console import Console
        from rich.live import Live

        live = Live(console=Console(highlight=False), refresh_per_second=1, auto_refresh=False)
        live.start()
    last = ""
    try:
        while True:
            table = cell_status(store, cells)
            shown = with_epochs(store, cells, table)
            text = (f"{frame_text(shown)}\n\n{status_summary(name, table)}\n"
                    f"ETA {duration(watch_eta(store, cells, table, work, time.time()))} "
                    f"(at the pace since the first cell started)")
            if live is not None:
                from rich.text import Text

                live.update(Text(text), refresh=True)
            elif text != last:
                print(text, flush=True)
            last = text
            if table.status.isin(SETTLED).all():
                break
            time.sleep(interval)
    finally:
        if live is not None:
            live.stop()
    return 0 if (table.status == "done").all() else 1


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
    from bench.matrix.plan import matching

    smoke = rehearsal(args)
    _, cells = planned_cells(args, smoke)
    store = Store(run_folder(args, smoke))
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

    from bench.data.dataset_registry import SPLITS

    from bench.data.datasets import locate_dataset, prefetch_dataset
    from bench.errors import DataNotFoundError
    from bench.models.weights import cached_weights, prefetch_weights
    from bench.matrix.preflight import encoder_file_path, needed_inputs

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
        smoke_args(p, "the rehearsal's cells (bench run --smoke, with the same --smoke-* values), not the real ones")
        p.set_defaults(handler=handler)
    parsers["status"].add_argument("--watch", action="store_true", help="refresh the table (in place on a terminal) "
                                   "until no cell is queued or running; exit 0 when all are done, else 1")
    parsers["status"].add_argument("--interval", type=float, default=5.0, metavar="SECONDS", help="--watch: seconds "
                                   "between refreshes (default 5)")
    parsers["cancel"].add_argument("--whole-jobs", action="store_true",
                                   help="also cancel packed jobs that run cells --only does not match with the matched ones")
    p = sub.add_parser("prefetch", help="download the datasets and pretrained weights a matrix needs and `bench run` "
                                         "does not find yet (login node)")
    matrix_args(p, only=False)
    p.add_argument("--data-root", help="dataset root, as for `bench run` (default: the matrix's data_root, "
                                       "${BENCH_DATA}, ~/.cache/bench/data)")
    p.set_defaults(handler=prefetch_command)
