"""Train/val/test and labeled/unlabeled splits per paper protocol, written once as manifests.

Protocols:
- ``official``: the dataset's own train/test split (menghani2019); ``val_fraction`` of train,
  stratified, is held out for validation when a matrix selects on validation.
- ``resplit_4_1_1``: the whole dataset (train + test) re-split 4:1:1 into train/val/test,
  stratified per class (khose2021).
The labeled subset is a stratified ``label_fraction`` of train; the rest of train is unlabeled.
``n_per_class`` picks that many labeled samples per class (menghani2019's fine-tuning set).

Each split is drawn from a generator seeded by the cell's seed, written once as a manifest
(indices, sizes, a hash of the targets, a checksum) and verified whenever it is reused: a
changed dataset or an edited manifest is an error, never a silent re-sample.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from bench.data.images import ImageSet, StreamedImageSet, TensorImageSet
from bench.errors import BenchError
from bench.registry import Registry
from bench.seeding import derived_generator
from bench.results.store import atomic_write_json, read_json

PROTOCOLS: Registry[Callable[..., dict[str, torch.Tensor]]] = Registry("split protocol")


@dataclass
class Splits:
    """Index sets; ``train``/``labeled``/``unlabeled``/``val``/``few`` index ``source``, ``test`` indexes ``test_source``."""

    source: ImageSet
    test_source: ImageSet
    train: torch.Tensor
    labeled: torch.Tensor
    unlabeled: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    few: torch.Tensor | None


def _by_class(targets: torch.Tensor, pool: torch.Tensor, generator: torch.Generator) -> dict[int, torch.Tensor]:
    """Pool indices grouped per class, each group shuffled."""
    labels = targets[pool]
    groups: dict[int, torch.Tensor] = {}
    for cls in torch.unique(labels).tolist():
        members = pool[labels == cls]
        groups[int(cls)] = members[torch.randperm(len(members), generator=generator)]
    return groups


def stratified_take(targets: torch.Tensor, pool: torch.Tensor, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Take ``fraction`` of each class of ``pool`` (at least one per class): (taken, rest), sorted."""
    taken, rest = [], []
    for members in _by_class(targets, pool, generator).values():
        k = len(members) if fraction >= 1.0 else max(1, round(fraction * len(members)))
        taken.append(members[:k])
        rest.append(members[k:])
    return _sorted_cat(taken), _sorted_cat(rest)


def per_class(targets: torch.Tensor, pool: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` samples of each class of ``pool`` (all of a class that has fewer)."""
    return _sorted_cat([members[:n] for members in _by_class(targets, pool, generator).values()])


def _sorted_cat(parts: list[torch.Tensor]) -> torch.Tensor:
    if not parts:
        return torch.empty(0, dtype=torch.int64)
    return torch.sort(torch.cat(parts)).values


@PROTOCOLS.register("official")
def _official(train_targets: torch.Tensor, test_targets: torch.Tensor, val_fraction: float, seed: int) -> dict[str, torch.Tensor]:
    everything = torch.arange(len(train_targets))
    if val_fraction > 0:
        val, train = stratified_take(train_targets, everything, val_fraction, derived_generator(seed, "val"))
    else:
        val, train = torch.empty(0, dtype=torch.int64), everything
    return {"train": train, "val": val, "test": torch.arange(len(test_targets))}


@PROTOCOLS.register("resplit_4_1_1")
def _resplit(train_targets: torch.Tensor, test_targets: torch.Tensor, val_fraction: float, seed: int) -> dict[str, torch.Tensor]:
    targets = torch.cat([train_targets, test_targets])
    parts: dict[str, list[torch.Tensor]] = {"train": [], "val": [], "test": []}
    for members in _by_class(targets, torch.arange(len(targets)), derived_generator(seed, "resplit")).values():
        n_train, n_val = round(len(members) * 4 / 6), round(len(members) / 6)
        parts["train"].append(members[:n_train])
        parts["val"].append(members[n_train : n_train + n_val])
        parts["test"].append(members[n_train + n_val :])
    return {k: _sorted_cat(v) for k, v in parts.items()}


def _targets_hash(targets: torch.Tensor) -> str:
    return hashlib.sha256(targets.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def _checksum(indices: dict[str, list[int]]) -> str:
    return hashlib.sha256(json.dumps(indices, sort_keys=True).encode()).hexdigest()


def manifest_key(dataset: str, protocol: str, val_fraction: float, label_fraction: float, n_per_class: int | str | None, seed: int) -> str:
    return f"{dataset}-{protocol}-v{val_fraction!r}-f{label_fraction!r}-n{n_per_class if n_per_class is not None else 'none'}-s{seed}"


def load_or_create_manifest(
    path: Path, train_targets: torch.Tensor, test_targets: torch.Tensor, protocol: str,
    val_fraction: float, label_fraction: float, n_per_class: int | str | None, seed: int,
) -> dict[str, torch.Tensor]:
    """Indices of every split: read and verified if the manifest exists, else drawn and written."""
    fingerprint = {"train": [len(train_targets), _targets_hash(train_targets)], "test": [len(test_targets), _targets_hash(test_targets)]}
    params = {"protocol": protocol, "val_fraction": val_fraction, "label_fraction": label_fraction, "n_per_class": n_per_class, "seed": seed}
    if path.exists():
        manifest = read_json(path)
        if manifest.get("params", params) != params:
            raise BenchError(f"{path}: drawn for {manifest['params']}, not {params}")
        if _checksum(manifest["indices"]) != manifest.get("checksum"):
            raise BenchError(f"{path}: split manifest checksum mismatch (edited or corrupt); delete it only if you mean to re-draw the split")
        if manifest.get("fingerprint") != fingerprint:
            raise BenchError(f"{path}: the dataset changed since this split was drawn (sizes or labels differ: {manifest.get('fingerprint')} vs {fingerprint})")
        return {k: torch.tensor(v, dtype=torch.int64) for k, v in manifest["indices"].items()}
    parts = PROTOCOLS.get(protocol)(train_targets, test_targets, val_fraction, seed)
    source_targets = torch.cat([train_targets, test_targets]) if protocol == "resplit_4_1_1" else train_targets
    labeled, unlabeled = stratified_take(source_targets, parts["train"], label_fraction, derived_generator(seed, "labeled"))
    parts.update(labeled=labeled, unlabeled=unlabeled)
    if n_per_class is not None:
        parts["few"] = labeled if n_per_class == "all" else per_class(source_targets, labeled, int(n_per_class), derived_generator(seed, "few"))
    indices = {k: v.tolist() for k, v in parts.items()}
    atomic_write_json(path, {"params": params, "fingerprint": fingerprint, "indices": indices, "checksum": _checksum(indices)})
    return parts


def concat(a: ImageSet, b: ImageSet) -> ImageSet:
    """One image set of a's items followed by b's (for protocols that pool train and test)."""
    if isinstance(a, TensorImageSet) and isinstance(b, TensorImageSet):
        return TensorImageSet(torch.cat([a.images, b.images]), torch.cat([a.targets, b.targets]), a.num_classes, a.name, a.out_size)
    if isinstance(a, StreamedImageSet) and isinstance(b, StreamedImageSet):
        from torch.utils.data import ConcatDataset

        def both(x: Any, y: Any) -> ConcatDataset | None:  # the recipe's decoded images and files, when both have them
            return None if x is None or y is None else ConcatDataset([x, y])

        return StreamedImageSet(ConcatDataset([a.dataset, b.dataset]), torch.cat([a.targets, b.targets]), a.num_classes, a.channels,
                                a.size, a.name, decoded=both(a.decoded, b.decoded), files=both(a.files, b.files),
                                decode_device=a.decode_device)
    raise BenchError(f"cannot pool {type(a).__name__} with {type(b).__name__}")


def make_splits(
    train: ImageSet, test: ImageSet, manifest_dir: Path, dataset: str, protocol: str,
    val_fraction: float, label_fraction: float, n_per_class: int | str | None, seed: int,
) -> Splits:
    """All index sets of one cell's labeled dataset, verified against its manifest."""
    key = manifest_key(dataset, protocol, val_fraction, label_fraction, n_per_class, seed)
    parts = load_or_create_manifest(manifest_dir / f"{key}.json", train.targets, test.targets, protocol, val_fraction, label_fraction, n_per_class, seed)
    source = concat(train, test) if protocol == "resplit_4_1_1" else train
    test_source = source if protocol == "resplit_4_1_1" else test
    return Splits(source, test_source, parts["train"], parts["labeled"], parts["unlabeled"], parts["val"], parts["test"], parts.get("few"))
