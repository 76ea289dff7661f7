"""Shared fixtures: small real matrices written on the fly, run in-process."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny.yaml"


def write_matrix(folder: Path, matrix: dict[str, Any], name: str = "m.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(matrix, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the network for weights."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/data/tiny.yaml run once (teacher, blind student, two fine-tunes; ~6 s)."""
    from bench.cli import main

    root = tmp_path_factory.mktemp("tiny-results")
    assert main(["run", str(TINY), "--results", str(root)]) == 0
    return root
