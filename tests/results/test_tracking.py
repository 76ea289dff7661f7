"""MLflow ingest of a real (tiny) results folder, against real MLflow: sqlite and a real server."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.results.ingest import ingest
from bench.results.tracking import CELL_TAG, EPOCH_PREFIX, FINAL_METRICS, SHA_TAG, batches, flatten_config
from bench.results.tracking_uri import HTTP_LIMITS, QUIET
from bench.training.runtime import source_commit

ARTIFACTS = {"config.json", "metrics.json", "result.json"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def results(tiny_results: Path, tmp_path: Path) -> Path:
    """A private copy (no weights) of the session's tiny results that a test may ingest into and modify."""
    root = tmp_path / "results"
    shutil.copytree(tiny_results, root, ignore=shutil.ignore_patterns("*.pt"))
    return root


def snapshot(root: Path) -> dict[str, str]:
    cells = root / "cells"
    return {str(p.relative_to(cells)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(cells.rglob("*")) if p.is_file()}


def cell_files(root: Path) -> dict[str, tuple[dict, list, dict]]:
    out = {}
    for folder in sorted((root / "cells").iterdir()):
        out[folder.name] = tuple(json.loads((folder / name).read_text()) for name in ("config.json", "metrics.json", "result.json"))
    return out


def runs_by_cell(client, experiment_name: str) -> dict[str, object]:
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    by_cell = {run.data.tags[CELL_TAG]: run for run in runs}
    assert len(by_cell) == len(runs), "one run per cell"
    return by_cell


def check_runs(client, root: Path) -> None:
    """Params, metrics, tags and artifacts of every run match the cell's files."""
    files = cell_files(root)
    runs = runs_by_cell(client, "bench/tiny")
    assert set(runs) == set(files) and len(runs) == 4
    for cell_id, (config, metrics, result) in files.items():
        run = runs[cell_id]
        data = run.data
        assert run.info.run_name == f"{config['stage']}-{config['arch']}-{cell_id[:8]}"
        assert run.info.status == "FINISHED"
        # params: the flattened resolved config, deps as deps.<role>
        assert data.params == flatten_config(config)
        assert data.params["arch"] == config["arch"] and data.params["lr"] == str(config["lr"])
        for role, dep in config["deps"].items():
            assert data.params[f"deps.{role}"] == dep
        # tags
        tags = data.tags
        assert tags["bench.matrix"] == "tiny" and tags[CELL_TAG] == cell_id
        for field in ("stage", "method", "arch"):
            assert tags[f"bench.{field}"] == config[field]
        assert tags.get("bench.teacher_id") == config["deps"].get("teacher")
        assert tags["bench.git_commit"] == result["git_commit"]  # the commit the cell ran at, not the ingest's
        for field in ("host", "device", "device_name", "torch", "cuda"):
            assert tags[f"bench.{field}"] == str(result[field])
        assert len(tags[SHA_TAG]) == 64
        # final metrics, NaN skipped
        for key in FINAL_METRICS:
            value = result.get(key)
            if value is None or value != value:
                assert key not in data.metrics
            else:
                assert data.metrics[key] == pytest.approx(value)
        assert "val_acc" not in data.metrics  # NaN in this matrix (no validation split)
        # per-epoch curves: one point per epoch, step = epoch
        history = client.get_metric_history(run.info.run_id, EPOCH_PREFIX + "train_loss")
        assert sorted(m.step for m in history) == list(range(1, config["epochs"] + 1)) == [e["epoch"] for e in metrics]
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx([e["train_loss"] for e in metrics])
        assert len(client.get_metric_history(run.info.run_id, EPOCH_PREFIX + "lr")) == config["epochs"]
        assert EPOCH_PREFIX + "val_acc" not in data.metrics
        # artifacts
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == ARTIFACTS
        local = client.download_artifacts(run.info.run_id, "result.json", str(root.parent / f"dl-{cell_id}"))
        assert Path(local).read_bytes() == (root / "cells" / cell_id / "result.json").read_bytes()


def test_ingest_sqlite_default(results: Path) -> None:
    from mlflow import MlflowClient

    cells = sorted((results / "cells").iterdir())
    assert {json.loads((cell / "result.json").read_text())["git_commit"] for cell in cells} == {source_commit()}
    older = cells[0] / "result.json"  # as if it had run at another commit: its tag must say so
    older.write_text(json.dumps({**json.loads(older.read_text()), "git_commit": "0123456789abcdef" * 2 + "01234567"}))
    start = time.perf_counter()
    summary = ingest(results)
    print(f"\nsqlite first ingest (4 cells, new database): {time.perf_counter() - start:.1f} s")
    assert (summary.created, summary.updated, summary.skipped) == (4, 0, 0)
    assert summary.tracking_uri == f"sqlite:///{results.resolve()}/mlflow.db"
    assert (results / "mlflow.db").is_file()
    assert len(list((results / "mlartifacts").rglob("result.json"))) == 4
    assert set(summary.experiments) == {"bench/tiny"} and len(summary.runs) == 4
    check_runs(MlflowClient(tracking_uri=summary.tracking_uri), results)


def test_ingest_twice_creates_no_duplicates(results: Path) -> None:
    from mlflow import MlflowClient

    first = ingest(results)
    start = time.perf_counter()
    second = ingest(results)
    print(f"\nsqlite second ingest (4 unchanged cells): {time.perf_counter() - start:.2f} s")
    assert (second.created, second.updated, second.skipped) == (0, 0, 4)
    assert second.runs == first.runs
    assert len(runs_by_cell(MlflowClient(tracking_uri=second.tracking_uri), "bench/tiny")) == 4


def test_changed_result_updates_the_same_run(results: Path) -> None:
    from mlflow import MlflowClient

    first = ingest(results)
    client = MlflowClient(tracking_uri=first.tracking_uri)
    cell_id = sorted(p.name for p in (results / "cells").iterdir())[0]
    path = results / "cells" / cell_id / "result.json"
    result = json.loads(path.read_text())
    old_test_acc = result["test_acc"]
    old_sha = runs_by_cell(client, "bench/tiny")[cell_id].data.tags[SHA_TAG]
    result["test_acc"] = 0.125
    path.write_text(json.dumps(result, indent=2, sort_keys=True))

    second = ingest(results)
    assert (second.created, second.updated, second.skipped) == (0, 1, 3)
    assert second.runs == first.runs  # same run ids: updated in place
    runs = runs_by_cell(client, "bench/tiny")
    assert len(runs) == 4
    run = runs[cell_id]
    assert run.data.metrics["test_acc"] == 0.125  # the new value is the latest
    assert run.data.tags[SHA_TAG] != old_sha
    # MLflow histories are append-only: the old final value stays in the history, the new one is latest
    assert sorted(m.value for m in client.get_metric_history(run.info.run_id, "test_acc")) == sorted([old_test_acc, 0.125])
    local = client.download_artifacts(run.info.run_id, "result.json", str(results.parent / "dl"))
    assert json.loads(Path(local).read_text())["test_acc"] == 0.125
    assert (ingest(results).skipped, len(runs_by_cell(client, "bench/tiny"))) == (4, 4)


def test_down_server_fails_fast_with_one_line(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.cli import main

    uri = f"http://127.0.0.1:{free_port()}"
    before = snapshot(results)
    env_before = {name: os.environ.get(name) for name in {**HTTP_LIMITS, **QUIET}}
    start = time.perf_counter()
    with pytest.raises(BenchError) as raised:
        ingest(results, tracking_uri=uri)
    elapsed = time.perf_counter() - start
    message = str(raised.value)
    assert message == (f"MLflow server at {uri} not reachable; results stay on disk under {results}; "
                       f"run `bench ingest {results} --tracking-uri {uri}` later")
    assert snapshot(results) == before and not (results / "mlflow.db").exists()
    assert {name: os.environ.get(name) for name in {**HTTP_LIMITS, **QUIET}} == env_before  # set only while ingesting
    capsys.readouterr()
    assert main(["ingest", str(results), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bench: {message}"]
    with capsys.disabled():
        print(f"\ndown server: BenchError after {elapsed:.2f} s")


def test_file_store_uri_is_refused(results: Path) -> None:
    with pytest.raises(BenchError, match="file store"):
        ingest(results, tracking_uri=str(results / "mlruns"))


def test_batches_respect_mlflow_limits() -> None:
    chunks = list(batches(metrics=range(2500), params=range(250), tags=range(30)))
    assert all(len(p) <= 100 and len(t) <= 100 and len(m) <= 1000 and len(m) + len(p) + len(t) <= 1000 for m, p, t in chunks)
    assert sorted(x for m, _, _ in chunks for x in m) == list(range(2500))
    assert sorted(x for _, p, _ in chunks for x in p) == list(range(250))
    assert sum(len(t) for _, _, t in chunks) == 30


# ------------------------------------------------------------------ a real `mlflow server`


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """``mlflow server`` on 127.0.0.1 with a sqlite backend in tmp; ~10-25 s to come up."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # no job-runner processes
    log = open(folder / "server.log", "w")
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = start + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.perf_counter() > deadline:
                log.flush()
                pytest.fail(f"mlflow server did not come up: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.25)
        print(f"\nmlflow server up after {time.perf_counter() - start:.1f} s")
        yield url
    finally:
        with_group = process.pid  # the server and its uvicorn worker share this process group
        try:
            os.killpg(with_group, signal.SIGTERM)
            process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(with_group, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


@pytest.mark.mlflow_server
def test_ingest_into_a_real_server(results: Path, mlflow_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    from mlflow import MlflowClient

    from bench.cli import main

    start = time.perf_counter()
    first = ingest(results, tracking_uri=mlflow_server)
    print(f"\nserver first ingest: {time.perf_counter() - start:.1f} s")
    assert (first.created, first.updated, first.skipped) == (4, 0, 0)
    assert not (results / "mlflow.db").exists()
    check_runs(MlflowClient(tracking_uri=mlflow_server), results)
    capsys.readouterr()
    assert main(["ingest", str(results), "--tracking-uri", mlflow_server]) == 0
    assert "View run" not in capsys.readouterr().out  # no line per run from MLflow
    second = ingest(results, tracking_uri=mlflow_server)
    assert (second.created, second.updated, second.skipped) == (0, 0, 4)
    assert second.runs == first.runs
    assert len(runs_by_cell(MlflowClient(tracking_uri=mlflow_server), "bench/tiny")) == 4


def test_an_unchanged_reingest_opens_no_mlflow_and_a_touched_database_gets_the_full_check(
        results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger skips cells whose files are as ingested, while the database is as that ingest
    left it; a run deleted by hand (the database changed) is written again, and a changed file
    is re-read and its run updated."""
    from mlflow import MlflowClient

    import bench.results.ingest as ingest_module
    from bench.results.ingest_ledger import LEDGER_FILE

    first = ingest(results)
    assert (results / LEDGER_FILE).is_file()
    real_write = ingest_module._write_runs

    def no_mlflow(*args, **kwargs):
        raise AssertionError("an ingest with nothing new talked to MLflow")

    monkeypatch.setattr(ingest_module, "_write_runs", no_mlflow)
    again = ingest(results)
    assert (again.created, again.updated, again.skipped) == (0, 0, 4) and again.runs == first.runs
    assert again.experiments == first.experiments

    monkeypatch.setattr(ingest_module, "_write_runs", real_write)
    client = MlflowClient(tracking_uri=first.tracking_uri)
    cell_id, run_id = next((c, r) for (_, c), r in first.runs.items())
    client.delete_run(run_id)  # by hand, as in the UI: the ledger no longer describes the database
    healed = ingest(results)
    assert (healed.created, healed.updated, healed.skipped) == (1, 0, 3)
    assert len(runs_by_cell(client, "bench/tiny")) == 4

    other = next(c for (_, c) in first.runs if c != cell_id)
    path = results / "cells" / other / "result.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "test_acc": 0.25}))
    changed = ingest(results)
    assert (changed.created, changed.updated, changed.skipped) == (0, 1, 3)
    assert runs_by_cell(client, "bench/tiny")[other].data.metrics["test_acc"] == 0.25


def test_a_damaged_ledger_costs_only_the_full_check(results: Path) -> None:
    from bench.results.ingest_ledger import LEDGER_FILE

    first = ingest(results)
    for garbage in (b"not json", b"[1, 2]", b'{"key": 5, "runs": []}'):
        (results / LEDGER_FILE).write_bytes(garbage)
        again = ingest(results)
        assert (again.created, again.updated, again.skipped) == (0, 0, 4) and again.runs == first.runs
    assert json.loads((results / LEDGER_FILE).read_text())["runs"]  # rewritten by the full check


def database_rows(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table of an MLflow sqlite database but the experiments' (their creation
    times and folders differ), run ids replaced by cell ids and artifact folders (named by run id)
    left out, so two databases of the same cells compare equal."""
    import sqlite3

    with sqlite3.connect(db) as connection:
        cell_of = dict(connection.execute("SELECT run_uuid, value FROM tags WHERE key = ?", (CELL_TAG,)))
        tables = [name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if name != "experiments"]
        rows = {}
        for table in tables:
            cursor = connection.execute(f'SELECT * FROM "{table}"')
            columns = [c[0] for c in cursor.description]
            rows[table] = sorted(
                tuple(cell_of.get(v, v) if column == "run_uuid" else "<per run>" if column == "artifact_uri" else v
                      for column, v in zip(columns, row)) for row in cursor)
    return rows


class Killed(BaseException):
    """What a kill looks like to the code it interrupts: nothing catches it."""


def test_a_killed_bulk_ingest_leaves_no_artifact_folder_behind_once_ingest_runs_again(
        results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Artifacts are copied before their chunk commits: a kill in between leaves folders no run
    points at, which the next ingest removes (the journal names them); committed runs keep theirs."""
    import bench.results.ingest_bulk as bulk
    from bench.results.ingest_bulk import PENDING_FILE
    from mlflow import MlflowClient

    copy = bulk._log_artifacts
    copies: list[str] = []

    def copy_then_die(uri: str, files: list[Path]) -> None:
        if len(copies) == 3:  # the second chunk's second run: its first run's folder is written, uncommitted
            raise Killed
        copies.append(uri)
        copy(uri, files)

    with monkeypatch.context() as patch:
        patch.setattr(bulk, "CHUNK", 2)
        patch.setattr(bulk, "_log_artifacts", copy_then_die)
        with pytest.raises(Killed):
            ingest(results)
    assert (results / PENDING_FILE).exists()
    again = ingest(results)
    assert (again.created, again.skipped) == (2, 2) and not (results / PENDING_FILE).exists()
    client = MlflowClient(tracking_uri=again.tracking_uri)
    (experiment_id,) = set(again.experiments.values())
    location = Path(client.get_experiment(experiment_id).artifact_location.removeprefix("file://"))
    assert sorted(p.name for p in location.iterdir() if p.is_dir()) == sorted(again.runs.values())
    assert all(client.list_artifacts(run_id) for run_id in again.runs.values())
    # a journal planted in the shared folder removes nothing but uncommitted folders of this database's experiment
    store = bulk.sql_store(client)
    outside = location.parent / "x"
    outside.mkdir()
    stray = location / ("f" * 32)
    stray.mkdir()
    for database, experiment in ((str(store.db_uri), "0"), ("sqlite:///other.db", experiment_id)):
        (results / PENDING_FILE).write_text(json.dumps({"database": database, "experiment_id": experiment, "run_ids": ["f" * 32]}))
        assert bulk.remove_uncommitted(store, results / PENDING_FILE, experiment_id) == 0 and stray.is_dir()
    (results / PENDING_FILE).write_text(json.dumps({"database": str(store.db_uri), "experiment_id": experiment_id,
                                                    "run_ids": ["../x", "f" * 32, *again.runs.values()]}))
    assert bulk.remove_uncommitted(store, results / PENDING_FILE, experiment_id) == 1
    assert outside.is_dir() and not stray.exists()
    assert sorted(p.name for p in location.iterdir() if p.is_dir()) == sorted(again.runs.values())


def test_runs_written_in_bulk_equal_runs_the_client_writes(results: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The bulk path writes the very rows MLflow's client would, in every table of the database."""
    import bench.results.ingest
    from mlflow import MlflowClient

    by_client = tmp_path / "by-client"
    shutil.copytree(results, by_client)
    in_bulk = ingest(results)
    with monkeypatch.context() as patch:
        patch.setattr(bench.results.ingest, "sql_store", lambda client: None)
        one_by_one = ingest(by_client)
    assert in_bulk.created == one_by_one.created == 4
    bulk_rows, client_rows = database_rows(results / "mlflow.db"), database_rows(by_client / "mlflow.db")
    assert sum(map(len, bulk_rows.values())) > 4 * 30  # runs, tags, params, metrics: compared below
    assert bulk_rows == client_rows
    for summary, root in ((in_bulk, results), (one_by_one, by_client)):
        client = MlflowClient(tracking_uri=summary.tracking_uri)
        check_runs(client, root)
        for run_id in summary.runs.values():
            assert {a.path: a.file_size for a in client.list_artifacts(run_id)} == {
                a.path: a.file_size for a in MlflowClient(tracking_uri=one_by_one.tracking_uri).list_artifacts(
                    one_by_one.runs[next(k for k, v in summary.runs.items() if v == run_id)])}
