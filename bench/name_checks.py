"""Which config fields name a registry entry, and how to check the name exists."""
from __future__ import annotations

from typing import Any, Callable


def _method_exists(name: Any) -> bool:
    from bench.methods import METHODS

    return name in METHODS


def _architecture_exists(name: Any) -> bool:
    from bench.models import architecture_exists

    return isinstance(name, str) and architecture_exists(name)


def _dataset_exists(name: Any) -> bool:
    from bench.data.datasets import DATASETS

    return name in DATASETS


NAME_CHECKS: dict[str, Callable[[Any], bool]] = {
    "method": _method_exists,
    "arch": _architecture_exists,
    "dataset": _dataset_exists,
    "unlabeled": _dataset_exists,
}
