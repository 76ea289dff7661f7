"""Dispatch cells to SLURM through submitit: job arrays per stage, SLURM dependencies between
stages, checkpoint + requeue on preemption or time limit. What a job runs is
``bench.executors.slurm_job``.

Why SLURM dependencies rather than staged submission: the user can log off right after
``bench run --no-wait``; the cluster releases each stage when the jobs it depends on succeed.
A stage's array depends (``afterok``) on exactly the parent jobs (array tasks) its cells need
that are still queued; parents already done need nothing. With ``kill-on-invalid-dep`` SLURM
cancels a dependant whose parent failed instead of leaving it pending forever, and the next
``bench run`` resubmits it.

Packing (``cells_per_job``): a job runs several cells of a stage. Packs wait with ``afterany``
(a parent pack with one failed cell must not cancel its healthy cells' dependants); a packed
cell whose parent is not done is recorded blocked by the job.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from bench.matrix.ids import CELL_ID
from bench.console import Echo, echo
from bench.errors import BenchError, ConfigError
from bench.executors.base import EXECUTORS, RunSummary
from bench.executors.cell_output import read_failure, warn_once
from bench.executors.profile import Profile, load_profile
from bench.executors.slurm_job import BLOCKED, CellJob
from bench.matrix.plan import Cell, describe_cell
from bench.run.runner import prepare_cell
from bench.training.runtime import Runtime
from bench.results.store import Store, atomic_write_json, read_json

ACTIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED")
RECORD = "slurm.json"
# sacct knows a job a second or two after sbatch; past this, UNKNOWN means gone (purged, or no
# accounting), not queued, and the cell may be submitted again.
UNKNOWN_GRACE_SECONDS = 300
MARKER_POLL_SECONDS = 1.0


@dataclass
class JobRecord:
    job_id: str
    folder: str
    submitted: float
    pack: list[str] = field(default_factory=list)  # the cells this job runs, in order (empty: this one)

    @classmethod
    def read(cls, store: Store, cell_id: str) -> "JobRecord | None":
        """The cell's record, or None when it has none. A damaged one is one warning and counts as
        none (the cell is shown and run as not submitted), never a traceback."""
        path = store.cell(cell_id).path / RECORD
        if not path.exists():
            return None
        try:
            data = read_json(path)
        except (BenchError, OSError, UnicodeDecodeError) as error:
            data = str(error).removeprefix(f"{path}: ")
        problem = data if isinstance(data, str) else _record_problem(data)
        if problem is not None:
            warn_once(path, problem, "ignored: the cell counts as not submitted")
            return None
        return cls(**data)

    def write(self, store: Store, cell_id: str) -> None:
        atomic_write_json(store.cell(cell_id).path / RECORD, self.__dict__)

    def job(self) -> submitit.SlurmJob:
        return submitit.SlurmJob(folder=self.folder, job_id=self.job_id)


_JOB_ID = re.compile(r"[0-9]{1,20}(_[0-9]{1,10})?")


def _record_problem(data: Any) -> str | None:
    """What is wrong with a slurm.json's content, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    unknown = sorted(set(data) - {"job_id", "folder", "submitted", "pack"})
    if unknown:
        return f"unknown field {str(unknown[0])[:40]!r}"
    if not isinstance(data.get("job_id"), str) or not _JOB_ID.fullmatch(data["job_id"]):
        return f"job_id {json.dumps(data.get('job_id'))[:40]} is not a SLURM job id"
    if not isinstance(data.get("folder"), str) or not data["folder"]:
        return "folder is not a path"
    submitted = data.get("submitted")
    if isinstance(submitted, bool) or not isinstance(submitted, (int, float)) or not math.isfinite(submitted):
        return f"submitted {json.dumps(submitted)[:40]} is not a time"
    pack = data.get("pack", [])
    if not isinstance(pack, list) or not all(isinstance(i, str) and CELL_ID.fullmatch(i) for i in pack):
        return "pack is not a list of cell ids"
    return None


def job_states(store: Store, cell_ids: list[str]) -> dict[str, tuple[str, JobRecord]]:
    """SLURM state of each cell's last submitted job (one sacct call for all)."""
    records = {i: r for i in cell_ids if (r := JobRecord.read(store, i)) is not None}
    if not records:
        return {}
    jobs = {i: r.job() for i, r in records.items()}
    submitit.SlurmJob.watcher.update()
    states = {}
    for i, job in jobs.items():
        state = job.watcher.get_state(job.job_id, mode="cache").split(" ")[0]
        if state == "UNKNOWN" and time.time() - records[i].submitted < UNKNOWN_GRACE_SECONDS:
            state = "PENDING"  # just submitted: sacct has not seen it yet
        states[i] = (state, records[i])
    return states


def check_ranks(profile: Profile, cells: list[Cell]) -> None:
    """Fail before anything is queued, not on the compute node: a stage whose ranks (``nodes`` x
    ``tasks_per_node``) do not split the global ``batch_size`` of a cell that trains."""
    from bench.matrix.names import requirement

    for cell in cells:
        resources = profile.for_stage(cell.stage)
        ranks, batch = resources.nodes * resources.tasks_per_node, cell.config.batch_size
        needs = requirement(cell.config.method)
        if ranks == 1 or batch % ranks == 0 or (needs is not None and not needs.trains):
            continue
        override = profile.stages.get(cell.stage)
        name = "tasks_per_node" if resources.tasks_per_node > 1 or resources.nodes == 1 else "nodes"
        field = f"stages.{cell.stage}.{name}" if override is not None and getattr(override, name) is not None else name
        raise ConfigError(profile.source, field, f"{resources.nodes} node(s) x {resources.tasks_per_node} task(s) = {ranks} "
                          f"ranks {'exceed' if ranks > batch else 'do not divide'} stage {cell.stage}'s batch_size {batch} "
                          "(the global batch, split over the ranks); make it a multiple of the ranks or use fewer")


def check_partition(profile: Profile, stages: set[str]) -> None:
    """Fail before sbatch does: an unknown partition, or GPUs asked of a partition without any."""
    for stage in sorted(stages):
        resources = profile.for_stage(stage)
        field = f"stages.{stage}.gpus_per_node" if profile.stages.get(stage) and profile.stages[stage].gpus_per_node is not None else "gpus_per_node"
        try:
            out = subprocess.run(["sinfo", "-h", "-p", resources.partition, "-o", "%G"], capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            raise BenchError("sinfo not found: is this a SLURM login node? (use --executor local otherwise)") from None
        if out.returncode != 0:
            lines = (out.stderr.strip() or out.stdout.strip() or f"exit code {out.returncode}").splitlines()
            raise BenchError(f"sinfo failed: {lines[-1]}")
        gres = out.stdout.split()
        if not gres:
            raise ConfigError(profile.source, "partition", f"no partition {resources.partition!r} on this cluster (sinfo)")
        if resources.gpus_per_node > 0 and not any("gpu" in g for g in gres):
            raise ConfigError(profile.source, field, f"{resources.gpus_per_node} GPU(s) per node requested, but partition "
                              f"{resources.partition!r} has no GPUs (sinfo gres: {','.join(sorted(set(gres)))}); set it to 0 or pick a GPU partition")


def make_packs(cells: list[Cell], parents_of: dict[str, tuple[str, ...]], profile: Profile) -> list[list[Cell]]:
    """A stage's cells in jobs of ``cells_per_job`` (``auto``: spread over ``array_parallelism``
    jobs), cells that wait for the same parent jobs side by side, plan order otherwise."""
    by_parents: dict[tuple[str, ...], list[Cell]] = {}
    for cell in cells:
        by_parents.setdefault(parents_of[cell.id], []).append(cell)
    ordered = [c for group in by_parents.values() for c in group]
    size = profile.cells_per_job
    if size == "auto":
        size = max(1, -(-len(ordered) // profile.array_parallelism))
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def make_executor(folder: Path, profile: Profile, stage: str, name: str, dependencies: list[str],
                  after_any: bool = False) -> submitit.AutoExecutor:
    """An executor for one array of a stage. ``after_any``: start when the parent jobs end, not
    only when they succeed (packs: a parent pack with one failed cell must not cancel the
    dependants of its other cells; a cell whose parent is not done is then recorded blocked)."""
    r = profile.for_stage(stage)
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm", slurm_max_num_timeout=r.max_requeues)
    params: dict[str, Any] = dict(
        name=name, timeout_min=r.time_min, cpus_per_task=r.cpus_per_task, mem_gb=r.mem_gb,
        slurm_partition=r.partition, slurm_array_parallelism=r.array_parallelism, slurm_setup=list(r.setup),
        slurm_additional_parameters={"kill-on-invalid-dep": "yes"},
    )
    if r.nodes > 1 or r.tasks_per_node > 1:  # one data-parallel cell over several processes
        params.update(nodes=r.nodes, tasks_per_node=r.tasks_per_node, slurm_srun_args=["--kill-on-bad-exit=1"])
    if dependencies:
        params["slurm_dependency"] = ("afterany:" if after_any else "afterok:") + ":".join(dependencies)
    if r.gpus_per_node:
        params["gpus_per_node"] = r.gpus_per_node
    for key, value in (("slurm_account", r.account), ("slurm_qos", r.qos), ("slurm_constraint", r.constraint)):
        if value:
            params[key] = value
    executor.update_parameters(**params)
    return executor


class SlurmExecutor:
    """Cells as SLURM job arrays through submitit (see the module docstring)."""

    runs_here = False  # each job picks its device on its compute node

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SlurmExecutor":
        return cls(profile=args.profile, wait=not args.no_wait, device=args.device)

    def describe(self, runtime: Runtime) -> str:
        return f"SLURM (profile {self.profile.source})"

    def __init__(self, profile: str = "local", wait: bool = True, device: str | None = None, poll_seconds: float = 5.0,
                 echo: Echo = echo) -> None:
        self.profile = load_profile(profile)
        self.wait = wait
        self.device = device  # None: chosen on the compute node (cuda there if it has one)
        self.poll_seconds = poll_seconds
        self.echo = echo

    def run(self, cells: list[Cell], store: Store, runtime: Runtime) -> RunSummary:
        summary = RunSummary()
        states = job_states(store, [c.id for c in cells if not store.cell(c.id).is_done()])
        queued: dict[str, str] = {}
        to_submit: list[Cell] = []
        for cell in cells:
            if store.cell(cell.id).is_done():
                summary.skipped.append(cell.id)
            elif cell.id in states and states[cell.id][0] in ACTIVE:
                queued[cell.id] = states[cell.id][1].job_id
                self.echo(f"{describe_cell(cell)}: already queued as job {queued[cell.id]} ({states[cell.id][0]})")
            else:
                to_submit.append(cell)
        if to_submit:
            check_ranks(self.profile, to_submit)
            check_partition(self.profile, {c.stage for c in to_submit})
        stamp = time.strftime("%Y%m%d-%H%M%S")
        job_cell = CellJob(str(store.root.resolve()), self.device, runtime.amp, runtime.workers,
                           str(runtime.data_root) if runtime.data_root else None, runtime.compile,
                           runtime.infer_batch_size, runtime.keep_checkpoints, runtime.progress_seconds)
        packed = {r.job_id for _, r in states.values() if len(r.pack) > 1}  # parent jobs that run several cells
        for stage in dict.fromkeys(c.stage for c in cells):
            stage_cells = [c for c in to_submit if c.stage == stage]
            parents_of: dict[str, tuple[str, ...]] = {}
            for cell in stage_cells:
                prepare_cell(store, cell.id, cell.config)
                parents_of[cell.id] = tuple(sorted({queued[d] for d in cell.config.deps.values() if d in queued}))
            # One array per set of parent jobs: a job waits only for the parents its cells need, so
            # one failed teacher holds back its own students and nobody else's.
            arrays: dict[tuple[str, ...], list[list[Cell]]] = {}
            for pack in make_packs(stage_cells, parents_of, self.profile.for_stage(stage)):
                parents = tuple(sorted({p for c in pack for p in parents_of[c.id]}))
                arrays.setdefault(parents, []).append(pack)
            for n, (parents, packs) in enumerate(arrays.items()):
                folder = store.root.resolve() / "slurm" / f"{stamp}-{stage}-{n}"
                after_any = any(len(p) > 1 for p in packs) or any(p in packed for p in parents)
                executor = make_executor(folder, self.profile, stage, f"bench-{stage}", list(parents), after_any)
                try:
                    jobs = executor.map_array(job_cell, [[c.id for c in pack] for pack in packs])
                except submitit.core.utils.FailedJobError as error:
                    raise self._explain(error, stage) from None
                for pack, job in zip(packs, jobs):
                    ids = [c.id for c in pack]
                    for cell in pack:
                        JobRecord(job.job_id, str(job.paths.folder), time.time(), ids).write(store, cell.id)
                        queued[cell.id] = job.job_id
                    if len(pack) > 1:
                        packed.add(job.job_id)
                cells_sent = sum(len(p) for p in packs)
                self.echo(f"stage {stage}: {cells_sent} cell(s) submitted as job {jobs[0].job_id.split('_')[0]}"
                          + (f" ({len(packs)} job(s) of up to {max(len(p) for p in packs)} cells)" if cells_sent > len(packs) else "")
                          + (f" after {len(parents)} parent job(s)" if parents else ""))
        if not self.wait:
            summary.submitted = list(queued)
            self.echo("submitted; follow with `bench status MATRIX`, collect with `bench collect` when done")
            return summary
        return self._wait(cells, store, summary, queued)

    def _explain(self, error: Exception, stage: str) -> BenchError:
        text = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
        if "gres" in text.lower() or "gpu" in text.lower():
            return ConfigError(self.profile.source, f"gpus_per_node (stage {stage})", f"sbatch refused the GPU request: {text}")
        return BenchError(f"sbatch refused stage {stage}: {text}")

    def _wait(self, cells: list[Cell], store: Store, summary: RunSummary, queued: dict[str, str]) -> RunSummary:
        pending = set(queued)
        last: dict[str, str] = {}
        by_id = {c.id: c for c in cells}
        states: dict[str, tuple[str, JobRecord]] = {}
        asked = -math.inf
        while pending:
            time.sleep(MARKER_POLL_SECONDS)  # DONE markers are files: cheap to look at often
            if time.monotonic() - asked >= self.poll_seconds:  # sacct at most every poll_seconds
                states, asked = job_states(store, sorted(pending)), time.monotonic()
            for cell_id in [c.id for c in cells if c.id in pending]:  # plan order: parents' fate first
                state = "DONE" if store.cell(cell_id).is_done() else states.get(cell_id, ("UNKNOWN", None))[0]
                if state != last.get(cell_id):
                    last[cell_id] = state
                    self.echo(f"{describe_cell(by_id[cell_id])}: {state}")
                if state == "DONE":
                    summary.done.append(cell_id)
                    pending.discard(cell_id)
                elif state not in ACTIVE:
                    pending.discard(cell_id)
                    reason = failure_in_job(store, cell_id, states.get(cell_id, (None, None))[1]) or \
                        f"SLURM state {state} without a DONE marker"
                    if reason.startswith(BLOCKED) or any(d in summary.failed or d in summary.blocked for d in by_id[cell_id].config.deps.values()):
                        summary.blocked.append(cell_id)
                        continue
                    summary.failed[cell_id] = reason
        return summary


def failure_in_job(store: Store, cell_id: str, record: JobRecord | None) -> str | None:
    """Why the cell failed in the job of ``record``: its failure.json's reason, unless written
    before that job was submitted (an earlier run's, say an old "blocked"; a failure without a
    time cannot be dated and is not taken as this job's). Without a record: any failure's."""
    written = read_failure(store.cell(cell_id))
    if written is None:
        return None
    if record is not None and (written["time"] or 0) < record.submitted:
        return None
    return written["reason"]


EXECUTORS.register("slurm")(SlurmExecutor)
