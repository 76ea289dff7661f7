"""Dispatch cells to SLURM through submitit: one job array per stage, SLURM dependencies between
stages, checkpoint + requeue on preemption or time limit.

Why SLURM dependencies rather than staged submission: the user can log off right after
``bench run --no-wait``; the cluster releases each stage when the jobs it depends on succeed.
A stage's array depends (``afterok``) on exactly the parent jobs (array tasks) its cells need
that are still queued; parents already done need nothing. With ``kill-on-invalid-dep`` SLURM
cancels a dependant whose parent failed instead of leaving it pending forever, and the next
``bench run`` resubmits it.
"""
from __future__ import annotations

import argparse
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from bench.config import CellConfig
from bench.console import Echo, echo
from bench.errors import BenchError, ConfigError
from bench.executors import EXECUTORS, RunSummary
from bench.executors.local import record_failure, tee
from bench.executors.profile import Profile, load_profile
from bench.plan import Cell, describe_cell
from bench.runner import prepare_cell, run_cell
from bench.runtime import Runtime, default_device
from bench.store import Store, atomic_write_json, read_json

ACTIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED")
RECORD = "slurm.json"
# sacct knows a job a second or two after sbatch; past this, UNKNOWN means gone (purged, or no
# accounting), not queued, and the cell may be submitted again.
UNKNOWN_GRACE_SECONDS = 300


class CellJob(submitit.helpers.Checkpointable):
    """What runs on the compute node: one cell. On USR2 (preemption, time limit) submitit calls
    ``checkpoint`` and requeues the job; the cell then resumes from its last epoch checkpoint."""

    def __init__(self, results: str, device: str | None, amp: bool | None, workers: int, data_root: str | None) -> None:
        self.results = results
        self.device = device
        self.amp = amp
        self.workers = workers
        self.data_root = data_root

    def __call__(self, cell_id: str) -> dict[str, Any]:
        store = Store(self.results)
        cell = store.cell(cell_id)
        config = CellConfig.model_validate(read_json(cell.config))
        runtime = Runtime(device=self.device or default_device(), amp=self.amp, workers=self.workers,
                          data_root=Path(self.data_root) if self.data_root else None)
        progress = tee(cell.log, lambda m: print(m, flush=True))
        try:
            result = run_cell(store, cell_id, config, runtime, progress)
        except Exception as error:
            progress(f"  FAILED: {record_failure(store, cell_id, error)}")
            raise
        cell.failure.unlink(missing_ok=True)
        return result


@dataclass
class JobRecord:
    job_id: str
    folder: str
    submitted: float

    @classmethod
    def read(cls, store: Store, cell_id: str) -> "JobRecord | None":
        path = store.cell(cell_id).path / RECORD
        return cls(**read_json(path)) if path.exists() else None

    def write(self, store: Store, cell_id: str) -> None:
        atomic_write_json(store.cell(cell_id).path / RECORD, self.__dict__)

    def job(self) -> submitit.SlurmJob:
        return submitit.SlurmJob(folder=self.folder, job_id=self.job_id)


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


def make_executor(folder: Path, profile: Profile, stage: str, name: str, dependencies: list[str]) -> submitit.AutoExecutor:
    r = profile.for_stage(stage)
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm", slurm_max_num_timeout=r.max_requeues)
    params: dict[str, Any] = dict(
        name=name, timeout_min=r.time_min, cpus_per_task=r.cpus_per_task, mem_gb=r.mem_gb,
        slurm_partition=r.partition, slurm_array_parallelism=r.array_parallelism, slurm_setup=list(r.setup),
        slurm_additional_parameters={"kill-on-invalid-dep": "yes"},
    )
    if dependencies:
        params["slurm_dependency"] = "afterok:" + ":".join(dependencies)
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
            check_partition(self.profile, {c.stage for c in to_submit})
        stamp = time.strftime("%Y%m%d-%H%M%S")
        job_cell = CellJob(str(store.root.resolve()), self.device, runtime.amp, runtime.workers,
                           str(runtime.data_root) if runtime.data_root else None)
        for stage in dict.fromkeys(c.stage for c in cells):
            # One array per set of parent jobs: a cell waits only for the parents it needs, so one
            # failed teacher holds back its own students and nobody else's.
            groups: dict[tuple[str, ...], list[Cell]] = {}
            for cell in (c for c in to_submit if c.stage == stage):
                prepare_cell(store, cell.id, cell.config)
                parents = tuple(sorted({queued[d] for d in cell.config.deps.values() if d in queued}))
                groups.setdefault(parents, []).append(cell)
            for n, (parents, group) in enumerate(groups.items()):
                folder = store.root.resolve() / "slurm" / f"{stamp}-{stage}-{n}"
                executor = make_executor(folder, self.profile, stage, f"bench-{stage}", list(parents))
                try:
                    jobs = executor.map_array(job_cell, [c.id for c in group])
                except submitit.core.utils.FailedJobError as error:
                    raise self._explain(error, stage) from None
                for cell, job in zip(group, jobs):
                    JobRecord(job.job_id, str(job.paths.folder), time.time()).write(store, cell.id)
                    queued[cell.id] = job.job_id
                self.echo(f"stage {stage}: {len(group)} cell(s) submitted as job {jobs[0].job_id.split('_')[0]}"
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
        while pending:
            time.sleep(self.poll_seconds)
            states = job_states(store, sorted(pending))
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
                    if state.startswith("CANCELLED") and any(d in summary.failed or d in summary.blocked for d in by_id[cell_id].config.deps.values()):
                        summary.blocked.append(cell_id)
                        continue
                    failure = store.cell(cell_id).failure
                    reason = read_json(failure)["reason"] if failure.exists() else f"SLURM state {state} without a DONE marker"
                    summary.failed[cell_id] = reason
        return summary


EXECUTORS.register("slurm")(SlurmExecutor)
