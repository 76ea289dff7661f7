"""The registries' names, readable without importing torch: planning a matrix checks method,
architecture and dataset names and what each method needs, and must not pay the seconds that
importing torch and timm take (``bench plan`` of the demo took 10 s, 7 of them imports).

The index (methods with their requirements, datasets, bench's models, timm's architectures) is
built once by importing the registries, and cached as JSON under ``$XDG_CACHE_HOME/bench`` (or
``~/.cache/bench``) keyed by the installed bench, timm and torch versions and by the size and
modification time of every module that registers a name; any change rebuilds it. A cache that
cannot be written (a read-only home) only costs the imports.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.matrix.requirements import REQUIREMENTS, Requirement

PACKAGE = Path(__file__).resolve().parents[1]
REGISTERING = ("methods", "models", "data/datasets.py", "data/in_memory_sets.py", "data/torchvision_sets.py",
               "data/image_folders.py", "matrix/requirements.py")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


def _key() -> str:
    parts = [_version("bench"), _version("timm"), _version("torch")]
    for entry in REGISTERING:
        path = PACKAGE / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            stat = file.stat()
            parts.append(f"{file.relative_to(PACKAGE)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bench"


def build() -> dict[str, Any]:
    """The index from the registries themselves (imports torch and timm)."""
    import timm

    from bench.data.datasets import dataset_names
    from bench.methods import METHODS
    from bench.models.architectures import MODELS

    return {
        "methods": {name: REQUIREMENTS[name].as_dict() for name in METHODS.names()},
        "datasets": sorted(dataset_names()),
        "models": MODELS.names(),
        # what timm.is_model accepts: every registered entrypoint (deprecated names too)
        "timm": sorted(getattr(getattr(timm.models, "_registry", None), "_model_entrypoints", None) or timm.list_models()),
    }


@lru_cache(maxsize=1)
def index() -> dict[str, Any]:
    path = _cache_dir() / f"names-{_key()}.json"
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and {"methods", "datasets", "models", "timm"} <= set(data):
            return data
    data = build()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".names-", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)
    return data


def method_exists(name: Any) -> bool:
    return isinstance(name, str) and name in index()["methods"]


def dataset_exists(name: Any) -> bool:
    return isinstance(name, str) and name in index()["datasets"]


def architecture_exists(name: Any) -> bool:
    """A paper model of ours or a timm architecture (a pretrained tag after '.' allowed), as
    ``bench.models.architectures.architecture_exists`` says, without importing timm."""
    if not isinstance(name, str):
        return False
    data = index()
    return name in data["models"] or name.partition(".")[0] in data["timm"]


@lru_cache(maxsize=None)
def requirement(method: str) -> Requirement | None:
    """The requirement of a method by name, from the name index (no torch import; read once per
    method and process: the planner asks for every cell)."""
    data = index()["methods"].get(method)
    return None if data is None else Requirement.from_dict(data)


@lru_cache(maxsize=None)
def methods_reading(field: str) -> tuple[str, ...]:
    """The methods that declare they read ``field`` (``@method(..., fields=...)``), sorted."""
    return tuple(sorted(name for name, data in index()["methods"].items() if field in data.get("fields", ())))
