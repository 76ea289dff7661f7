"""A teacher's view bank (FKD-style "consistent teaching"): the teacher's logits for K augmented
views of every image its students train on, computed once and replayed by every student.

The bank draws, for each image and view, the augmentation's parameters (crop offsets, flip bit)
from one generator of ``bank_seed``, and stores them with the teacher's logits of that view
(float16 by default). A student draws, per image and epoch, which of the K views it sees (from
its own seed and epoch, so a resumed epoch draws the same), regenerates that view from the
uint8 image and the stored parameters, and takes the stored logits: the teacher's target is
always computed on the very view the student sees, and the teacher's forward, 95% of an
augmented distillation epoch, is paid once per teacher instead of once per student epoch.

The bank is an artifact of the teacher cell (``artifacts/bank-<key>.pt``), its key naming
everything that changes the logits: the inputs (dataset, size, items), the augmentation (names,
padding), K, the bank seed, the stored precision, and how the teacher ran (AMP, device type).
It is built in chunks under a lock, so two students of one teacher build it once, and a killed
build resumes from its last chunk (``bank-<key>.partial.pt``).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from bench.data.augment import crop_with, flip_with
from bench.data.images import ImageSet
from bench.inference import forward_in_batches, item_positions, layout, outputs_key, to_device
from bench.locks import exclusive
from bench.methods import Batch
from bench.runtime import Runtime
from bench.seeding import derived_generator
from bench.store import UnreadableFile, atomic_torch_save, load_tensors

CHUNK_BATCHES = 50  # the partial bank is saved every this many batches
PRECISIONS = {"float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class BankSpec:
    """What a bank holds: views per image, how they are drawn and how their logits are kept."""

    augment: tuple[str, ...]
    padding: int
    views: int
    seed: int
    precision: str

    def describe(self) -> str:
        return f"augment={','.join(self.augment)}|padding={self.padding}|views={self.views}|seed={self.seed}|{self.precision}"


def draw_params(n: int, spec: BankSpec) -> dict[str, torch.Tensor]:
    """Every image's K views' parameters, from one generator of the bank seed: offsets into the
    zero-padded image (``padding`` = no shift) and flip bits."""
    generator = derived_generator(spec.seed, "view-bank")
    shape = (n, spec.views)
    dy = torch.randint(0, 2 * spec.padding + 1, shape, generator=generator)
    dx = torch.randint(0, 2 * spec.padding + 1, shape, generator=generator)
    flip = torch.rand(shape, generator=generator) < 0.5
    if "crop" not in spec.augment:
        dy.fill_(spec.padding)
        dx.fill_(spec.padding)
    if "flip" not in spec.augment:
        flip.fill_(False)
    return {"dy": dy.to(torch.int16), "dx": dx.to(torch.int16), "flip": flip}


def apply_params(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, spec: BankSpec) -> torch.Tensor:
    """The uint8 views of ``images`` with the given parameters, in the cell's augmentation order,
    as float in [0, 1] (what the student and the teacher see)."""
    for name in spec.augment:
        if name == "crop":
            images = crop_with(images, dy.to(images.device), dx.to(images.device), spec.padding)
        elif name == "flip":
            images = flip_with(images, flip.to(images.device))
    return images.float().div_(255.0)


def bank_path(folder: Path, source: ImageSet, items: torch.Tensor, spec: BankSpec, runtime: Runtime) -> Path:
    return folder / f"bank-{outputs_key(source, items, spec.describe(), runtime)}.pt"


def _partial(path: Path) -> Path:
    """Where a bank being built keeps its finished chunks."""
    return path.with_name(path.name.replace(".pt", ".partial.pt"))


def load_or_build(teacher: nn.Module, source: ImageSet, items: torch.Tensor, spec: BankSpec, runtime: Runtime,
                  batch_size: int, path: Path, progress: Callable[[str], None]) -> dict[str, torch.Tensor]:
    """The bank at ``path``, built first if it is not there (once, under a lock)."""
    with exclusive(path.with_name(path.name + ".lock"), f"view bank {path.name}", wait=True, echo=progress):
        if path.exists():
            with contextlib.suppress(UnreadableFile):  # a damaged bank is built again
                bank = load_tensors(path)
                if isinstance(bank, dict) and bank.get("logits") is not None and len(bank["logits"]) == len(items):
                    return bank
        bank = _build(teacher, source, items, spec, runtime, batch_size, path, progress)
        atomic_torch_save(path, bank)
        _partial(path).unlink(missing_ok=True)
        return bank


def _build(teacher: nn.Module, source: ImageSet, items: torch.Tensor, spec: BankSpec, runtime: Runtime,
           batch_size: int, path: Path, progress: Callable[[str], None]) -> dict[str, torch.Tensor]:
    params = draw_params(len(items), spec)
    partial = _partial(path)
    done, chunks = 0, []
    if partial.exists():
        with contextlib.suppress(UnreadableFile):
            state = load_tensors(partial)
            if isinstance(state, dict) and isinstance(state.get("logits"), torch.Tensor):
                chunks, done = [state["logits"]], len(state["logits"])
                progress(f"  resuming the view bank at image {done}/{len(items)}")
    dtype = PRECISIONS[spec.precision]
    teacher.eval()
    started, last_print, resumed_at = time.perf_counter(), time.monotonic(), done
    batch_size = runtime.inference_batch(batch_size)
    chunk = CHUNK_BATCHES * batch_size
    while done < len(items):
        part = items[done:done + chunk]
        logits = []
        offset = done
        for images, _, idx in source.batches(part, batch_size, runtime.workers):
            x = to_device(images, runtime)
            rows = slice(offset, offset + len(idx))
            per_view = []
            for k in range(spec.views):
                view = apply_params(x, params["dy"][rows, k], params["dx"][rows, k], params["flip"][rows, k], spec)
                per_view.append(forward_in_batches(teacher, layout(view, runtime), runtime).float().to(dtype).cpu())
            logits.append(torch.stack(per_view, dim=1))
            offset += len(idx)
            if time.monotonic() - last_print > runtime.progress_seconds:
                last_print = time.monotonic()
                rate = (offset - resumed_at) * spec.views / (time.perf_counter() - started)
                progress(f"  view bank: image {offset}/{len(items)}, {spec.views} views, {rate:.0f} views/s")
        chunks.append(torch.cat(logits))
        done += len(part)
        if done < len(items):
            atomic_torch_save(partial, {"logits": torch.cat(chunks)})
    progress(f"  view bank of {len(items)} images x {spec.views} views built in {time.perf_counter() - started:.1f} s")
    return {"items": items.clone(), **params, "logits": torch.cat(chunks)}


class BankedTeacher:
    """A student's side of a bank: its view of each image (which of the K, from its own
    generator) and the teacher's stored logits of that very view."""

    def __init__(self, bank: dict[str, torch.Tensor], source_size: int, spec: BankSpec, device: torch.device) -> None:
        self.spec = spec
        self.position = item_positions(bank["items"], source_size)
        self.dy, self.dx, self.flip = bank["dy"], bank["dx"], bank["flip"]
        self.logits = bank["logits"].to(device)
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (indices, rows, views chosen) of the batch being trained

    def view(self, images: torch.Tensor, generator: torch.Generator, indices: torch.Tensor) -> torch.Tensor:
        rows = self.position[indices.cpu()]
        choice = torch.randint(0, self.spec.views, (len(rows),), generator=generator)
        self._last = (indices, rows, choice)
        return apply_params(images, self.dy[rows, choice], self.dx[rows, choice], self.flip[rows, choice], self.spec)

    def targets(self, batch: Batch) -> torch.Tensor:
        if self._last is None or self._last[0] is not batch.indices:
            raise RuntimeError("view bank: the teacher's targets were asked for a batch whose views it did not draw")
        _, rows, choice = self._last
        return self.logits[rows.to(self.logits.device), choice.to(self.logits.device)].float()
