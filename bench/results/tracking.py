"""MLflow tracking: every finished cell of a results folder becomes one MLflow run.

How it works
------------
Compute jobs never talk to MLflow. A cell writes its own files (``config.json``, ``metrics.json``,
``result.json``, ``DONE``) and :func:`ingest` copies finished cells into MLflow afterwards, from
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
* **Tags** ``bench.matrix.schema, bench.cell_id, bench.stage, bench.method, bench.arch, bench.teacher_id``
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

Tracking URIs
-------------
Default ``sqlite:///<absolute results dir>/mlflow.db`` with artifacts in ``<results>/mlartifacts``
(``mlflow ui --backend-store-uri sqlite:///...`` shows it). MLflow creates the tables with its
alembic migrations the first time a database is opened, which takes ~6 s here (~1 s to open an
existing one, plus ~2 s to import mlflow). ``--tracking-uri http://HOST:PORT`` uses an
``mlflow server``. MLflow's file store (a plain path or ``file:`` URI) is refused: MLflow >= 3.13
raises unless ``MLFLOW_ALLOW_FILE_STORE=true`` and we do not use it.

For http(s) URIs the MLflow client would retry a down server for ~4 minutes, so while ingesting we
set ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=1`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT=10`` unless the user set
them (restored afterwards; likewise ``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=true``, which saves a
"View run at" line and a request per run); a connection failure is a one-line :class:`BenchError`
(~0.2 s for a refused connection, ~22 s for a host that accepts but never answers). A sqlite file
that sqlite cannot read (overwritten, truncated) is a one-line :class:`BenchError` too, saying to
move it aside and ingest again: the database is only a copy of the results folder. We use
``MlflowClient`` (``log_batch`` in chunks within MLflow's limits), never the fluent API, so no
active-run state leaks into the process. mlflow is imported lazily: ``bench`` imports this module
for its subcommands on every start.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from bench.errors import BenchError
from bench.results.ingest_bulk import CHUNK, PENDING_FILE, NewRun, create_runs, sql_store
from bench.results.ingest_ledger import Ledger
from bench.results.locks import exclusive
from bench.results.no_links import open_no_follow

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
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
QUIET = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
LOCK_FILE = ".mlflow-ingest.lock"


@dataclasses.dataclass
class IngestSummary:
    """What one :func:`ingest` did. ``str()`` is a one-line report."""

    tracking_uri: str
    created: int = 0
    updated: int = 0
    skipped: int = 0
    experiments: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> experiment id
    runs: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)  # (matrix, cell) -> run id
    unreadable: list[str] = dataclasses.field(default_factory=list)  # done cells whose files cannot be read

    @property
    def total(self) -> int:
        return self.created + self.updated + self.skipped

    def __str__(self) -> str:
        broken = f", {len(self.unreadable)} unreadable (not ingested)" if self.unreadable else ""
        return f"{self.created} created, {self.updated} updated, {self.skipped} skipped{broken} -> {self.tracking_uri}"


# ---------------------------------------------------------------- what a cell becomes


@dataclasses.dataclass
class _Cell:
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


def _load_cell(store: Store, cell_id: str) -> _Cell:
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
    return _Cell(id=cell_id, config=config, metrics=_epochs(cell.metrics, cell_id), result=result, files=files,
                 sha=digest.hexdigest(), start_ms=start_ms, end_ms=end_ms)


def _run_name(cell: _Cell) -> str:
    return f"{cell.config.get('stage', 'cell')}-{cell.config.get('arch', 'model')}-{cell.id[:8]}"


def _tags(cell: _Cell, matrix: str, describe: str | None) -> dict[str, str]:
    tags = {"bench.matrix.schema": matrix, CELL_TAG: cell.id}
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


def _metrics(cell: _Cell) -> list[Metric]:
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


# ---------------------------------------------------------------- MLflow plumbing


def default_tracking_uri(root: str | Path) -> str:
    return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def scheme(uri: str) -> str:
    return uri.split(":", 1)[0].lower() if ":" in uri else ""


def resolve_tracking_uri(root: str | Path, tracking_uri: str | None = None) -> str:
    if not tracking_uri:
        return default_tracking_uri(root)
    if scheme(tracking_uri) in ("", "file"):
        raise BenchError(f"tracking URI {tracking_uri!r} is MLflow's file store, which bench does not use "
                         "(MLflow >= 3.13 refuses it); use sqlite:///PATH/mlflow.db or http://HOST:PORT")
    return tracking_uri


def is_http(uri: str) -> bool:
    return scheme(uri) in ("http", "https")


def _artifact_root(root: Path, uri: str) -> Path | None:
    """Where new experiments keep artifacts; None lets a server (or Databricks) decide."""
    kind = scheme(uri)
    if kind in ("http", "https") or kind.startswith("databricks"):
        return None
    db = _sqlite_file(uri)
    if db is not None:
        return db.resolve().parent / "mlartifacts"
    return root.resolve() / "mlartifacts"


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI (None for other URIs and in-memory databases)."""
    if scheme(uri) != "sqlite" or not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def _client_env(uri: str) -> Iterator[None]:
    """Short retries and timeouts for http(s) URIs, and no "View run at" line (plus a get_run) per
    run; only where the user did not choose, and only while ingesting."""
    wanted = {**(HTTP_LIMITS if is_http(uri) else {}), **QUIET}
    added = [name for name in wanted if name not in os.environ]
    for name in added:
        os.environ[name] = wanted[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


@contextlib.contextmanager
def _ingest_lock(root: Path) -> Iterator[None]:
    """One ingest per results folder at a time (a read-only folder goes without the lock)."""
    try:
        os.close(open_no_follow(root / LOCK_FILE, os.O_WRONLY | os.O_CREAT))  # a planted link is a LinkError
    except OSError:
        yield
        return
    with exclusive(root / LOCK_FILE, f"another ingest of {root}", echo=lambda m: print(f"bench:{m}", file=sys.stderr)):
        yield


def _in_chain(error: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of ``types`` among ``error`` and its causes (MLflow and SQLAlchemy wrap them)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, types):
            return current
        current = current.__cause__ or current.__context__
    return None


def _is_unreachable(error: BaseException) -> bool:
    import requests

    return _in_chain(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                             requests.exceptions.RetryError, ConnectionError, TimeoutError)) is not None


def _ingest_again(root: Path, uri: str) -> str:
    return shlex.join(["bench", "ingest", str(root)] + ([] if uri == default_tracking_uri(root) else ["--tracking-uri", uri]))


def _move_aside(db: Path, detail: str, root: Path, uri: str) -> BenchError:
    aside = shlex.join(["mv", str(db), f"{db}.broken"])
    return BenchError(f"{db}: not a usable MLflow database ({detail}); the results are safe on disk: move it aside "
                      f"(`{aside}`) and run `{_ingest_again(root, uri)}` to rebuild it from the results folder")


def _check_sqlite_file(uri: str, root: Path) -> None:
    """A folder where the database should be: sqlite says so only after MLflow's ~100 s of retries."""
    db = _sqlite_file(uri)
    if db is not None and db.exists() and not db.is_file():
        raise _move_aside(db, "not a file", root, uri)


def _unusable_database(error: BaseException, uri: str, root: Path) -> BenchError | None:
    """One line for a sqlite store that sqlite cannot use (overwritten, truncated, unopenable), or None."""
    import sqlite3

    found = _in_chain(error, (sqlite3.Error,))
    db = _sqlite_file(uri)
    if found is None or db is None:
        return None
    detail = (str(found).strip().splitlines() or [type(found).__name__])[0]
    name = getattr(found, "sqlite_errorname", "")
    if name == "SQLITE_NOTADB" or name.startswith("SQLITE_CORRUPT") or type(found) is sqlite3.DatabaseError:
        return _move_aside(db, detail, root, uri)
    return BenchError(f"{db}: MLflow's database cannot be used ({detail}); the results stay on disk under {root}; "
                      f"run `{_ingest_again(root, uri)}` once it can")


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


def _experiment(client: MlflowClient, matrix: str, artifact_root: Path | None) -> str:
    from mlflow.exceptions import MlflowException

    name = EXPERIMENT_PREFIX + matrix
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if artifact_root is not None:
            folder = "".join(c if c.isalnum() or c in "._-" else "_" for c in matrix)
            location = (artifact_root / folder).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location, tags={"bench.matrix.schema": matrix})
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def _existing_runs(client: MlflowClient, experiment_id: str) -> dict[str, Run]:
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


def _finish(client: MlflowClient, run_id: str, cell: _Cell, metrics=(), params=(), tags=()) -> None:
    """Artifacts (one upload of the cell's files), FINISHED, then what is left to log with the
    sha tag in the last batch: a run an ingest left half-written has no sha and gets redone."""
    from mlflow.entities import RunTag

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as staging:
        for name, path in cell.files.items():
            shutil.copyfile(path, os.path.join(staging, name))
        client.log_artifacts(run_id, staging)
    client.set_terminated(run_id, "FINISHED", end_time=cell.end_ms)
    _log(client, run_id, metrics=metrics, params=params, tags=[*tags, RunTag(SHA_TAG, cell.sha)])


def _create(client: MlflowClient, experiment_id: str, cell: _Cell, tags: dict[str, str]) -> str:
    """A new run in four calls: created with its tags, artifacts, terminated, params and metrics
    with the sha (each MLflow call is a transaction of several statements: ~50 ms a run on sqlite here).
    It holds what :func:`_new_run` says, as a run written in bulk does."""
    from mlflow.entities import Param

    new = _new_run(cell, tags)
    run = client.create_run(experiment_id, start_time=new.start_ms, run_name=new.run_name,
                            tags={k: v for k, v in new.tags.items() if k != SHA_TAG})  # the sha comes last, in _finish
    run_id = run.info.run_id
    _finish(client, run_id, cell, metrics=new.metrics, params=[Param(k, v) for k, v in new.params.items()])
    return run_id


def _new_run(cell: _Cell, tags: dict[str, str]) -> NewRun:
    """Everything a cell's new run holds: written by :func:`_create` through the client, or in bulk
    by :func:`bench.results.ingest_bulk.create_runs`."""
    return NewRun(run_name=_run_name(cell), tags={**tags, CELL_TAG: cell.id, SHA_TAG: cell.sha},
                  params=flatten_config(cell.config), metrics=_metrics(cell), artifacts=list(cell.files.values()),
                  start_ms=cell.start_ms, end_ms=cell.end_ms)


def _progress(label: str, total: int) -> Callable[[int], None]:
    """A progress line on stderr per chunk, for ingests long enough to need one."""
    if total <= CHUNK:
        return lambda done: None
    return lambda done: print(f"{label}: {done}/{total} new runs written", file=sys.stderr, flush=True)


def _update(client: MlflowClient, experiment_id: str, run: Run, cell: _Cell, tags: dict[str, str]) -> str:
    from mlflow.entities import Metric, Param, RunTag

    run_id = run.info.run_id
    params = flatten_config(cell.config)
    have_params = run.data.params
    if any(key in have_params and have_params[key] != value for key, value in params.items()):
        client.delete_run(run_id)  # params are immutable in MLflow: start this cell's run again
        return _create(client, experiment_id, cell, tags)
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


def ingest(root: str | Path, tracking_uri: str | None = None) -> IngestSummary:
    """Log every finished cell of ``root`` into MLflow; safe to repeat (unchanged cells are skipped).

    ``tracking_uri`` defaults to ``sqlite:///<abs root>/mlflow.db``. Raises :class:`BenchError`
    (one line) when a server cannot be reached or the sqlite file is damaged; the cells on disk are
    never modified. Done cells whose files cannot be read are skipped with a warning, as by
    ``bench collect`` (``summary.unreadable``).
    """
    from bench.results.collect import UnreadableCell, warn_unreadable
    from bench.results.store import Store

    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"{root}: no such results folder")
    uri = resolve_tracking_uri(root, tracking_uri)
    summary = IngestSummary(tracking_uri=uri)
    store = Store(root)
    members = store.membership()
    database = _sqlite_file(uri)
    with _ingest_lock(root):
        ledger = Ledger.load(root, f"{uri}\nformat {FORMAT_VERSION}", database)
        signatures = {cell_id: store.cell(cell_id).signature() for cell_id in store.done_cell_ids()}
        cells: dict[str, _Cell] = {}
        unreadable: dict[str, str] = {}
        for cell_id, signature in signatures.items():
            places = [matrix for matrix, _, _ in members.get(cell_id, [(NO_MATRIX, 0, None)])]
            known = {matrix: ledger.unchanged(matrix, cell_id, signature) for matrix in places}
            if all(known.values()):  # ingested with these very files, into this very database: skip unread
                summary.skipped += len(known)
                summary.runs.update({(matrix, cell_id): run_id for matrix, run_id in known.items()})
                continue
            try:
                cells[cell_id] = _load_cell(store, cell_id)
            except UnreadableCell as error:  # skipped, as bench collect skips it: one broken cell hides no others
                unreadable[cell_id] = str(error)
        warn_unreadable(store, unreadable, ingest=True)
        summary.unreadable = sorted(unreadable)
        summary.experiments = {name: ledger.experiments[name] for name in
                               {EXPERIMENT_PREFIX + matrix for matrix, _ in summary.runs} if name in ledger.experiments}
        if cells:
            _write_runs(root, uri, store, members, cells, summary)
            for (matrix, cell_id), run_id in summary.runs.items():
                ledger.record(matrix, cell_id, run_id, signatures[cell_id])
            ledger.experiments.update(summary.experiments)
            ledger.save(database)
    return summary


def _write_runs(root: Path, uri: str, store: Store, members: dict[str, list[tuple[str, int, str | None]]],
                cells: dict[str, _Cell], summary: IngestSummary) -> None:
    """Create, update or skip (by sha) the MLflow run of each loaded cell in each of its matrices."""
    _check_sqlite_file(uri, root)
    by_matrix: dict[str, list[tuple[str, str | None]]] = {}
    for cell_id in cells:
        for matrix, _, describe in members.get(cell_id, [(NO_MATRIX, 0, None)]):
            by_matrix.setdefault(matrix, []).append((cell_id, describe))
    with _client_env(uri):
        try:
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # fail fast when a server is down
            artifact_root = _artifact_root(root, uri)
            bulk = sql_store(client)  # new runs in bulk into a SQL store; None: one by one through the client
            for matrix, entries in sorted(by_matrix.items()):
                experiment_id = _experiment(client, matrix, artifact_root)
                summary.experiments[EXPERIMENT_PREFIX + matrix] = experiment_id
                existing = _existing_runs(client, experiment_id)
                new_runs: dict[str, NewRun] = {}
                for cell_id, describe in entries:
                    cell = cells[cell_id]
                    run = existing.get(cell_id)
                    tags = _tags(cell, matrix, describe)
                    if run is None and bulk is not None:
                        new_runs[cell_id] = _new_run(cell, tags)
                        continue
                    if run is None:
                        run_id = _create(client, experiment_id, cell, tags)
                        summary.created += 1
                    elif run.data.tags.get(SHA_TAG) == cell.sha:
                        run_id = run.info.run_id
                        summary.skipped += 1
                    else:
                        run_id = _update(client, experiment_id, run, cell, tags)
                        summary.updated += 1
                    summary.runs[(matrix, cell_id)] = run_id
                if new_runs:
                    create_runs(bulk, experiment_id, list(new_runs.values()),
                                progress=_progress(f"bench: ingest: {matrix}", len(new_runs)), journal=root / PENDING_FILE)
                    summary.created += len(new_runs)
                    summary.runs.update({(matrix, cell_id): run.run_id for cell_id, run in new_runs.items()})
        except BenchError:
            raise
        except Exception as error:
            from mlflow.exceptions import MlflowException

            unusable = _unusable_database(error, uri, root)
            if unusable is not None:
                raise unusable from None
            if _is_unreachable(error):
                raise BenchError(f"MLflow server at {uri} not reachable; results stay on disk under {root}; "
                                 f"run `bench ingest {root} --tracking-uri {uri}` later") from None
            if isinstance(error, MlflowException):
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise BenchError(f"MLflow at {uri}: {first}") from None
            raise


# ---------------------------------------------------------------- command line
