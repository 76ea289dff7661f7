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
It is built under a lock, so two students of one teacher build it once. Its logits are written
shard by shard (``bank-<key>.shards/logits-NNNNN.npy``, each written once, atomically; memory
holds one shard) with ``meta.json`` (spec, item count and digest, views, classes, dtype, shard
size); ``bank-<key>.pt`` (the items and view parameters) is written last and means "built". A
killed build resumes at its first missing shard. Before use every part is checked against what
the student needs; a mismatch is rebuilt, saying why in one line. Students read the shards
memory-mapped: only a batch's rows reach the device.
"""
from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from bench.data.augment import crop_with, flip_with
from bench.data.images import ImageSet
from bench.inference import forward_in_batches, item_positions, layout, outputs_key, to_device
from bench.locks import exclusive
from bench.methods import Batch
from bench.runtime import Runtime
from bench.seeding import derived_generator
from bench.errors import BenchError
from bench.store import UnreadableFile, atomic_torch_save, atomic_write_bytes, atomic_write_json, load_tensors, read_json

CHUNK_BATCHES = 50  # a shard of logits holds this many inference batches of images
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


def bank_bytes(items: int, views: int, classes: int, precision: str) -> int:
    """A bank's size on disk (its logits; the per-view parameters add 5 bytes a view): what
    ``plan --cost`` states before the bank is built."""
    return items * views * (classes * PRECISIONS[precision].itemsize + 5)


def _shards(path: Path) -> Path:
    """The folder of a bank's logits, one ``.npy`` file per shard of items, each written whole
    (atomically) as the build reaches it: nothing written is rewritten, a killed build resumes at
    its first missing shard, memory holds one shard, and a student reads them memory-mapped."""
    return path.with_name(path.name.removesuffix(".pt") + ".shards")


def _meta(spec: BankSpec, items: torch.Tensor, shard_items: int, classes: int) -> dict[str, object]:
    digest = hashlib.sha256(items.to(torch.int64).numpy().tobytes()).hexdigest()
    return {"format": 2, "spec": spec.describe(), "items": len(items), "items_sha256": digest, "views": spec.views,
            "classes": classes, "dtype": spec.precision, "shard_items": shard_items}


def _check(path: Path, spec: BankSpec, items: torch.Tensor) -> str | None:
    """Why the bank at ``path`` is not the one asked for (None: it is), without loading its logits."""
    shards = _shards(path)
    if not path.exists():
        return "not built"
    try:
        head = load_tensors(path)
        meta = read_json(shards / "meta.json")
    except (UnreadableFile, BenchError, OSError) as error:
        return f"unreadable ({str(error)[:80]})"
    if not isinstance(head, dict) or not isinstance(meta, dict):
        return "not a bank"
    want = _meta(spec, items, int(meta.get("shard_items", 0) or 0), int(meta.get("classes", 0) or 0))
    wrong = [k for k, v in want.items() if meta.get(k) != v]
    if wrong:
        return f"made for other {', '.join(wrong)}"
    for name in ("dy", "dx", "flip"):
        if not isinstance(head.get(name), torch.Tensor) or tuple(head[name].shape) != (len(items), spec.views):
            return f"its {name} is not [{len(items)}, {spec.views}]"
    for n, file in enumerate(_shard_files(shards, len(items), want["shard_items"])):  # type: ignore[arg-type]
        rows = min(int(want["shard_items"]), len(items) - n * int(want["shard_items"]))  # type: ignore[call-overload]
        if file.is_symlink():
            return f"shard {file.name} is a link"
        try:
            shard = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            return f"shard {file.name} unreadable ({str(error)[:60]})"
        if shard.shape != (rows, spec.views, want["classes"]) or shard.dtype != np.dtype(spec.precision):
            return f"shard {file.name} is {shard.dtype} {shard.shape}"
    return None


def _shard_files(shards: Path, n: int, shard_items: int) -> list[Path]:
    return [shards / f"logits-{k:05d}.npy" for k in range(-(-n // max(shard_items, 1)))]


def load_or_build(teacher: nn.Module, source: ImageSet, items: torch.Tensor, spec: BankSpec, runtime: Runtime,
                  batch_size: int, path: Path, progress: Callable[[str], None]) -> dict[str, object]:
    """The bank at ``path`` (its parameters) with its logits memory-mapped, built first if it is
    not there or not the one asked for (once, under a lock; a mismatch is said in one line)."""
    with exclusive(path.with_name(path.name + ".lock"), f"view bank {path.name}", wait=True, echo=progress):
        why = _check(path, spec, items)
        if why is not None:
            if why != "not built":  # a built bank that is not this one: none of it is reused
                progress(f"  view bank {path.name}: {why}; building it again")
                path.unlink(missing_ok=True)
                for stale in (*_shards(path).glob("logits-*.npy"), _shards(path) / "meta.json"):
                    stale.unlink(missing_ok=True)
            _build(teacher, source, items, spec, runtime, batch_size, path, progress)
            why = _check(path, spec, items)
            if why is not None:
                raise BenchError(f"view bank {path}: {why} right after it was built")
        head = load_tensors(path)
        meta = read_json(_shards(path) / "meta.json")
        files = _shard_files(_shards(path), len(items), int(meta["shard_items"]))
        return {**head, "logits": ShardedLogits([np.load(f, mmap_mode="r") for f in files], PRECISIONS[spec.precision])}


def _build(teacher: nn.Module, source: ImageSet, items: torch.Tensor, spec: BankSpec, runtime: Runtime,
           batch_size: int, path: Path, progress: Callable[[str], None]) -> None:
    params = draw_params(len(items), spec)
    shards = _shards(path)
    if shards.is_symlink():
        raise BenchError(f"view bank {shards}: a link; refusing to follow it out of the results folder")
    shards.mkdir(parents=True, exist_ok=True)
    dtype = PRECISIONS[spec.precision]
    teacher.eval()
    batch_size = runtime.inference_batch(batch_size)
    shard_items = CHUNK_BATCHES * batch_size
    meta_file = shards / "meta.json"
    meta = read_json(meta_file) if meta_file.is_file() else None
    files = _shard_files(shards, len(items), shard_items)
    if not (isinstance(meta, dict) and {k: v for k, v in meta.items() if k != "classes"}
            == {k: v for k, v in _meta(spec, items, shard_items, 0).items() if k != "classes"}):
        for stale in shards.glob("logits-*.npy"):  # another bank's shards: not ours to resume
            stale.unlink()
        meta = None
    done = 0
    while done < len(files) and files[done].is_file():
        done += 1
    if done:
        progress(f"  resuming the view bank at image {done * shard_items}/{len(items)}")
    started, last_print, resumed_at = time.perf_counter(), time.monotonic(), done * shard_items
    for n in range(done, len(files)):
        part = items[n * shard_items:(n + 1) * shard_items]
        logits, offset = [], n * shard_items
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
        shard = torch.cat(logits).numpy()
        if meta is None:  # the class count is known at the first shard
            meta = _meta(spec, items, shard_items, int(shard.shape[2]))
            atomic_write_json(meta_file, meta)
        buffer = io.BytesIO()
        np.save(buffer, shard, allow_pickle=False)
        atomic_write_bytes(files[n], buffer.getvalue())
    atomic_torch_save(path, {"items": items.clone(), **params})  # last: its presence means built
    progress(f"  view bank of {len(items)} images x {spec.views} views built in {time.perf_counter() - started:.1f} s")


class ShardedLogits:
    """A bank's logits [items, views, classes] over memory-mapped shards: rows are gathered from
    the files (the page cache), never loaded whole, and only a batch's rows reach the device."""

    def __init__(self, shards: list[np.ndarray], dtype: torch.dtype) -> None:
        self.shards, self.dtype = shards, dtype
        self.shard_items = shards[0].shape[0] if shards else 1
        self.shape = (sum(s.shape[0] for s in shards), *(shards[0].shape[1:] if shards else (0, 0)))

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, rows: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """logits[rows[i], views[i]] as [len(rows), classes] (the bank's dtype), on the CPU."""
        out = torch.empty((len(rows), self.shape[2]), dtype=self.dtype)
        which, at = rows // self.shard_items, rows % self.shard_items
        for s in which.unique().tolist():
            mask = which == s
            out[mask] = torch.from_numpy(np.ascontiguousarray(self.shards[s][at[mask].numpy(), views[mask].numpy()]))
        return out

    def all(self) -> torch.Tensor:
        """Every logit in memory (tests and small banks only)."""
        return torch.cat([torch.from_numpy(np.array(s)) for s in self.shards])


class BankedTeacher:
    """A student's side of a bank: its view of each image (which of the K, from its own
    generator) and the teacher's stored logits of that very view."""

    def __init__(self, bank: dict[str, Any], source_size: int, spec: BankSpec, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        self.position = item_positions(bank["items"], source_size)
        self.dy, self.dx, self.flip = bank["dy"], bank["dx"], bank["flip"]
        self.logits: ShardedLogits = bank["logits"]  # memory-mapped: a batch's rows go to the device
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
        return self.logits.rows(rows.cpu(), choice.cpu()).to(self.device, non_blocking=True).float()
