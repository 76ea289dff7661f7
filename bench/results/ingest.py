"""``bench ingest``: every finished cell of a results folder into MLflow, once. Cells the ledger
(``bench.results.ingest_ledger``) says are ingested unchanged are skipped unread; new runs go into a
SQL store in bulk (``bench.results.ingest_bulk``), changed ones through the client
(``bench.results.tracking``); concurrent ingests of one folder wait for each other."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from bench.errors import BenchError
from bench.results.ingest_bulk import CHUNK, PENDING_FILE, create_runs, sql_store
from bench.results.ingest_ledger import Ledger
from bench.results.locks import exclusive
from bench.results.no_links import open_no_follow

from bench.results.tracking import (EXPERIMENT_PREFIX, FORMAT_VERSION, NO_MATRIX, SHA_TAG, CellRun, create_run, existing_runs,
                                    experiment_for, load_cell, new_run, run_tags, update_run)
from bench.results.tracking_uri import (check_sqlite_file, client_env, experiment_artifact_root, is_unreachable,
                                        resolve_tracking_uri, sqlite_file, unusable_database)

if TYPE_CHECKING:
    from bench.results.ingest_bulk import NewRun
    from bench.results.store import Store

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


def _progress(label: str, total: int) -> Callable[[int], None]:
    """A progress line on stderr per chunk, for ingests long enough to need one."""
    if total <= CHUNK:
        return lambda done: None
    return lambda done: print(f"{label}: {done}/{total} new runs written", file=sys.stderr, flush=True)


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
    database = sqlite_file(uri)
    with _ingest_lock(root):
        ledger = Ledger.load(root, f"{uri}\nformat {FORMAT_VERSION}", database)
        signatures = {cell_id: store.cell(cell_id).signature() for cell_id in store.done_cell_ids()}
        cells: dict[str, CellRun] = {}
        unreadable: dict[str, str] = {}
        for cell_id, signature in signatures.items():
            places = [matrix for matrix, _, _ in members.get(cell_id, [(NO_MATRIX, 0, None)])]
            known = {matrix: ledger.unchanged(matrix, cell_id, signature) for matrix in places}
            if all(known.values()):  # ingested with these very files, into this very database: skip unread
                summary.skipped += len(known)
                summary.runs.update({(matrix, cell_id): run_id for matrix, run_id in known.items()})
                continue
            try:
                cells[cell_id] = load_cell(store, cell_id)
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
                cells: dict[str, CellRun], summary: IngestSummary) -> None:
    """Create, update or skip (by sha) the MLflow run of each loaded cell in each of its matrices."""
    check_sqlite_file(uri, root)
    by_matrix: dict[str, list[tuple[str, str | None]]] = {}
    for cell_id in cells:
        for matrix, _, describe in members.get(cell_id, [(NO_MATRIX, 0, None)]):
            by_matrix.setdefault(matrix, []).append((cell_id, describe))
    with client_env(uri):
        try:
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # fail fast when a server is down
            artifact_root = experiment_artifact_root(root, uri)
            bulk = sql_store(client)  # new runs in bulk into a SQL store; None: one by one through the client
            for matrix, entries in sorted(by_matrix.items()):
                experiment_id = experiment_for(client, matrix, artifact_root)
                summary.experiments[EXPERIMENT_PREFIX + matrix] = experiment_id
                existing = existing_runs(client, experiment_id)
                new_runs: dict[str, NewRun] = {}
                for cell_id, describe in entries:
                    cell = cells[cell_id]
                    run = existing.get(cell_id)
                    tags = run_tags(cell, matrix, describe)
                    if run is None and bulk is not None:
                        new_runs[cell_id] = new_run(cell, tags)
                        continue
                    if run is None:
                        run_id = create_run(client, experiment_id, cell, tags)
                        summary.created += 1
                    elif run.data.tags.get(SHA_TAG) == cell.sha:
                        run_id = run.info.run_id
                        summary.skipped += 1
                    else:
                        run_id = update_run(client, experiment_id, run, cell, tags)
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

            unusable = unusable_database(error, uri, root)
            if unusable is not None:
                raise unusable from None
            if is_unreachable(error):
                raise BenchError(f"MLflow server at {uri} not reachable; results stay on disk under {root}; "
                                 f"run `bench ingest {root} --tracking-uri {uri}` later") from None
            if isinstance(error, MlflowException):
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise BenchError(f"MLflow at {uri}: {first}") from None
            raise


# ---------------------------------------------------------------- command line
