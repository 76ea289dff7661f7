"""What runs on a compute node: one job's pack of cells, one after another in one process.

A pack pays Python's, torch's and the datasets' start-up once for all its cells (datasets are
cached per process). Each cell still checkpoints every epoch and is DONE-marked on its own, so
a pack requeued after USR2 (preemption, time limit) skips its done cells and resumes the one it
was in at its last epoch. A cell whose dependencies are not done is recorded as blocked and its
pack goes on; one cell's failure does not stop the others, but fails the job at the end so
SLURM's state says so.

torch uses the CPUs SLURM gave the task (``SLURM_CPUS_PER_TASK``), not every core of the node:
two jobs of one CPU each on a two-core node, each with two threads, ran 5x slower than one
process alone. With several tasks the cell runs data-parallel (``bench.training.data_parallel``).
"""
from __future__ import annotations

import time
from pathlib import Path
import submitit
import torch

from bench.training import data_parallel
from bench.matrix.config import CellConfig
from bench.errors import BenchError
from bench.executors.cell_output import record_failure, tee
from bench.run.runner import run_cell
from bench.training.runtime import Runtime, allotted_cpus, default_device
from bench.results.store import Store, atomic_write_json, read_json

BLOCKED = "blocked: "  # the reason's prefix of a cell not run because a dependency is not done


class CellJob(submitit.helpers.Checkpointable):
    """One job: a pack of cell ids (a single id from jobs submitted before packing). On USR2
    submitit calls ``checkpoint`` and requeues the job with the same pack."""

    def __init__(self, results: str, device: str | None, amp: bool | None, workers: int | None, data_root: str | None,
                 compile: bool = False, infer_batch_size: int | None = None, keep_checkpoints: bool = False,
                 progress_seconds: float = 30.0) -> None:
        self.results = results
        self.progress_seconds = progress_seconds
        self.keep_checkpoints = keep_checkpoints
        self.compile = compile
        self.infer_batch_size = infer_batch_size
        self.device = device
        self.amp = amp
        self.workers = workers
        self.data_root = data_root

    def __call__(self, cell_ids: list[str] | str) -> dict[str, str]:
        ids = [cell_ids] if isinstance(cell_ids, str) else list(cell_ids)
        torch.set_num_threads(allotted_cpus())
        store = Store(self.results)
        with data_parallel.process_group_from_slurm() as (rank, world):
            workers = allotted_cpus() if self.workers is None else self.workers  # the node's, not the login node's
            runtime = Runtime(device=self.device or default_device(), amp=self.amp, workers=workers,
                              data_root=Path(self.data_root) if self.data_root else None, rank=rank, world_size=world,
                              compile=getattr(self, "compile", False),  # jobs pickled before these options lack them
                              infer_batch_size=getattr(self, "infer_batch_size", None),
                              keep_checkpoints=getattr(self, "keep_checkpoints", False),
                              progress_seconds=getattr(self, "progress_seconds", 30.0))
            outcomes = {cell_id: self._one(store, cell_id, runtime, f"[{n}/{len(ids)}] " if len(ids) > 1 else "")
                        for n, cell_id in enumerate(ids, 1)}
        unfinished = {i: o for i, o in outcomes.items() if o != "done"}
        if unfinished:
            raise BenchError(f"{len(unfinished)} of {len(ids)} cell(s) not done: "
                             + ", ".join(f"{i} ({o})" for i, o in unfinished.items()) + "; see each cell's failure.json")
        return outcomes

    def _one(self, store: Store, cell_id: str, runtime: Runtime, prefix: str) -> str:
        """Run one cell of the pack: "done", "failed" or "blocked"."""
        cell = store.cell(cell_id)
        # every rank takes rank 0's word for whether to run the cell (they must run the same cells)
        if data_parallel.rank_zero_says(runtime.world_size, "done" if cell.is_done() else "run") == "done":
            return "done"
        config = CellConfig.model_validate(read_json(cell.config))
        say = lambda m: print(m, flush=True)  # noqa: E731
        progress = tee(cell, say) if runtime.writes else say
        progress(f"{prefix}cell {cell_id} ({config.stage}, {config.arch})" + (f" on {runtime.world_size} ranks" if runtime.world_size > 1 else ""))
        missing = [d for d in config.deps.values() if not store.cell(d).is_done()]
        if missing:
            if runtime.writes:
                atomic_write_json(cell.failure, {"reason": f"{BLOCKED}its dependency {missing[0]} is not done", "time": time.time()})
            progress(f"  blocked: dependency {missing[0]} is not done")
            return "blocked"
        try:
            run_cell(store, cell_id, config, runtime, progress)
        except Exception as error:
            reason = record_failure(store, cell_id, error) if runtime.writes else str(error)
            progress(f"  FAILED: {reason}")
            if runtime.world_size > 1:
                raise  # the other ranks wait for this one: end the job (srun --kill-on-bad-exit stops them)
            return "failed"
        if runtime.writes:
            cell.failure.unlink(missing_ok=True)
        return "done"

