"""Shared fixtures: small real matrices written on the fly, run in-process."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "fixtures" / "tiny.yaml"

Speed = dict[str, dict[str, tuple[str, float]]]
"""Benchmark group -> side ("bench" or "baseline") -> (what ran, median seconds)."""
SPEED = pytest.StashKey[Speed]()


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
    """tests/fixtures/tiny.yaml run once (teacher, blind student, two fine-tunes; ~6 s)."""
    from bench.cli import main

    root = tmp_path_factory.mktemp("tiny-results")
    assert main(["run", str(TINY), "--results", str(root)]) == 0
    return root


@pytest.fixture(scope="session")
def speed(pytestconfig: pytest.Config) -> Speed:
    """Where tests/pipelines/test_benchmarks.py keeps each group's medians for the summary below."""
    return pytestconfig.stash.setdefault(SPEED, {})


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Each benchmark group's bench path against its baseline, both measured in this run."""
    pairs = {group: sides for group, sides in config.stash.get(SPEED, {}).items() if {"bench", "baseline"} <= set(sides)}
    if not pairs:
        return
    terminalreporter.section("bench against its baselines (median of each, this run)")
    for group, sides in pairs.items():
        (ours, mine), (theirs, base) = sides["bench"], sides["baseline"]
        terminalreporter.write_line(f"{group}:\n  {ours} {mine * 1e3:.1f} ms, {theirs} {base * 1e3:.1f} ms: "
                                    f"bench takes {mine / base:.3f}x the baseline's time ({base / mine:.1f}x as fast)")
