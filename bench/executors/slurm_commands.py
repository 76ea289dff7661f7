"""``bench status``, ``bench cancel`` and ``bench prefetch``: the login-node side of a cluster run."""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pandas as pd

from bench.cli import command, planned_cells, results_dir, select, _print_frame
from bench.errors import BenchError
from bench.store import Store, read_json

LOG_LINES = 5


def _tail(path: Path, lines: int = LOG_LINES) -> str:
    if not path.exists():
        return ""
    return " | ".join(line.strip() for line in path.read_text(errors="replace").splitlines()[-lines:] if line.strip())


def cell_status(store: Store, cells) -> pd.DataFrame:
    """done / running / pending / failed / cancelled / not started, with the failure's last lines."""
    from bench.executors.slurm import job_states

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
            status = state.lower()
        elif (handle.path / "failure.json").exists():
            status = "failed"
        elif handle.checkpoint.exists():
            status = "interrupted"
        else:
            status = "not started"
        if status in ("failed", "cancelled", "timeout", "out_of_memory", "node_fail", "preempted"):
            failure = handle.path / "failure.json"
            reason = read_json(failure)["reason"] if failure.exists() else ""
            stderr = _tail(Path(states[cell.id][1].job().paths.stderr)) if cell.id in states else ""
            detail = "; ".join(x for x in (reason, _tail(handle.log), stderr) if x)
        rows.append({"id": cell.id, "stage": cell.stage, "arch": cell.config.arch, "status": status, "job": job, "detail": detail[:300]})
    return pd.DataFrame(rows)


@command("status")
def status_command(args: argparse.Namespace) -> int:
    matrix, cells = planned_cells(args)
    cells = select(cells, args.only)
    table = cell_status(Store(results_dir(args)), cells)
    _print_frame(table)
    counts = table.status.value_counts()
    print(f"\n{matrix.name}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


@command("cancel")
def cancel_command(args: argparse.Namespace) -> int:
    from bench.executors.slurm import ACTIVE, job_states

    _, cells = planned_cells(args)
    store = Store(results_dir(args))
    states = job_states(store, [c.id for c in select(cells, args.only) if not store.cell(c.id).is_done()])
    active = sorted({record.job_id for state, record in states.values() if state in ACTIVE})
    if not active:
        print("nothing queued")
        return 0
    result = subprocess.run(["scancel", *active], capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"scancel failed: {result.stderr.strip()}")
    print(f"cancelled {len(active)} job(s): {' '.join(active)}")
    return 0


@command("prefetch")
def prefetch_command(args: argparse.Namespace) -> int:
    """Download every dataset and pretrained weight file a matrix needs (on a node with internet)."""
    from bench.data.datasets import prefetch_dataset
    from bench.models import prefetch_weights

    matrix, cells = planned_cells(args)
    root = args.data_root or matrix.data_root
    datasets = sorted({c.config.dataset for c in cells} | {c.config.unlabeled for c in cells if c.config.unlabeled})
    weights = sorted({c.config.arch for c in cells if c.config.pretrained})
    for name in datasets:
        print(f"dataset {name} ...", flush=True)
        prefetch_dataset(name, root)
    for arch in weights:
        print(f"weights {arch} -> {prefetch_weights(arch)}", flush=True)
    print(f"prefetched {len(datasets)} dataset(s) and {len(weights)} weight file(s); compute nodes can now run with HF_HUB_OFFLINE=1")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    for name, text in (("status", "done / running / pending / failed per cell"), ("cancel", "cancel a matrix's queued SLURM jobs")):
        p = sub.add_parser(name, help=text)
        p.add_argument("matrix")
        p.add_argument("--set", action="append", metavar="KEY=VALUE")
        p.add_argument("--only", metavar="PATTERN")
        p.add_argument("--results")
    p = sub.add_parser("prefetch", help="download the datasets and pretrained weights a matrix needs (login node)")
    p.add_argument("matrix")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--data-root")
