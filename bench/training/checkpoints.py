"""A cell's checkpoint: what an epoch leaves so that a killed cell resumes exactly (model,
optimiser, schedule, scaler, metrics so far and the global RNG states), written atomically with
the previous epoch's kept as a fallback, and checked before use when loaded.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Mapping

import numpy as np
import torch

from bench.errors import BenchError
from bench.results.artifact_checks import state_dict_problem
from bench.results.store import CellDir, UnreadableFile, atomic_torch_save, load_tensors

Progress = Callable[[str], None]


def rng_state() -> dict[str, Any]:
    """Global RNG states as tensors, numbers and lists only, so the checkpoint loads with
    ``weights_only=True`` (numpy's key array becomes a tensor, Python's state a list)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(mt), gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(cell: CellDir, progress: Progress, model: Mapping[str, torch.Tensor] | None = None,
                    epochs: int | None = None) -> dict[str, Any] | None:
    """The latest readable checkpoint of a cell, or None when it has none.

    Loaded with ``weights_only=True``: a results folder is shared, and a planted pickle must not
    run as whoever types ``bench run`` next. An unreadable ``checkpoint.pt`` (truncated by a
    failing disk, or not ours) falls back to ``checkpoint.prev.pt``, the epoch before; when
    neither loads, one line names the file and how to restart the cell.
    """
    problems: list[str] = []
    for path in (cell.checkpoint, cell.previous_checkpoint):
        if not path.exists():
            continue
        try:
            state = load_tensors(path)
        except UnreadableFile as error:
            problems.append(str(error).removeprefix(f"{path.parent}/"))
            continue
        if not isinstance(state, dict) or not {"epoch", "model", "optimizer", "rng"} <= set(state):
            problems.append(f"{path.name}: not a bench checkpoint")
            continue
        problem = _checkpoint_problem(state, model, epochs)  # checked before use: another cell's, or damaged
        if problem:
            problems.append(f"{path.name}: {problem}")
            continue
        if problems:
            progress(f"  {problems[0]}; resuming from {path.name} (epoch {state['epoch'] + 1})")
        return state
    if problems:
        raise BenchError(f"cell {cell.id}: {'; '.join(problems)}; delete {cell.checkpoint} and "
                         f"{cell.previous_checkpoint.name} to restart the cell from scratch")
    return None


def _checkpoint_problem(state: dict[str, Any], model: Mapping[str, torch.Tensor] | None, epochs: int | None) -> str | None:
    """What differs between a checkpoint and the cell resuming from it (its model's state dict and
    epochs), or None."""
    epoch = state["epoch"]
    if not isinstance(epoch, int) or epoch < 0 or (epochs is not None and epoch >= epochs):
        return f"epoch {str(epoch)[:20]}, expected 0 to {epochs - 1 if epochs is not None else 'the last'}"
    return None if model is None else state_dict_problem(model, state["model"])


def save_checkpoint(cell: CellDir, state: dict[str, Any]) -> None:
    """Keep the previous epoch's checkpoint as a fallback, then write the new one atomically."""
    atomic_torch_save(cell.checkpoint, state, previous=cell.previous_checkpoint)
