"""Data parallelism for one cell over several processes (ranks) with ``torch.distributed``.

The cell's ``batch_size`` is the global batch: every step, each rank takes a strided shard of
the same global batch (``batch[rank::world]``), so the union over ranks is exactly the batch a
one-process run sees, and the split is a function of (seed, epoch) alone. Gradients are averaged
across ranks before the optimiser steps, as DDP does (one all-reduce of all gradients per step,
without DDP's overlap of communication and backward: methods own their step and may run
several modules, so there is no single module to wrap). Each rank's loss is weighted by its
share of the batch, so the averaged gradient is the gradient of the global batch mean even when
the last batch does not split evenly. Parameters start from rank 0's.

What differs from one process, as with plain DDP: BatchNorm normalises over each rank's shard
(running statistics are rank 0's, the ones it saves), and a contrastive loss draws its negatives
from its rank's shard.

Only rank 0 writes the cell's files; the others train in lockstep and write nothing.
"""
from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

from bench.errors import BenchError

# A rank waits this long for the others (rank 0 may run a cell that trains nothing alone, or
# evaluate) before the job fails instead of hanging until its time limit.
TIMEOUT = datetime.timedelta(hours=1)


@contextlib.contextmanager
def process_group_from_slurm() -> Iterator[tuple[int, int]]:
    """(rank, world size) of this SLURM task, with a process group set up from submitit's
    environment when the job has several tasks (gloo on the CPU, nccl on GPUs); (0, 1) alone."""
    import submitit

    tasks = submitit.JobEnvironment().num_tasks
    if tasks <= 1:
        yield 0, 1
        return
    env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=True)
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"  # the epoch's sums are CPU tensors
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    try:
        yield env.rank, env.world_size
    finally:
        dist.destroy_process_group()


def check_batch(batch_size: int, world: int) -> None:
    if batch_size % world:
        raise BenchError(f"batch_size: {batch_size} does not split over {world} ranks; the batch is the global "
                         f"batch, so make it a multiple of {world}")


def shard_order(order: torch.Tensor, batch_size: int, rank: int, world: int) -> torch.Tensor:
    """This rank's items in batch order: the concatenation of its shard of each global batch.
    Batched by ``batch_size // world`` it gives the rank one batch per global batch (the last
    one shorter, or missing when the last global batch has fewer items than ranks)."""
    if world == 1:
        return order
    shards = [order[start:start + batch_size][rank::world] for start in range(0, len(order), batch_size)]
    return torch.cat(shards) if shards else order


def global_batch_sizes(items: int, batch_size: int) -> list[int]:
    """The size of every global batch of an epoch of ``items``."""
    return [min(batch_size, items - start) for start in range(0, items, batch_size)]


def average_gradients(parameters: list[nn.Parameter], world: int) -> None:
    """Average the gradients of ``parameters`` over ranks in one all-reduce. A parameter without
    a gradient on this rank (an empty shard) contributes zeros."""
    if world == 1 or not parameters:
        return
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in parameters])
    dist.all_reduce(flat)
    flat.div_(world)
    offset = 0
    for p in parameters:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def broadcast_from_first(modules: list[nn.Module], world: int) -> None:
    """Make every rank's parameters and buffers rank 0's (after building or resuming)."""
    if world == 1:
        return
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def sum_over_ranks(world: int, *values: float) -> list[float]:
    """Each value summed over ranks (an epoch's loss and item counts)."""
    if world == 1:
        return list(values)
    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()


def rank_zero_says(world: int, value: str) -> str:
    """Rank 0's ``value`` on every rank: ranks must agree which cell they run next (and whether),
    or their collectives would pair across cells."""
    if world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def usable_items(global_items: int, world: int, min_batch: int) -> int:
    """The items of a global batch that take part in its step: those of the ranks' shards
    (rank r has items r, r + world, ...) of at least ``min_batch`` images."""
    sizes = (len(range(rank, global_items, world)) for rank in range(world))
    return sum(size for size in sizes if size >= min_batch)


def share_weight(items: int, global_items: int, world: int) -> float:
    """The factor on a rank's mean loss that makes the averaged gradient the global mean's."""
    return items * world / global_items
