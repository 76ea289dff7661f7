"""New MLflow runs written in bulk into a SQL tracking store (sqlite, PostgreSQL, MySQL).

Why: MLflow's client writes a run in several transactions of several ORM statements each (create,
log_batch, terminate: ~50 ms a run on sqlite here, so a first ingest of 10,000 cells takes ten
minutes). The rows MLflow's own ``SqlAlchemyStore`` would write for a new, finished run (runs,
tags, params, metrics, latest metrics) go in here as a few multi-row inserts per chunk of runs,
one transaction per chunk, into the tables of MLflow's own ORM models — so the schema is the
installed MLflow's, never one of ours. A run is all there or not there: its sha tag commits with
its metrics (an interrupted ingest loses at most the chunk in flight; the run ids of a chunk are
noted in a journal before its artifacts are copied, and the next bulk ingest of the same results
folder removes the folders of those that never committed). ``tests/results/test_tracking.py`` checks that every table of the
database holds the same rows as after MLflow's client wrote the same cells, and that the runs read
back through ``MlflowClient`` as the cells' files say; when a future MLflow moves any of the
internals used here, :func:`sql_store` returns None and ingest takes the client path.

Only new runs take this path; updates (a changed cell) and http servers go through the client.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import shutil
import urllib.parse
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

CHUNK = 500  # runs per transaction: a few MB of rows; a kill loses at most this many
RUN_ID = re.compile(r"[0-9a-f]{32}")
PENDING_FILE = ".mlflow-ingest-pending.json"  # in the results folder, beside the ledger: the chunk in flight


@dataclasses.dataclass
class NewRun:
    """Everything one new, finished run holds."""

    run_name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: list[Metric]
    artifacts: list[Path]  # files logged at the run's artifact root under their own names
    start_ms: int
    end_ms: int
    run_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)


def sql_store(client: MlflowClient) -> Any | None:
    """The client's ``SqlAlchemyStore``, or None (an http server, or an MLflow without it)."""
    try:  # everything of MLflow's internals used below: if one moved, the client path
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag  # noqa: F401
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.utils.file_utils import local_file_uri_to_path  # noqa: F401
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER  # noqa: F401
        from mlflow.utils.uri import append_to_uri_path  # noqa: F401
        from mlflow.utils.validation import _validate_batch_log_data  # noqa: F401
    except ImportError:
        return None
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    return store if isinstance(store, SqlAlchemyStore) else None


def _latest(metrics: Iterable[Metric]) -> dict[str, Metric]:
    """Per key, the entry MLflow shows as the run's metric: the greatest (step, timestamp, value)."""
    latest: dict[str, Metric] = {}
    for metric in metrics:
        best = latest.get(metric.key)
        if best is None or (metric.step, metric.timestamp, metric.value) > (best.step, best.timestamp, best.value):
            latest[metric.key] = metric
    return latest


def _rows(run: NewRun, experiment_id: str, artifact_uri: str) -> dict[str, list[dict[str, Any]]]:
    from mlflow.entities import LifecycleStage, Param, RunStatus, RunTag, SourceType
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
    from mlflow.utils.validation import _validate_batch_log_data

    tags = {MLFLOW_RUN_NAME: run.run_name, **run.tags}
    unique = {(m.key, m.timestamp, m.step, m.value): m for m in run.metrics}  # the table's primary key
    # MLflow's own checks of names and values (the client would run them in log_batch)
    _validate_batch_log_data(list(unique.values()), [Param(k, v) for k, v in run.params.items()],
                             [RunTag(k, v) for k, v in tags.items()])
    rid = run.run_id
    return {
        "runs": [{
            "run_uuid": rid, "name": run.run_name, "source_type": SourceType.to_string(SourceType.UNKNOWN),
            "source_name": "", "entry_point_name": "", "user_id": tags.get(MLFLOW_USER, "unknown"),
            "status": RunStatus.to_string(RunStatus.FINISHED), "start_time": run.start_ms, "end_time": run.end_ms,
            "deleted_time": None, "source_version": "", "lifecycle_stage": LifecycleStage.ACTIVE,
            "artifact_uri": artifact_uri, "experiment_id": int(experiment_id)}],
        "tags": [{"key": k, "value": v, "run_uuid": rid} for k, v in tags.items()],
        "params": [{"key": k, "value": v, "run_uuid": rid} for k, v in run.params.items()],
        "metrics": [_metric_row(m, rid) for m in unique.values()],
        "latest_metrics": [_metric_row(m, rid) for m in _latest(unique.values()).values()],
    }


def _metric_row(metric: Metric, run_id: str) -> dict[str, Any]:
    """A row of the metrics and of the latest_metrics table (same columns; values are finite here)."""
    return {"key": metric.key, "value": metric.value, "timestamp": metric.timestamp, "step": metric.step,
            "is_nan": False, "run_uuid": run_id}


def _local_folder(uri: str) -> Path | None:
    """The folder an artifact URI names on this file system, or None (a remote store)."""
    from mlflow.utils.file_utils import local_file_uri_to_path

    parts = urllib.parse.urlparse(uri)
    return Path(local_file_uri_to_path(uri)) if parts.scheme in ("", "file") and parts.netloc in ("", "localhost") else None


def _log_artifacts(artifact_uri: str, files: list[Path]) -> None:
    """The files at the root of a new run's artifacts. A local folder is written by plain copies:
    the run does not exist until its transaction commits, so no reader sees a file half-copied,
    and MLflow's local repository (staging copy, path checks) costs 4 ms a file here."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    folder = _local_folder(artifact_uri)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copyfile(path, folder / path.name)
        return
    repository = get_artifact_repository(artifact_uri)
    for path in files:
        repository.log_artifact(str(path))


def _write_session(store: Any) -> Any:
    """A session that may write: MLflow 3's sessions are read-only unless asked (its read replicas)."""
    try:
        return store.ManagedSessionMaker(read_only=False)
    except TypeError:  # MLflow 2: every session may write
        return store.ManagedSessionMaker()


def remove_uncommitted(store: Any, journal: Path, experiment_id: str) -> int:
    """Remove the artifact folders of runs a killed bulk ingest copied but never committed, as
    its ``journal`` names them. The journal lies in the (shared, untrusted) results folder: only
    its experiment id and 32-hex run ids are taken from it, the folders come from the database's
    own artifact location, and a run the database holds is never touched. Returns how many went."""
    from mlflow.store.tracking.dbmodels.models import SqlRun
    from mlflow.utils.uri import append_to_uri_path

    if not journal.is_file():
        return 0
    try:
        noted = json.loads(journal.read_text())
        run_ids = sorted({r for r in noted["run_ids"] if isinstance(r, str) and RUN_ID.fullmatch(r)})
        ours = noted["database"] == str(store.db_uri) and str(noted["experiment_id"]) == str(experiment_id)
        if not ours or len(run_ids) > CHUNK:  # another database's or experiment's, or not one chunk: not trusted
            raise ValueError(journal)
        location = store.get_experiment(experiment_id).artifact_location
    except Exception:  # damaged, planted or of another database: nothing to trust in it
        with contextlib.suppress(OSError):
            journal.unlink()
        return 0
    with _write_session(store) as session:
        committed = {row[0] for row in session.query(SqlRun.run_uuid).filter(SqlRun.run_uuid.in_(run_ids))}
    removed = 0
    for run_id in run_ids:
        folder = _local_folder(append_to_uri_path(location, run_id))
        if run_id not in committed and folder is not None and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
            removed += 1
    with contextlib.suppress(OSError):
        journal.unlink()
    return removed


def create_runs(store: Any, experiment_id: str, runs: list[NewRun],
                progress: Callable[[int], None] = lambda done: None, journal: Path | None = None) -> None:
    """Write ``runs`` (each with its artifacts) into ``store``, ``CHUNK`` runs per transaction.
    With ``journal`` (a file of the results folder) each chunk's run ids are noted there before its
    artifacts are copied and dropped once it commits, and what a killed ingest left is removed first."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    from mlflow.utils.uri import append_to_uri_path
    from sqlalchemy import insert

    from bench.results.store import atomic_write_json

    if journal is not None:
        remove_uncommitted(store, journal, experiment_id)

    tables = {"runs": SqlRun, "tags": SqlTag, "params": SqlParam, "metrics": SqlMetric,
              "latest_metrics": SqlLatestMetric}
    location = store.get_experiment(experiment_id).artifact_location
    for start in range(0, len(runs), CHUNK):
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
        chunk = runs[start:start + CHUNK]
        if journal is not None:
            atomic_write_json(journal, {"database": str(store.db_uri), "experiment_id": experiment_id,
                                         "run_ids": [run.run_id for run in chunk]})
        for run in chunk:
            artifact_uri = append_to_uri_path(location, run.run_id, store.ARTIFACTS_FOLDER_NAME)
            for name, table_rows in _rows(run, experiment_id, artifact_uri).items():
                rows[name] += table_rows
            _log_artifacts(artifact_uri, run.artifacts)
        with _write_session(store) as session:
            for name, model in tables.items():  # runs first: the others refer to them
                if rows[name]:
                    session.execute(insert(model.__table__), rows[name])
        if journal is not None:
            journal.unlink()
        progress(min(start + CHUNK, len(runs)))
