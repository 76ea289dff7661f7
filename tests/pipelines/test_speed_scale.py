"""bench at 10,000 cells: plan, collect and MLflow ingest against the least code that does the same
work, measured in the same run and never asserted (tests/conftest.py prints the ratios).

``python -m pytest tests/pipelines/test_speed_scale.py --benchmark-enable -o addopts='' -s`` plans and
collects a 10,164-cell matrix (308 teachers, 9,856 students) whose cells are written as done with
synthetic results; MLflow ingest takes 300 of them (the baseline, MLflow's client, costs ~30-50 ms
a run here, so 10,000 would take minutes; bench writes new runs in bulk). In the default suite
(``--benchmark-disable``) the same tests run once each on a 40-cell matrix, as smoke tests.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import random
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bench.results.collect import read_cells
from bench.results.collect_cache import CACHE_FILE
from bench.matrix.schema import Matrix, load_matrix
from bench.matrix.plan import PLAN_COLUMNS, expand, plan_rows, record_plan
from bench.results.store import DONE, Store
from bench.text_table import format_table
from bench.results.ingest import ingest
from tests.pipelines.test_benchmarks import timed
from tests.conftest import Speed, write_matrix

SCALE = {
    "name": "scale",
    "defaults": {"dataset": "digits", "image_size": 8, "epochs": 1},
    "axes": {"seed": list(range(11)), "label_fraction": [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]},
    "stages": {
        "teacher": {"method": "supervised", "axes": {"arch": ["menghani_mlp", "menghani_cnn", "wide_mlp", "resnet10t"]}},
        "student": {"method": "kd", "needs": {"teacher": "teacher"},
                    "axes": {"arch": ["menghani_mlp", "wide_mlp"], "temperature": [1.0, 2.0, 4.0, 8.0],
                             "alpha": [0.5, 0.9], "lr": [0.01, 0.1]}},
    },
}
SMOKE_AXES = {"seed": [0], "label_fraction": [1.0]}  # with one student arch: 4 teachers, 64 students
INGESTED = 300  # 20 in the smoke run
PLAN = "plan: a 10,164-cell matrix, expanded, validated, hashed and tabled"
COLLECT = "collect: 10,164 done cells into one table"
RECOLLECT = "collect: the same 10,164 done cells again, unchanged"
INGEST = f"MLflow ingest: {INGESTED} new cells into a new sqlite database"
REINGEST = f"MLflow ingest: {INGESTED} unchanged cells again"


def scale_matrix(enabled: bool) -> dict[str, Any]:
    if enabled:
        return SCALE
    student = {**SCALE["stages"]["student"], "axes": {**SCALE["stages"]["student"]["axes"], "arch": ["menghani_mlp"]}}
    return {**SCALE, "axes": SMOKE_AXES, "stages": {**SCALE["stages"], "student": student}}


@pytest.fixture(scope="module")
def matrix(benchmark_enabled: bool, tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    return load_matrix(write_matrix(tmp_path_factory.mktemp("matrix"), scale_matrix(benchmark_enabled)))


@pytest.fixture(scope="module")
def benchmark_enabled(request: pytest.FixtureRequest) -> bool:
    return not request.config.getoption("benchmark_disable")


@pytest.fixture(scope="module")
def done_cells(tmp_path_factory: pytest.TempPathFactory, matrix: Matrix) -> Path:
    """Every cell of the matrix written as done (config, per-epoch metrics, result, DONE) with
    synthetic numbers, as a run leaves them; written plainly (this is the fixture, not the subject)."""
    root = tmp_path_factory.mktemp("scale") / "runs"
    store = Store(root)
    cells = expand(matrix)
    record_plan(store, matrix.name, matrix, cells, [])
    draw = random.Random(0)
    for cell in cells:
        folder = store.cell(cell.id).path
        folder.mkdir(parents=True)
        acc = round(draw.uniform(0.5, 0.99), 4)
        (folder / "config.json").write_text(json.dumps(cell.config.model_dump(mode="json"), indent=2, sort_keys=True))
        (folder / "metrics.json").write_text(json.dumps([{"epoch": 1, "train_loss": 0.5, "test_acc": acc, "lr": 0.01}]))
        (folder / "result.json").write_text(json.dumps({
            "test_acc": acc, "val_acc": None, "train_acc": min(1.0, acc + 0.01), "wall_seconds": 3.5,
            "train_images_per_s": 1000.0, "infer_images_per_s": 5000.0, "params": 10000, "epochs_run": 1,
            "host": "bench-speed", "device": "cpu", "git_commit": "unknown"}, indent=2, sort_keys=True))
        (folder / DONE).write_bytes(b"")
    return root


# ------------------------------------------------------------------ plan


def test_plan_with_bench(benchmark: BenchmarkFixture, speed: Speed, matrix: Matrix) -> None:
    def plan() -> str:
        return format_table(PLAN_COLUMNS, plan_rows(expand(matrix)))

    table = timed(benchmark, speed, PLAN, "bench", "bench.matrix.plan (pydantic validation, checks, ids)", plan)
    assert table.count("\n") == len(expand(matrix))


def test_plan_hand_written(benchmark: BenchmarkFixture, speed: Speed, matrix: Matrix) -> None:
    """The least a planner does: the product of the axes, one dict per cell, its sha256, one line
    each; no validation, no checks, no rules."""
    stages = matrix.stages

    def plan() -> str:
        lines, teachers = [], []
        for values in itertools.product(*matrix.axes.values(), *stages["teacher"].axes.values()):
            fields = {**matrix.defaults, "method": "supervised", "stage": "teacher",
                      **dict(zip([*matrix.axes, *stages["teacher"].axes], values))}
            teachers.append((hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12], fields))
            lines.append(" ".join(map(str, [teachers[-1][0], *fields.values()])))
        for (teacher, parent), values in itertools.product(teachers, itertools.product(*stages["student"].axes.values())):
            fields = {**parent, "method": "kd", "stage": "student", "deps": {"teacher": teacher},
                      **dict(zip(stages["student"].axes, values))}
            lines.append(" ".join(map(str, [hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12],
                                            *fields.values()])))
        return "\n".join(lines)

    table = timed(benchmark, speed, PLAN, "baseline", "itertools.product + json + sha256", plan)
    assert table.count("\n") + 1 == len(expand(matrix))


# ------------------------------------------------------------------ collect


def uncached(root: Path) -> tuple[tuple, dict]:
    (root / CACHE_FILE).unlink(missing_ok=True)
    return (root,), {}


def test_collect_with_bench(benchmark: BenchmarkFixture, speed: Speed, done_cells: Path) -> None:
    frame, problems = timed(benchmark, speed, COLLECT, "bench", "bench.results.collect.read_cells, no cache", read_cells,
                            lambda: uncached(done_cells), rounds=3)
    assert not problems and len(frame) == len(Store(done_cells).cell_ids())


def test_collect_again_from_the_cache(benchmark: BenchmarkFixture, speed: Speed, done_cells: Path) -> None:
    read_cells(done_cells)
    frame, _ = timed(benchmark, speed, RECOLLECT, "bench", "bench.results.collect.read_cells, from its cache",
                     lambda: read_cells(done_cells), rounds=3)
    assert len(frame) == len(Store(done_cells).cell_ids())


def test_collect_again_without_the_cache(benchmark: BenchmarkFixture, speed: Speed, done_cells: Path) -> None:
    frame, _ = timed(benchmark, speed, RECOLLECT, "baseline", "bench.results.collect.read_cells, no cache", read_cells,
                     lambda: uncached(done_cells), rounds=3)
    assert len(frame) == len(Store(done_cells).cell_ids())


def test_collect_hand_written(benchmark: BenchmarkFixture, speed: Speed, done_cells: Path) -> None:
    """Read every done cell's config and result, its teacher's config as columns, into a DataFrame."""
    def collect() -> pd.DataFrame:
        rows = []
        for folder in sorted((done_cells / "cells").iterdir()):
            if (folder / DONE).exists():
                config = json.loads((folder / "config.json").read_text())
                row = {**config, **json.loads((folder / "result.json").read_text())}
                for role, dep in config.pop("deps").items():
                    row.update({f"{role}.{k}": v for k, v in json.loads((done_cells / "cells" / dep / "config.json").read_text()).items()})
                rows.append(row)
        return pd.DataFrame(rows)

    frame = timed(benchmark, speed, COLLECT, "baseline", "json.loads of each cell's files + pd.DataFrame", collect, rounds=3)
    assert len(frame) == len(Store(done_cells).cell_ids())


# ------------------------------------------------------------------ MLflow ingest


@pytest.fixture(scope="module")
def few_done_cells(done_cells: Path, tmp_path_factory: pytest.TempPathFactory, benchmark_enabled: bool) -> Path:
    root = tmp_path_factory.mktemp("ingest") / "runs"
    shutil.copytree(done_cells / "plans", root / "plans")
    for name in sorted(p.name for p in (done_cells / "cells").iterdir())[:INGESTED if benchmark_enabled else 20]:
        shutil.copytree(done_cells / "cells" / name, root / "cells" / name)
    return root


def fresh_copy(root: Path, counter: itertools.count) -> Path:
    copy = root.parent / f"copy-{next(counter)}"
    shutil.copytree(root, copy)
    return copy


def test_first_ingest_with_bench(benchmark: BenchmarkFixture, speed: Speed, few_done_cells: Path) -> None:
    copies = itertools.count()
    summary = timed(benchmark, speed, INGEST, "bench", "bench.results.ingest.ingest", ingest,
                    lambda: ((fresh_copy(few_done_cells, copies),), {}), rounds=2)
    assert summary.created == len(Store(few_done_cells).cell_ids())


def test_first_ingest_hand_written(benchmark: BenchmarkFixture, speed: Speed, few_done_cells: Path) -> None:
    """The least a client loop does: per cell a run with its params, final metrics and a FINISHED
    status (no curves, no artifacts, no idempotence, no tags beyond the cell id)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    copies = itertools.count(100)

    def ingest_by_hand(root: Path) -> int:
        client = MlflowClient(tracking_uri=f"sqlite:///{root.resolve()}/mlflow.db")
        experiment = client.create_experiment("bench/scale", artifact_location=(root / "mlartifacts").resolve().as_uri())
        for folder in sorted((root / "cells").iterdir()):
            config, result = (json.loads((folder / name).read_text()) for name in ("config.json", "result.json"))
            run = client.create_run(experiment, tags={"bench.cell_id": folder.name})
            params = [Param(k, str(v)) for k, v in config.items() if k != "deps"]
            metrics = [Metric(k, float(v), 0, 0) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            client.log_batch(run.info.run_id, metrics=metrics, params=params)
            client.set_terminated(run.info.run_id)
        return len(list((root / "cells").iterdir()))

    count = timed(benchmark, speed, INGEST, "baseline", "MlflowClient: create_run, log_batch, set_terminated", ingest_by_hand,
                  lambda: ((fresh_copy(few_done_cells, copies),), {}), rounds=2)
    assert count == len(Store(few_done_cells).cell_ids())


@pytest.fixture(scope="module")
def ingested(few_done_cells: Path) -> Path:
    root = few_done_cells.parent / "ingested"
    shutil.copytree(few_done_cells, root)
    ingest(root)
    return root


def test_unchanged_reingest_with_the_ledger(benchmark: BenchmarkFixture, speed: Speed, ingested: Path) -> None:
    summary = timed(benchmark, speed, REINGEST, "bench", "ingest, by the ledger", ingest, lambda: ((ingested,), {}), rounds=3)
    assert summary.skipped == len(Store(ingested).cell_ids()) and summary.created == summary.updated == 0


def test_unchanged_reingest_by_sha(benchmark: BenchmarkFixture, speed: Speed, ingested: Path) -> None:
    """What every re-ingest did before the ledger: hash each cell's files, list the experiment's runs."""
    from bench.results.ingest_ledger import LEDGER_FILE

    def without_ledger() -> tuple[tuple, dict]:
        (ingested / LEDGER_FILE).unlink(missing_ok=True)
        return (ingested,), {}

    summary = timed(benchmark, speed, REINGEST, "baseline", "ingest, full check by sha", ingest, without_ledger, rounds=3)
    assert summary.skipped == len(Store(ingested).cell_ids()) and summary.created == summary.updated == 0
