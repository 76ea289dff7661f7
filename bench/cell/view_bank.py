"""A teacher's view bank (FKD-style "consistent teaching"): the teacher's logits for K augmented
views of every image its students train on, computed once and replayed by every student.

The bank draws, for each image and view, the augmentation's parameters (bench/cell/bank_views.py:
pad-crop offsets and a flip bit, or a random-resized crop's box on the decoded image and a flip
bit under ``recipe: imagenet``) from generators of ``bank_seed``, and stores them with the
teacher's logits of that view (float16 by default; with ``bank_top_k`` the k largest and one
value for the rest, bench/cell/soft_labels.py). A student draws, per image and epoch, which of the K
views it sees (from its own seed and epoch, so a resumed epoch draws the same), regenerates that
view from the image and the stored parameters, and takes the stored logits: the teacher's target
is always computed on the very view the student sees, and the teacher's forward, 95% of an
augmented distillation epoch, is paid once per teacher instead of once per student epoch.

The bank is an artifact of the teacher cell (``artifacts/bank-<key>.pt``), its key naming
everything that changes the logits: the inputs (dataset, size, items), the augmentation (names,
padding, recipe), K, the bank seed, the stored precision and k, and how the teacher ran (AMP,
device type); a pad-crop bank of all logits keeps the key it had before recipes and k. It is
built under a lock, so two students of one teacher build it once. Its parts are written shard by
shard (``bank-<key>.shards/{params,indices,logits}-NNNNN.npy``, each written once, atomically;
memory holds one shard) with ``meta.json`` (spec, item count and digest, views, classes, dtype,
shard size, recipe and k when set); ``bank-<key>.pt`` (the items, and pad-crop parameters) is
written last and means "built". A killed build resumes at its first missing shard. Before use
every part is checked against what the student needs; a mismatch is rebuilt, saying why in one
line. Students read the shards memory-mapped: only a batch's rows reach the device.
"""
from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from bench.cell.bank_views import BankSpec, apply_params, draw_params, view_batches
from bench.data.images import ImageSet
from bench.data.recipe import ReplayCrops
from bench.training.inference import forward_in_batches, item_positions, layout, outputs_key
from bench.results.locks import exclusive
from bench.training.interface import Batch
from bench.training.runtime import Runtime
from bench.seeding import derived_generator
from bench.errors import BenchError
from bench.cell.soft_labels import INDEX_DTYPE, rebuild, top_k
from bench.results.store import UnreadableFile, atomic_torch_save, atomic_write_bytes, atomic_write_json, load_tensors, read_json

CHUNK_BATCHES = 50  # a shard of logits holds this many inference batches of images
PRECISIONS = {"float16": torch.float16, "float32": torch.float32}
PARAM_BYTES = {False: 5, True: 10}  # per view: pad-crop (dy, dx int16, flip) or a box and flip (5 x int16)


def bank_path(folder: Path, source: ImageSet, items: torch.Tensor, spec: BankSpec, runtime: Runtime) -> Path:
    return folder / f"bank-{outputs_key(source, items, spec.describe(), runtime)}.pt"


def bank_bytes(items: int, views: int, classes: int, precision: str, top_k: int | None = None, boxes: bool = False) -> int:
    """A bank's size on disk (its logits, or top-k logits, the rest's value and int16 classes,
    and the views' parameters): what ``plan --cost`` states before the bank is built."""
    size = PRECISIONS[precision].itemsize
    per_view = classes * size if top_k is None else (top_k + 1) * size + top_k * INDEX_DTYPE.itemsize
    return items * views * (per_view + PARAM_BYTES[boxes])


def _shards(path: Path) -> Path:
    """The folder of a bank's shards: per shard of items one ``.npy`` file of each part
    (``params`` for random-resized views, ``indices`` for top-k, then ``logits``, whose presence
    means the shard is done), each written whole (atomically) as the build reaches it: nothing
    written is rewritten, a killed build resumes at its first missing shard, memory holds one
    shard, and a student reads them memory-mapped."""
    return path.with_name(path.name.removesuffix(".pt") + ".shards")


def _parts(spec: BankSpec, classes: int) -> dict[str, tuple[int, np.dtype]]:
    """The stored parts of a shard: name -> (last dimension, dtype), ``logits`` last."""
    parts: dict[str, tuple[int, np.dtype]] = {}
    if spec.boxes:
        parts["params"] = (5, np.dtype(np.int16))
    if spec.top_k:
        parts["indices"] = (spec.top_k, np.dtype(np.int16))
    parts["logits"] = (classes if spec.top_k is None else spec.top_k + 1, np.dtype(spec.precision))
    return parts


def _meta(spec: BankSpec, items: torch.Tensor, shard_items: int, classes: int) -> dict[str, object]:
    digest = hashlib.sha256(items.to(torch.int64).numpy().tobytes()).hexdigest()
    more = {"recipe": spec.recipe} if spec.recipe != "pad_crop" else {}
    more |= {"top_k": spec.top_k} if spec.top_k else {}
    return {"format": 2, "spec": spec.describe(), "items": len(items), "items_sha256": digest, "views": spec.views,
            "classes": classes, "dtype": spec.precision, "shard_items": shard_items, **more}


def _shard_files(shards: Path, n: int, shard_items: int, part: str = "logits") -> list[Path]:
    return [shards / f"{part}-{k:05d}.npy" for k in range(-(-n // max(shard_items, 1)))]


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
    shard_items, classes = int(meta.get("shard_items", 0) or 0), int(meta.get("classes", 0) or 0)
    want = _meta(spec, items, shard_items, classes)
    wrong = [k for k, v in want.items() if meta.get(k) != v] + [k for k in ("recipe", "top_k") if k in meta and k not in want]
    if wrong:
        return f"made for other {', '.join(wrong)}"
    for name in () if spec.boxes else ("dy", "dx", "flip"):
        if not isinstance(head.get(name), torch.Tensor) or tuple(head[name].shape) != (len(items), spec.views):
            return f"its {name} is not [{len(items)}, {spec.views}]"
    for part, (width, dtype) in _parts(spec, classes).items():
        for n, file in enumerate(_shard_files(shards, len(items), shard_items, part)):
            rows = min(shard_items, len(items) - n * shard_items)
            if file.is_symlink():
                return f"shard {file.name} is a link"
            try:
                shard = np.load(file, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as error:
                return f"shard {file.name} unreadable ({str(error)[:60]})"
            if shard.shape != (rows, spec.views, width) or shard.dtype != dtype:
                return f"shard {file.name} is {shard.dtype} {shard.shape}"
    return None


def load_or_build(teacher: nn.Module, source: ImageSet, items: torch.Tensor, spec: BankSpec, runtime: Runtime,
                  batch_size: int, path: Path, progress: Callable[[str], None]) -> dict[str, object]:
    """The bank at ``path``, its parts memory-mapped, built first if it is not there or not the
    one asked for (once, under a lock; a mismatch is said in one line)."""
    with exclusive(path.with_name(path.name + ".lock"), f"view bank {path.name}", wait=True, echo=progress):
        why = _check(path, spec, items)
        if why is not None:
            if why != "not built":  # a built bank that is not this one: none of it is reused
                progress(f"  view bank {path.name}: {why}; building it again")
                path.unlink(missing_ok=True)
                for stale in (*_shards(path).glob("*.npy"), _shards(path) / "meta.json"):
                    stale.unlink(missing_ok=True)
            _build(teacher, source, items, spec, runtime, batch_size, path, progress)
            why = _check(path, spec, items)
            if why is not None:
                raise BenchError(f"view bank {path}: {why} right after it was built")
        head = load_tensors(path)
        meta = read_json(_shards(path) / "meta.json")
        shard_items, classes = int(meta["shard_items"]), int(meta["classes"])
        parts = {part: ShardedRows([np.load(f, mmap_mode="r") for f in _shard_files(_shards(path), len(items), shard_items, part)])
                 for part in _parts(spec, classes)}
        return {**head, **parts, "classes": classes}


def _build(teacher: nn.Module, source: ImageSet, items: torch.Tensor, spec: BankSpec, runtime: Runtime,
           batch_size: int, path: Path, progress: Callable[[str], None]) -> None:
    pad_params = None if spec.boxes else draw_params(len(items), spec)
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
        for stale in shards.glob("*.npy"):  # another bank's shards: not ours to resume
            stale.unlink()
        meta = None
    done = 0
    while done < len(files) and files[done].is_file():
        done += 1
    if done:
        progress(f"  resuming the view bank at image {done * shard_items}/{len(items)}")
    started, last_print, resumed_at = time.perf_counter(), time.monotonic(), done * shard_items
    for n in range(done, len(files)):
        first = n * shard_items
        stored: dict[str, list[torch.Tensor]] = {"params": [], "indices": [], "logits": []}
        offset, classes = first, 0
        for idx, view, params in view_batches(source, items[first:first + shard_items], first, spec, pad_params, batch_size, runtime):
            logits = torch.stack([forward_in_batches(teacher, layout(view(k), runtime), runtime).float().cpu()
                                  for k in range(spec.views)], dim=1)
            classes = logits.shape[-1]
            if spec.top_k:
                logits, index = top_k(logits, spec.top_k)
                stored["indices"].append(index)
            stored["logits"].append(logits.to(dtype))
            if params is not None:
                stored["params"].append(params)
            offset += len(idx)
            if time.monotonic() - last_print > runtime.progress_seconds:
                last_print = time.monotonic()
                rate = (offset - resumed_at) * spec.views / (time.perf_counter() - started)
                progress(f"  view bank: image {offset}/{len(items)}, {spec.views} views, {rate:.0f} views/s")
        if meta is None:  # the class count is known at the first shard
            meta = _meta(spec, items, shard_items, classes)
            atomic_write_json(meta_file, meta)
        for part in _parts(spec, int(meta["classes"])):  # logits last: its file means the shard is done
            buffer = io.BytesIO()
            np.save(buffer, torch.cat(stored[part]).numpy(), allow_pickle=False)
            atomic_write_bytes(shards / f"{part}-{n:05d}.npy", buffer.getvalue())
    atomic_torch_save(path, {"items": items.clone(), **(pad_params or {})})  # last: its presence means built
    progress(f"  view bank of {len(items)} images x {spec.views} views built in {time.perf_counter() - started:.1f} s")


class ShardedRows:
    """A bank's part [items, views, ...] over memory-mapped shards: rows are gathered from the
    files (the page cache), never loaded whole, and only a batch's rows reach the device."""

    def __init__(self, shards: list[np.ndarray]) -> None:
        self.shards = shards
        self.shard_items = shards[0].shape[0] if shards else 1
        self.shape = (sum(s.shape[0] for s in shards), *(shards[0].shape[1:] if shards else (0, 0)))
        self.dtype = torch.from_numpy(np.empty(0, shards[0].dtype if shards else np.float32)).dtype

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, rows: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """part[rows[i], views[i]] as [len(rows), ...] (the stored dtype), on the CPU."""
        out = torch.empty((len(rows), *self.shape[2:]), dtype=self.dtype)
        which, at = rows // self.shard_items, rows % self.shard_items
        for s in which.unique().tolist():
            mask = which == s
            out[mask] = torch.from_numpy(np.ascontiguousarray(self.shards[s][at[mask].numpy(), views[mask].numpy()]))
        return out

    def all(self) -> torch.Tensor:
        """Every row in memory (tests and small banks only)."""
        return torch.cat([torch.from_numpy(np.array(s)) for s in self.shards])


class BankedTeacher:
    """A student's side of a bank: its view of each image (which of the K, drawn from its own
    seed and epoch) and the teacher's stored logits of that very view. Pad-crop views are drawn
    per batch (``view``) and remade on the device; random-resized ones per epoch (``crops``),
    handed to the loader as the stored boxes, so ``view`` gets them already cut."""

    def __init__(self, bank: dict[str, Any], source_size: int, spec: BankSpec, device: torch.device, seed: int = 0) -> None:
        self.spec, self.device, self.seed = spec, device, seed
        self.position = item_positions(bank["items"], source_size)
        self.pad = None if spec.boxes else (bank["dy"], bank["dx"], bank["flip"])
        self.params: ShardedRows | None = bank.get("params")
        self.logits: ShardedRows = bank["logits"]  # memory-mapped: a batch's rows go to the device
        self.indices: ShardedRows | None = bank.get("indices")
        self.classes = int(bank.get("classes", self.logits.shape[-1]))
        self._epoch_choice: torch.Tensor | None = None
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (indices, rows, views chosen) of the batch being trained

    def crops(self, epoch: int, indices: torch.Tensor) -> ReplayCrops:
        """The epoch's stored boxes and flips of ``indices`` (a pass, in order), for the loader."""
        assert self.params is not None, "crops: a pad-crop bank's views are remade on the device"
        generator = derived_generator(self.seed, epoch, "bank-view")
        self._epoch_choice = torch.randint(0, self.spec.views, (len(self.logits),), generator=generator)
        rows = self.position[indices.cpu()]
        params = self.params.rows(rows, self._epoch_choice[rows])
        return ReplayCrops(params[:, :4].long(), params[:, 4].bool())

    def view(self, images: torch.Tensor, generator: torch.Generator, indices: torch.Tensor) -> torch.Tensor:
        rows = self.position[indices.cpu()]
        if self.pad is None:
            if self._epoch_choice is None:
                raise RuntimeError("view bank: a batch before the epoch's crops were drawn")
            self._last = (indices, rows, self._epoch_choice[rows])
            return images.float().div_(255.0)
        choice = torch.randint(0, self.spec.views, (len(rows),), generator=generator)
        self._last = (indices, rows, choice)
        dy, dx, flip = self.pad
        return apply_params(images, dy[rows, choice], dx[rows, choice], flip[rows, choice], self.spec)

    def targets(self, batch: Batch) -> torch.Tensor:
        if self._last is None or self._last[0] is not batch.indices:
            raise RuntimeError("view bank: the teacher's targets were asked for a batch whose views it did not draw")
        _, rows, choice = self._last
        rows, choice = rows.cpu(), choice.cpu()
        stored = self.logits.rows(rows, choice)
        if self.indices is not None:
            stored = rebuild(stored, self.indices.rows(rows, choice), self.classes)
        return stored.to(self.device, non_blocking=True).float()
