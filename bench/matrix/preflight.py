"""Check, before anything runs, that every dataset and weight file the cells need is on disk.

Without this a matrix would train its teachers for hours and only then find the students'
unlabeled pool missing. Failing first, with the one-line message that says where we looked and
how to get it (``bench prefetch``), is what a user on a compute node without internet needs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from bench.errors import BenchError, DataNotFoundError
from bench.matrix.plan import Cell
from bench.results.store import Store


def needed_inputs(cells: Iterable[Cell]) -> tuple[set[tuple[str, str, int | None]], set[str], set[str]]:
    """(dataset, split, image_size) triples, pretrained architectures and weight files
    (``encoder_file``) the cells use."""
    datasets: set[tuple[str, str, int | None]] = set()
    weights: set[str] = set()
    files: set[str] = set()
    for cell in cells:
        c = cell.config
        datasets |= {(c.dataset, "train", c.image_size), (c.dataset, "test", c.image_size)}
        if c.unlabeled:
            datasets.add((c.unlabeled, "train", c.image_size))
        if c.pretrained:
            weights.add(c.arch)
        if c.encoder_file:
            files.add(c.encoder_file)
    return datasets, weights, files


def encoder_file_path(name: str) -> Path:
    """Where an ``encoder_file`` is, or a one-line DataNotFoundError saying how to make it."""
    path = Path(name).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"encoder_file {path}: not found; it cannot be downloaded: convert a SimCLR release "
                                "(e.g. r50_1x_sk0) to a PyTorch state dict of the architecture and put it there")
    return path


def check_inputs(cells: Iterable[Cell], data_root: Path | None, load: bool = True) -> None:
    """Raise DataNotFoundError (one line) for the first missing dataset or weight file.

    ``load``: load each dataset (cells that run in this process then find it in memory);
    otherwise only find its files, as the loader would (cells run on a cluster load their data
    there, and a login node need not read it all)."""
    from bench.data.datasets import load_dataset, locate_dataset
    from bench.models.weights import check_pretrained_available

    datasets, weights, files = needed_inputs(cells)
    for name, split, size in sorted(datasets, key=str):
        if load:
            try:
                load_dataset(name, split, root=data_root, image_size=size)
            except (MemoryError, RuntimeError) as error:  # torch's allocator says RuntimeError
                if not isinstance(error, MemoryError) and "alloc" not in str(error).lower():
                    raise
                raise BenchError(f"dataset {name} ({split}) at image_size {size}: does not fit in this machine's memory "
                                 f"({str(error).splitlines()[0][:120]}); see `bench plan MATRIX --cost` for what each "
                                 "cell holds, and run it on a node with more") from None
        else:
            locate_dataset(name, data_root, [split])
    for arch in sorted(weights):
        check_pretrained_available(arch)
    for name in sorted(files):
        encoder_file_path(name)


def check_parents(cells: Iterable[Cell], store: Store, planned: Iterable[Cell] = ()) -> None:
    """A done parent whose ``model.pt`` is gone (deleted, or lost with a disk) cannot serve its
    dependants: say so before anything runs, with how to have it rewritten. A parent that trains
    nothing (a ``Computation``: annotate) has no model.pt: its dependants load its artifacts, so
    it is a valid done parent. Whether a parent trains is read from the plan (``planned``: every
    cell of the matrix, the done ones too), not from its folder: a finished parent is not among
    the cells still to run."""
    from bench.matrix.names import requirement

    cells = list(cells)
    method_of = {c.id: c.config.method for c in (*planned, *cells)}
    for cell in cells:
        for role, dep_id in sorted(cell.config.deps.items()):
            dep = store.cell(dep_id)
            needs = requirement(method_of[dep_id]) if dep_id in method_of else None
            if needs is not None and not needs.trains:
                continue
            if dep.is_done() and not dep.model.exists():
                raise BenchError(f"cell {cell.id} needs its {role} {dep_id}, which is marked done but has no {dep.model.name} "
                                 f"({dep.model}); rerun it: rm {dep.done_marker} and run again (it trains again, or resumes "
                                 f"from its checkpoint if it was run with --keep-checkpoints)")
