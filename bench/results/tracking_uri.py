"""Where MLflow runs go, and what a tracking URI's failures mean for a user.

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
import os
import shlex
from pathlib import Path
from typing import Iterator

from bench.errors import BenchError

HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
QUIET = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


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


def experiment_artifact_root(root: Path, uri: str) -> Path | None:
    """Where new experiments keep artifacts; None lets a server (or Databricks) decide."""
    kind = scheme(uri)
    if kind in ("http", "https") or kind.startswith("databricks"):
        return None
    db = sqlite_file(uri)
    if db is not None:
        return db.resolve().parent / "mlartifacts"
    return root.resolve() / "mlartifacts"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI (None for other URIs and in-memory databases)."""
    if scheme(uri) != "sqlite" or not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def client_env(uri: str) -> Iterator[None]:
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


def is_unreachable(error: BaseException) -> bool:
    import requests

    return _in_chain(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                             requests.exceptions.RetryError, ConnectionError, TimeoutError)) is not None


def _ingest_again(root: Path, uri: str) -> str:
    return shlex.join(["bench", "ingest", str(root)] + ([] if uri == default_tracking_uri(root) else ["--tracking-uri", uri]))


def _move_aside(db: Path, detail: str, root: Path, uri: str) -> BenchError:
    aside = shlex.join(["mv", str(db), f"{db}.broken"])
    return BenchError(f"{db}: not a usable MLflow database ({detail}); the results are safe on disk: move it aside "
                      f"(`{aside}`) and run `{_ingest_again(root, uri)}` to rebuild it from the results folder")


def check_sqlite_file(uri: str, root: Path) -> None:
    """A folder where the database should be: sqlite says so only after MLflow's ~100 s of retries."""
    db = sqlite_file(uri)
    if db is not None and db.exists() and not db.is_file():
        raise _move_aside(db, "not a file", root, uri)


def unusable_database(error: BaseException, uri: str, root: Path) -> BenchError | None:
    """One line for a sqlite store that sqlite cannot use (overwritten, truncated, unopenable), or None."""
    import sqlite3

    found = _in_chain(error, (sqlite3.Error,))
    db = sqlite_file(uri)
    if found is None or db is None:
        return None
    detail = (str(found).strip().splitlines() or [type(found).__name__])[0]
    name = getattr(found, "sqlite_errorname", "")
    if name == "SQLITE_NOTADB" or name.startswith("SQLITE_CORRUPT") or type(found) is sqlite3.DatabaseError:
        return _move_aside(db, detail, root, uri)
    return BenchError(f"{db}: MLflow's database cannot be used ({detail}); the results stay on disk under {root}; "
                      f"run `{_ingest_again(root, uri)}` once it can")


