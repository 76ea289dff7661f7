"""MLflow tracking: a finished cell as one MLflow run (params, metrics, tags, artifacts), created or
updated through the client; ``bench.results.ingest`` decides which cells, ``bench.results.tracking_uri``
where.

How it works
------------
Compute jobs never talk to MLflow. A cell writes its own files (``config.json``, ``metrics.json``,
``result.json``, ``DONE``) and ``bench.results.ingest`` copies finished cells into MLflow afterwards, from
``bench ingest DIR`` or ``bench collect --mlflow``. So no two jobs ever write into one sqlite file
or one store at the same time, a cluster job does not need a reachable server, and a server that is
down costs nothing: the results stay on disk and a later ``bench ingest`` catches up. There is no
live per-epoch logging on purpose (it would bring all of that back); the per-epoch curves are logged
at ingest time from ``metrics.json``.

Layout in MLflow (chosen to be easy to read in the UI)
------------------------------------------------------
* One **experiment per matrix**, named ``bench/<matrix>`` (cells in no plan: ``bench/unplanned``).
  A matrix is what one compares (its runs share axes), so the UI's run table and compare view are
  one matrix at a time; the ``bench/`` prefix keeps our experiments together next to anything else
  on a shared server. A cell that belongs to two matrices gets one run in each, like the rows of
  ``bench collect``.
* **Run name** ``<stage>-<arch>-<id[:8]>`` (e.g. ``teacher-resnet18-1eb3ae40``): readable in the
  run list and still unique within a matrix.
* **Params**: the resolved config, flattened (dependencies as ``deps.<role>`` = cell id; lists as
  ``a,b``; ``None`` as ``"None"``).
* **Metrics**: the final results under their plain names, logged once without a step (step 0):
  ``test_acc, val_acc, train_acc, wall_seconds, train_images_per_s, infer_images_per_s, params,
  flops, peak_memory_mb``, so ``test_acc`` in the UI is exactly the ``test_acc`` of
  ``results.csv`` (the selected epoch's). The per-epoch values of ``metrics.json`` are logged as
  curves with ``step = epoch`` under ``epoch/<name>`` (``epoch/train_loss``, ``epoch/test_acc``,
  ``epoch/lr``, ...): MLflow shows the value at the highest step as a run's metric, so sharing one
  key between a curve and the final value would show the last epoch instead of the selected one
  (and mix two meanings in one history); the ``epoch/`` prefix also groups the curves in one chart
  section. NaN, infinite and ``null`` values (a metric not measured, e.g. ``val_acc`` without a
  validation split) are skipped.
* **Tags** ``bench.matrix, bench.cell_id, bench.stage, bench.method, bench.arch, bench.teacher_id``
  (``deps.teacher``, when the cell has one), ``bench.git_commit`` (of the bench source tree doing the
  ingest, ``"unknown"`` when that is not a git checkout; computed once), ``bench.host,
  bench.device, bench.device_name, bench.torch, bench.cuda`` (from ``result.json``) and
  ``bench.result_sha``; also ``mlflow.source.git.commit`` and the plan's one-line description as the
  run's note.
* **Artifacts**: ``config.json``, ``metrics.json``, ``result.json``.

Idempotence
-----------
Runs are keyed on the tag ``bench.cell_id`` within the matrix's experiment (one search per
experiment with a filter string). New runs go into a SQL store in bulk (:mod:`bench.results.ingest_bulk`:
the rows MLflow's store would write, 500 runs a transaction, each run whole or absent); changed
cells and runs on a server go through the client. ``bench.result_sha`` is a sha256 of the cell's three files (and of
this module's format version), set last: a cell whose files did not change is skipped; a cell whose
files changed is updated in place (same run: new or changed metric values are logged with the
current time so they become the latest, tags set again, artifacts uploaded again). MLflow histories
are append-only, so an updated run keeps superseded values in its metric history. A run whose
params would change (impossible while cell ids hash the config) cannot be updated in place: it is
deleted and created again. A run left half-written by an interrupted ingest has no matching sha and
is completed by the next one. Concurrent ingests of one results folder wait for each other (a lock
file in the folder). A done cell whose config.json or result.json cannot be read is skipped with
the warning ``bench collect`` gives (once, when ``bench collect`` ingests); a damaged metrics.json
only loses the curves.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from bench.results.ingest_bulk import NewRun

if TYPE_CHECKING:
    from bench.results.store import Store
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Run

FORMAT_VERSION = "1"  # part of bench.result_sha: bump when the mapping below changes
EXPERIMENT_PREFIX = "bench/"
NO_MATRIX = "unplanned"
EPOCH_PREFIX = "epoch/"
CELL_TAG = "bench.cell_id"
SHA_TAG = "bench.result_sha"
FINAL_METRICS = ("test_acc", "val_acc", "train_acc", "wall_seconds", "train_images_per_s",
                 "infer_images_per_s", "params", "flops", "peak_memory_mb")
RESULT_TAGS = ("host", "device", "device_name", "torch", "cuda")
ARTIFACT_FILES = ("config.json", "metrics.json", "result.json")



# ---------------------------------------------------------------- what a cell becomes


@dataclasses.dataclass
class CellRun:
    id: str
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    result: dict[str, Any]
    files: dict[str, Path]
    sha: str
    start_ms: int
    end_ms: int


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return str(value)[:6000]  # MLflow's MAX_PARAM_VAL_LENGTH


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Resolved config as MLflow params: nested mappings (``deps``) become ``deps.<role>``."""
    params: dict[str, str] = {}
    for key, value in sorted(config.items()):
        if isinstance(value, dict):
            params.update(flatten_config(value, f"{prefix}{key}."))
        else:
            params[f"{prefix}{key}"] = _param_value(value)
    return params


def _mtime_ms(path: Path, default: int) -> int:
    try:
        return int(path.stat().st_mtime * 1000)
    except OSError:
        return default


def _epochs(path: Path, cell_id: str) -> list[Any]:
    """The per-epoch entries of metrics.json; when it is damaged, a warning and no curves (the final metrics
    come from result.json)."""
    from bench.results.collect import FileProblem, read_json_file

    if not path.exists():
        return []
    try:
        entries = read_json_file(path)
        if not isinstance(entries, list):
            raise FileProblem(path, "is not a JSON array")
    except FileProblem as problem:
        print(f"bench: warning: cell {cell_id}: {problem}; its per-epoch curves are left out of MLflow", file=sys.stderr)
        return []
    return entries


def load_cell(store: Store, cell_id: str) -> CellRun:
    """A done cell's files; raises :class:`bench.results.collect.UnreadableCell` as ``bench collect`` would."""
    from bench.results.collect import read_cell_files

    cell = store.cell(cell_id)
    config, result = read_cell_files(store, cell_id)
    files: dict[str, Path] = {}
    digest = hashlib.sha256(f"bench-ingest-{FORMAT_VERSION}\n".encode())
    for name, path in {"config.json": cell.config, "metrics.json": cell.metrics, "result.json": cell.result}.items():
        digest.update(f"{name}\n".encode())
        with contextlib.suppress(OSError):  # only metrics.json may be absent: the others were just read
            digest.update(path.read_bytes())
            files[name] = path
    end_ms = _mtime_ms(cell.done_marker, _mtime_ms(cell.result, int(time.time() * 1000)))
    start_ms = min(_mtime_ms(cell.config, end_ms), end_ms)
    return CellRun(id=cell_id, config=config, metrics=_epochs(cell.metrics, cell_id), result=result, files=files,
                 sha=digest.hexdigest(), start_ms=start_ms, end_ms=end_ms)


def _run_name(cell: CellRun) -> str:
    return f"{cell.config.get('stage', 'cell')}-{cell.config.get('arch', 'model')}-{cell.id[:8]}"


def run_tags(cell: CellRun, matrix: str, describe: str | None) -> dict[str, str]:
    tags = {"bench.matrix": matrix, CELL_TAG: cell.id}
    for field in ("stage", "method", "arch"):
        if cell.config.get(field) is not None:
            tags[f"bench.{field}"] = str(cell.config[field])
    teacher = (cell.config.get("deps") or {}).get("teacher")
    if teacher:
        tags["bench.teacher_id"] = str(teacher)
    commit = str(cell.result.get("git_commit") or "unknown")  # recorded when the cell ran, not now
    tags["bench.git_commit"] = commit
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    tags["mlflow.source.name"] = "bench"
    for field in RESULT_TAGS:
        if cell.result.get(field) is not None:
            tags[f"bench.{field}"] = str(cell.result[field])
    if describe:
        tags["mlflow.note.content"] = describe
    return tags


def _metrics(cell: CellRun) -> list[Metric]:
    """Per-epoch curves (``epoch/<name>``, step = epoch) and the final results (step 0)."""
    from mlflow.entities import Metric

    metrics = []
    elapsed = 0.0
    for index, entry in enumerate(cell.metrics):
        if not isinstance(entry, dict):
            continue
        step = int(entry["epoch"]) if _is_number(entry.get("epoch")) else index + 1
        timestamp = cell.end_ms
        if _is_number(entry.get("epoch_seconds")):
            elapsed += entry["epoch_seconds"]
            timestamp = min(cell.start_ms + int(elapsed * 1000), cell.end_ms)
        for key, value in sorted(entry.items()):
            if key != "epoch" and _is_number(value):
                metrics.append(Metric(EPOCH_PREFIX + key, float(value), timestamp, step))
    # the usual results first, then a method's own (test_agreement, probe_test_acc, an annotate
    # cell's coverage and pseudo_acc)
    own = sorted(key for key in cell.result if key not in FINAL_METRICS)
    for key in (*FINAL_METRICS, *own):
        if _is_number(cell.result.get(key)):
            metrics.append(Metric(key, float(cell.result[key]), cell.end_ms, 0))
    return metrics


def _batch_limits() -> tuple[int, int, int]:
    try:
        from mlflow.utils.validation import (MAX_ENTITIES_PER_BATCH, MAX_METRICS_PER_BATCH,
                                             MAX_PARAMS_TAGS_PER_BATCH)
    except ImportError:  # pragma: no cover - the limits have been these for years
        return 1000, 100, 1000
    return MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH, MAX_ENTITIES_PER_BATCH


def batches(metrics: Iterable[Any] = (), params: Iterable[Any] = (), tags: Iterable[Any] = ()
            ) -> Iterator[tuple[list[Any], list[Any], list[Any]]]:
    """Split into ``log_batch`` calls within MLflow's limits (metrics, params/tags, entities per call)."""
    max_metrics, max_params_tags, max_entities = _batch_limits()
    metrics, params, tags = list(metrics), list(params), list(tags)
    while metrics or params or tags:
        p, params = params[:max_params_tags], params[max_params_tags:]
        t, tags = tags[:max_params_tags], tags[max_params_tags:]
        room = min(max_metrics, max_entities - len(p) - len(t))
        m, metrics = metrics[:room], metrics[room:]
        yield m, p, t


def _log(client: MlflowClient, run_id: str, metrics=(), params=(), tags=()) -> None:
    for m, p, t in batches(metrics, params, tags):
        client.log_batch(run_id, metrics=m, params=p, tags=t)


def experiment_for(client: MlflowClient, matrix: str, artifact_root: Path | None) -> str:
    from mlflow.exceptions import MlflowException

    name = EXPERIMENT_PREFIX + matrix
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if artifact_root is not None:
            folder = "".join(c if c.isalnum() or c in "._-" else "_" for c in matrix)
            location = (artifact_root / folder).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location, tags={"bench.matrix": matrix})
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def existing_runs(client: MlflowClient, experiment_id: str) -> dict[str, Run]:
    """Active runs of the experiment by cell id (the oldest if an id somehow has several)."""
    runs: dict[str, Run] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=f"tags.`{CELL_TAG}` LIKE '%'",
                                  max_results=1000, order_by=["attributes.start_time ASC"], page_token=token)
        for run in page:
            runs.setdefault(run.data.tags[CELL_TAG], run)
        token = page.token
        if not token:
            return runs


def _finish(client: MlflowClient, run_id: str, cell: CellRun, metrics=(), params=(), tags=()) -> None:
    """Artifacts (one upload of the cell's files), FINISHED, then what is left to log with the
    sha tag in the last batch: a run an ingest left half-written has no sha and gets redone."""
    from mlflow.entities import RunTag

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as staging:
        for name, path in cell.files.items():
            shutil.copyfile(path, os.path.join(staging, name))
        client.log_artifacts(run_id, staging)
    client.set_terminated(run_id, "FINISHED", end_time=cell.end_ms)
    _log(client, run_id, metrics=metrics, params=params, tags=[*tags, RunTag(SHA_TAG, cell.sha)])


def create_run(client: MlflowClient, experiment_id: str, cell: CellRun, tags: dict[str, str]) -> str:
    """A new run in four calls: created with its tags, artifacts, terminated, params and metrics
    with the sha (each MLflow call is a transaction of several statements: ~50 ms a run on sqlite here).
    It holds what :func:`new_run` says, as a run written in bulk does."""
    from mlflow.entities import Param

    new = new_run(cell, tags)
    run = client.create_run(experiment_id, start_time=new.start_ms, run_name=new.run_name,
                            tags={k: v for k, v in new.tags.items() if k != SHA_TAG})  # the sha comes last, in _finish
    run_id = run.info.run_id
    _finish(client, run_id, cell, metrics=new.metrics, params=[Param(k, v) for k, v in new.params.items()])
    return run_id


def new_run(cell: CellRun, tags: dict[str, str]) -> NewRun:
    """Everything a cell's new run holds: written by :func:`create_run` through the client, or in bulk
    by :func:`bench.results.ingest_bulk.create_runs`."""
    return NewRun(run_name=_run_name(cell), tags={**tags, CELL_TAG: cell.id, SHA_TAG: cell.sha},
                  params=flatten_config(cell.config), metrics=_metrics(cell), artifacts=list(cell.files.values()),
                  start_ms=cell.start_ms, end_ms=cell.end_ms)


def update_run(client: MlflowClient, experiment_id: str, run: Run, cell: CellRun, tags: dict[str, str]) -> str:
    from mlflow.entities import Metric, Param, RunTag

    run_id = run.info.run_id
    params = flatten_config(cell.config)
    have_params = run.data.params
    if any(key in have_params and have_params[key] != value for key, value in params.items()):
        client.delete_run(run_id)  # params are immutable in MLflow: start this cell's run again
        return create_run(client, experiment_id, cell, tags)
    now = int(time.time() * 1000)
    wanted: dict[str, list[Metric]] = {}
    for metric in _metrics(cell):
        wanted.setdefault(metric.key, []).append(metric)
    new_metrics = []
    for key, metrics in wanted.items():
        latest: dict[int, tuple[int, float]] = {}  # step -> (timestamp, value) of the latest entry
        if key in run.data.metrics:
            for old in client.get_metric_history(run_id, key):
                if old.step not in latest or old.timestamp >= latest[old.step][0]:
                    latest[old.step] = (old.timestamp, old.value)
        new_metrics += [Metric(key, m.value, now, m.step) for m in metrics
                        if m.step not in latest or latest[m.step][1] != m.value]
    _finish(client, run_id, cell, metrics=new_metrics,
            params=[Param(k, v) for k, v in params.items() if k not in have_params],
            tags=[RunTag(k, v) for k, v in tags.items() if run.data.tags.get(k) != v])
    return run_id


