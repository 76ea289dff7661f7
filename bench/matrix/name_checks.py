"""Which config fields name a registry entry, and how to check the name exists (``bench.matrix.names``:
without importing torch)."""
from __future__ import annotations

from typing import Any, Callable

from bench.matrix.names import architecture_exists, dataset_exists, method_exists

NAME_CHECKS: dict[str, Callable[[Any], bool]] = {
    "method": method_exists,
    "arch": architecture_exists,
    "dataset": dataset_exists,
    "unlabeled": dataset_exists,
}
