"""Hostile input, as a security reviewer and a demanding user on a shared cluster would try it.

Each case asserts what bench does now: refuse in one line naming the file and field (exit 2, no
traceback), or cope (wait, fall back, skip), never run code from a results folder.
The cases of `bench check`/collect/MLflow are in test_hostile_results.py, prefetch's in
test_hostile_prefetch.py.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch
from pydantic import create_model

from bench.cli import main
from bench.matrix.config import ID_FIELDS_V1, CellConfig, cell_id, id_payload
from bench.training.checkpoints import load_checkpoint
from bench.errors import BenchError, ConfigError
from bench.results.locks import exclusive
from bench.matrix.schema import load_matrix
from bench.matrix.plan import expand, select
from bench.results.store import Store
from tests.conftest import ROOT, write_matrix

SHIPPED_IDS = json.loads((ROOT / "tests" / "fixtures" / "cell-ids.json").read_text())

# Small enough to run several times: one teacher, two students, about 3 s on one core.
SMALL = {
    "name": "small",
    "defaults": {"dataset": "digits", "image_size": 8, "epochs": 2, "lr": 0.05, "batch_size": 64, "schedule": "constant"},
    "axes": {"seed": [0]},
    "stages": {
        "teacher": {"method": "supervised", "axes": {"arch": ["menghani_mlp"]}},
        "student": {"method": "blind", "needs": {"teacher": "teacher"},
                    "set": {"unlabeled": "fashion_mnist", "unlabeled_limit": 500, "epochs": 1},
                    "axes": {"arch": ["menghani_mlp", "menghani_cnn"]}},
    },
}


def bench(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, **(env or {})})


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """The run failed with exit 2 and one line on stderr holding every fragment; returns it."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("bench: ")]
    assert len(lines) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as error:
        expand(load_matrix(path))
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


# --------------------------------------------------------------------------- 1. nothing in a results folder runs code


class _Planted:
    """Unpickling this runs ``touch <marker>``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_pickle_checkpoint_is_refused_in_one_line_and_never_runs(tmp_path: Path) -> None:
    cell = Store(tmp_path).cell("0123456789ab")
    cell.path.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"epoch": 1, "model": {}, "optimizer": {}, "rng": _Planted(marker)}, cell.checkpoint)
    with pytest.raises(BenchError) as error:
        load_checkpoint(cell, progress=lambda _: None)
    assert not marker.exists()
    message = str(error.value)
    assert "\n" not in message and "checkpoint.pt" in message and "refused to unpickle" in message
    assert "to restart the cell" in message
    # pickle.load would have run it: the test's planted file is real
    pickle.loads(pickle.dumps(_Planted(marker)))
    assert marker.exists()


def test_a_truncated_checkpoint_falls_back_to_the_previous_epoch(tmp_path: Path) -> None:
    results = tmp_path / "runs"
    matrix = write_matrix(tmp_path, {**SMALL, "stages": {"teacher": {**SMALL["stages"]["teacher"], "set": {"epochs": 3}}}})
    assert main(["run", str(matrix), "--results", str(results), "--keep-checkpoints"]) == 0
    (cell_dir,) = (results / "cells").iterdir()
    metrics = json.loads((cell_dir / "metrics.json").read_text())
    assert (cell_dir / "checkpoint.prev.pt").exists()
    # damage the last checkpoint and pretend the cell was killed before DONE
    data = (cell_dir / "checkpoint.pt").read_bytes()
    (cell_dir / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    (cell_dir / "DONE").unlink()
    (cell_dir / "result.json").unlink()
    result = bench("run", str(matrix), "--results", str(results))
    assert result.returncode == 0, result.stderr
    assert "resuming from checkpoint.prev.pt (epoch 2)" in result.stderr
    again = json.loads((cell_dir / "metrics.json").read_text())
    assert [m["test_acc"] for m in again] == [m["test_acc"] for m in metrics]  # epoch 3 rerun exactly
    # both damaged: one line naming the file and how to restart
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (cell_dir / name).write_bytes(b"not a zip")
    (cell_dir / "DONE").unlink()
    failed = bench("run", str(matrix), "--results", str(results))
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert f"delete {cell_dir / 'checkpoint.pt'} and checkpoint.prev.pt to restart the cell" in failed.stderr


def test_checkpoints_hold_only_what_weights_only_loads(tmp_path: Path) -> None:
    results = tmp_path / "runs"
    matrix = write_matrix(tmp_path, {**SMALL, "stages": {"teacher": SMALL["stages"]["teacher"]}})
    assert main(["run", str(matrix), "--results", str(results), "--keep-checkpoints"]) == 0
    (checkpoint,) = (results / "cells").glob("*/checkpoint.pt")
    state = torch.load(checkpoint, weights_only=True)  # raises if anything but tensors/containers is inside
    assert set(state["rng"]) >= {"torch", "python", "numpy"} and state["epoch"] == 1


# --------------------------------------------------------------------------- 2. names cannot escape


@pytest.mark.parametrize("label,matrix,field", [
    ("matrix name with ..", {"name": "../../x"}, "name"),
    ("matrix name with /", {"name": "a/b"}, "name"),
    ("stage name with a newline", {"stages": {"t\nrm -rf ~": {"method": "supervised"}}}, "stages."),
    ("stage name with a shell character", {"stages": {"t;id": {"method": "supervised"}}}, "stages."),
    ("role name with a space", {"stages": {"t": {"method": "supervised"}, "s": {"method": "kd", "needs": {"te acher": "t"}}}},
     "stages.s.needs"),
    ("axis value with /", {"stages": {"t": {"method": "supervised", "axes": {"dataset": ["../etc"]}}}}, "stages.t.axes.dataset[0]"),
    ("arch with a newline", {"defaults": {"dataset": "digits", "arch": "mlp\nsrun evil"}}, "defaults.arch"),
])
def test_names_that_reach_paths_or_sbatch_are_plain(tmp_path: Path, label: str, matrix: dict, field: str) -> None:
    spec = {"name": "ok", "defaults": {"dataset": "digits", "arch": "menghani_mlp"},
            "stages": {"t": {"method": "supervised"}}, **matrix}
    message = config_error(write_matrix(tmp_path, spec))
    assert field in message and "plain name" in message, message


def test_the_store_keeps_paths_inside_the_results_folder(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for bad in ("../../x", "a/b", "x\ny"):
        with pytest.raises(BenchError, match="not a plan name"):
            store.plan_path(bad)
    with pytest.raises(BenchError, match="not a cell id"):
        store.cell("../../../etc")
    (tmp_path / "cells" / "not-a-cell").mkdir(parents=True)
    (tmp_path / "cells" / "0123456789ab").mkdir()
    assert store.cell_ids() == ["0123456789ab"]
    assert store.plan_path("ci@0a1b2c3d").parent == tmp_path / "plans"


def test_a_planted_config_cannot_point_a_dependency_outside(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a cell id"):
        CellConfig.model_validate({"stage": "s", "method": "kd", "arch": "menghani_mlp", "dataset": "digits",
                                   "deps": {"teacher": "../../../../etc/passwd"}})


# --------------------------------------------------------------------------- 4. concurrent runs cooperate


def test_concurrent_runs_sharing_a_teacher_all_finish(tmp_path: Path) -> None:
    results = tmp_path / "runs"
    matrix = write_matrix(tmp_path, SMALL)
    commands = [["--only", "menghani_cnn"], ["--only", "student"], []]
    processes = [subprocess.Popen([sys.executable, "-m", "bench.cli", "run", str(matrix), "--results", str(results), *extra],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) for extra in commands]
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    cells = list((results / "cells").iterdir())
    assert len(cells) == 3 and all((c / "DONE").exists() for c in cells)
    (teacher,) = [c for c in cells if json.loads((c / "config.json").read_text())["stage"] == "teacher"]
    log = (teacher / "log.txt").read_text()
    assert log.count("epoch 1/2") == 1, log  # trained once, whoever got there first


@pytest.mark.parametrize("kind", ["flock", "file"])
def test_a_locked_cell_is_waited_for_then_found_done(tmp_path: Path, kind: str) -> None:
    """A second process blocks on the lock (printing that it waits) until the first releases it."""
    lock = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from bench.results.locks import exclusive\n"
        f"with exclusive(Path({str(lock)!r}), 'cell x', kind={kind!r}):\n"
        "    print('held', flush=True); time.sleep(2.5)\n")], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout.readline().strip() == "held"
    lines: list[str] = []
    started = time.monotonic()
    with exclusive(lock, "cell x", kind=kind, echo=lines.append) as acquired:
        waited = time.monotonic() - started
        assert acquired
    holder.wait(timeout=30)
    assert waited > 1.0 and lines and "waiting for cell x: locked by" in lines[0] and str(holder.pid) in lines[0]


def test_file_lock_recovers_from_a_dead_holder_and_a_silent_host(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    owner = lock.with_name(".lock.owner")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner.write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead.stdout), "since": time.time(), "token": "a"}))
    with exclusive(lock, "cell x", kind="file", wait=True) as acquired:
        assert acquired and json.loads(owner.read_text())["pid"] == os.getpid()
    assert not owner.exists()
    # a holder on another node whose heartbeat stopped long ago
    owner.write_text(json.dumps({"host": "node-that-died", "pid": 1, "since": 0, "token": "b"}))
    os.utime(owner, (time.time() - 1000, time.time() - 1000))
    with exclusive(lock, "cell x", kind="file", wait=True, stale_seconds=60) as acquired:
        assert acquired
    # ...but a live heartbeat from another node is respected
    owner.write_text(json.dumps({"host": "busy-node", "pid": 1, "since": time.time(), "token": "c"}))
    with exclusive(lock, "cell x", kind="file", wait=False) as acquired:
        assert not acquired
    assert json.loads(owner.read_text())["token"] == "c"


def test_the_file_lock_heartbeat_keeps_a_long_hold_fresh(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    owner = lock.with_name(".lock.owner")
    with exclusive(lock, "cell x", kind="file", heartbeat_seconds=0.1):
        os.utime(owner, (0, 0))
        time.sleep(0.5)
        assert time.time() - owner.stat().st_mtime < 5


def test_flock_refused_by_the_mount_falls_back_to_the_file_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import fcntl

    def no_locks(*_args: object) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with exclusive(tmp_path / ".lock", "cell x", kind="auto") as acquired:
        assert acquired and (tmp_path / ".lock.owner").exists()


# --------------------------------------------------------------------------- 5. bounded input


def test_a_matrix_too_big_fails_before_expanding(tmp_path: Path) -> None:
    spec = {"name": "big", "defaults": {"dataset": "digits", "arch": "menghani_mlp"},
            "axes": {"seed": list(range(1000)), "lr": [0.001 * (i + 1) for i in range(200)]},
            "stages": {"t": {"method": "supervised"}}}
    path = write_matrix(tmp_path, spec)
    started = time.monotonic()
    message = config_error(path)
    assert time.monotonic() - started < 5
    assert "200,000 cells" in message and "seed 1000" in message and "lr 200" in message and "--max-cells" in message
    result = bench("plan", str(path), "--max-cells", "10")
    one_line_error(result, "stages.t", "more than the limit of 10")


def test_a_yaml_bomb_is_one_short_line(tmp_path: Path) -> None:
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(levels) + "\nname: bomb\nstages: {t: {method: supervised, axes: {seed: *i}}}\n")
    result = bench("plan", str(path), timeout=60)
    one_line_error(result, str(path), "aliases")
    assert len(result.stderr) < 500, len(result.stderr)


def test_a_huge_value_is_not_repeated_in_the_error(tmp_path: Path) -> None:
    path = write_matrix(tmp_path, {"name": "x", "stages": {"t": {"method": "supervised", "axes": {"lr": [["x" * 100_000] * 10]}}}})
    message = config_error(path)
    assert len(message) < 600 and "stages.t.axes.lr[0]" in message


def test_a_very_deep_list_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("name: deep\nstages: {t: {method: supervised}}\ndefaults: {x: " + "[" * 20_000 + "]" * 20_000 + "}\n")
    one_line_error(bench("plan", str(path)), str(path), "nested more than")


# --------------------------------------------------------------------------- 6. every remaining traceback is one line


def test_a_matrix_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\nstages: {t: {method: supervised}}\n".encode("latin-1"))
    one_line_error(bench("plan", str(path)), str(path), "not UTF-8")


def test_a_profile_that_is_a_folder_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "profile.yaml"
    folder.mkdir()
    matrix = write_matrix(tmp_path, SMALL)
    one_line_error(bench("run", str(matrix), "--executor", "slurm", "--profile", str(folder), "--results", str(tmp_path / "r")),
                   str(folder), "is a folder")


def test_results_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.write_text("")
    one_line_error(bench("run", str(write_matrix(tmp_path, SMALL)), "--results", str(results)), str(results), "is a file")


@contextmanager
def mounted(target: Path, *options: str) -> Iterator[None]:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *options, str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip()}); needs root")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_a_full_disk_is_one_line_and_resumable(tmp_path: Path) -> None:
    results = tmp_path / "full"
    spec = {**SMALL, "stages": {"teacher": {"method": "supervised", "axes": {"arch": ["menghani_cnn"]}}}}
    matrix = write_matrix(tmp_path, {**spec, "defaults": {**spec["defaults"], "image_size": 28}})
    with mounted(results, "-t", "tmpfs", "-o", "size=4m", "tmpfs"):
        result = bench("run", str(matrix), "--results", str(results))
        one_line_error(result, "no space left on the device", "resume")
        assert not list(results.glob("cells/*/DONE")) and not list(results.rglob(".*.tmp"))


def test_a_read_only_results_folder(tmp_path: Path) -> None:
    source, view = tmp_path / "runs", tmp_path / "ro"
    spec = {**SMALL, "stages": {"teacher": SMALL["stages"]["teacher"]}}
    matrix = write_matrix(tmp_path, spec)
    assert main(["run", str(matrix), "--results", str(source)]) == 0
    view.mkdir()
    with mounted(view, "--bind", str(source)):
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        rerun = bench("run", str(matrix), "--results", str(view))
        assert rerun.returncode == 0, rerun.stderr  # every cell done: nothing to write
        assert "1 already done" in rerun.stderr
        more = write_matrix(tmp_path, {**spec, "axes": {"seed": [1]}}, "more.yaml")
        one_line_error(bench("run", str(more), "--results", str(view)), "read-only", "--results")


def test_a_done_teacher_whose_model_is_gone_is_seen_before_anything_runs(tmp_path: Path) -> None:
    results = tmp_path / "runs"
    matrix = write_matrix(tmp_path, SMALL)
    assert main(["run", str(matrix), "--results", str(results), "--only", "teacher"]) == 0
    (model,) = (results / "cells").glob("*/model.pt")
    model.unlink()
    one_line_error(bench("run", str(matrix), "--results", str(results)), "marked done but has no model.pt",
                   f"rm {model.parent / 'DONE'}")
    (model.parent / "DONE").unlink()
    result = bench("run", str(matrix), "--results", str(results))
    assert result.returncode == 0, result.stderr
    assert model.exists() and len(list(results.glob("cells/*/DONE"))) == 3


def test_sigterm_prints_the_resume_hint_and_leaves_a_resumable_cell(tmp_path: Path) -> None:
    results = tmp_path / "runs"
    spec = {**SMALL, "defaults": {**SMALL["defaults"], "epochs": 40, "image_size": 28},
            "stages": {"teacher": {"method": "supervised", "axes": {"arch": ["menghani_cnn"]}}}}
    matrix = write_matrix(tmp_path, spec)
    process = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", str(matrix), "--results", str(results)],
                               stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 300
    while not list(results.glob("cells/*/checkpoint.pt")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "bench: terminated; run the same command again to resume"
    (log,) = results.glob("cells/*/log.txt")
    assert "interrupted; rerun to resume from the last checkpoint" in log.read_text()
    assert not list(results.glob("cells/*/DONE")) and not list(results.rglob(".*.tmp"))


def test_result_json_is_strict_json(tiny_results: Path) -> None:
    for path in tiny_results.glob("cells/*/*.json"):
        json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{path}: bare {name}"))
    results = [json.loads(p.read_text()) for p in tiny_results.glob("cells/*/result.json")]
    assert any(r["val_acc"] is None for r in results)  # no validation split: null, not NaN


# --------------------------------------------------------------------------- 7. semantics that surprised users


def test_duplicate_keys_and_stages_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: dup\nstages:\n  t: {method: supervised}\n  t: {method: kd}\n")
    assert "line 4: duplicate key 't'" in config_error(path)
    path.write_text("name: dup\ndefaults: {lr: 0.1, lr: 0.2}\nstages: {t: {method: supervised}}\n")
    assert "duplicate key 'lr'" in config_error(path)


def test_epochs_zero_needs_pretrained_weights(tmp_path: Path) -> None:
    spec = {"name": "z", "defaults": {"dataset": "digits", "arch": "menghani_mlp", "epochs": 0}, "stages": {"t": {"method": "supervised"}}}
    assert "stages.t.epochs: 0 trains nothing" in config_error(write_matrix(tmp_path, spec))
    imagenet = expand(load_matrix(ROOT / "matrices" / "menghani2019.yaml"))
    assert any(c.config.epochs == 0 and c.config.pretrained for c in imagenet)  # evaluating pretrained weights is allowed


def test_only_matches_stage_method_arch_and_id_not_descriptions(tmp_path: Path) -> None:
    cells = expand(load_matrix(ROOT / "matrices" / "demo.yaml"))
    assert {c.stage for c in select(cells, "teacher")} == {"teacher"}  # a student's description names its teacher
    students = select(cells, "student")
    assert {c.stage for c in students} == {"teacher", "student"}  # students and what they need, not the fine-tunes
    assert [c.id for c in select(cells, cells[3].id[:6])] == [c.id for c in cells if c.id in {cells[3].id, *cells[3].config.deps.values()}]
    with pytest.raises(BenchError, match="matches no cell"):
        select(cells, "digits")


# --------------------------------------------------------------------------- 8. stable cell ids


@pytest.mark.parametrize("name", sorted(SHIPPED_IDS))
def test_shipped_matrices_keep_their_cell_ids(name: str) -> None:
    """The ids of tests/fixtures/cell-ids.json were recorded before ids were made a promise; they
    must never change (a changed id orphans every result and baseline computed with it)."""
    assert [c.id for c in expand(load_matrix(ROOT / "matrices" / f"{name}.yaml"))] == SHIPPED_IDS[name]


def test_a_new_field_at_its_default_changes_no_id() -> None:
    Extended = create_model("Extended", __base__=CellConfig, future_knob=(int, 1), future_name=(str | None, None))
    fields = {"stage": "t", "method": "supervised", "arch": "menghani_mlp", "dataset": "digits", "lr": 0.05}
    today, tomorrow = CellConfig(**fields), Extended(**fields)
    assert cell_id(tomorrow) == cell_id(today)
    assert "future_knob" not in id_payload(tomorrow)
    assert cell_id(Extended(**fields, future_knob=2)) != cell_id(today)  # off its default, it is part of the id
    assert cell_id(CellConfig(**{**fields, "lr": 0.01})) != cell_id(today)  # first-release fields always count


def test_a_config_written_before_a_field_existed_is_the_same_cell(tmp_path: Path, tiny_results: Path) -> None:
    from bench.run.runner import prepare_cell

    results = tmp_path / "r"
    shutil.copytree(tiny_results, results)
    cell_dir = next((results / "cells").iterdir())
    config = CellConfig.model_validate(json.loads((cell_dir / "config.json").read_text()))
    Extended = create_model("Extended", __base__=CellConfig, future_knob=(int, 1))
    before = (cell_dir / "config.json").read_bytes()
    prepare_cell(Store(results), cell_dir.name, Extended(**config.model_dump()))  # no "differs from the planned config"
    assert (cell_dir / "config.json").read_bytes() == before
    with pytest.raises(BenchError, match="differs from the planned config"):
        prepare_cell(Store(results), cell_dir.name, config.model_copy(update={"lr": config.lr / 2}))


def test_a_damaged_plan_file_is_skipped_with_a_warning(tmp_path: Path, tiny_results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.results.collect import collect

    results = tmp_path / "r"
    shutil.copytree(tiny_results, results)
    good = len(collect(results))
    for name, text in (("list", "[1]"), ("noid", '{"cells": [{"x": 1}]}'), ("escape", '{"cells": [{"id": "../../etc"}]}'), ("torn", "{bad")):
        (results / "plans" / f"{name}.json").write_text(text)
    capsys.readouterr()
    table = collect(results)
    err = capsys.readouterr().err
    assert len(table) == good and set(table["matrix"]) == {"tiny"}
    for name in ("list", "noid", "escape", "torn"):
        assert f"plans/{name}.json" in err


@pytest.mark.parametrize("name", sorted(SHIPPED_IDS))
def test_the_id_payload_encodes_as_the_configs_json_dump(name: str) -> None:
    """id_payload takes the config's own values (no dump per cell, for speed); they must encode
    exactly as the first release's rule did: the JSON dump, minus later fields at their default."""
    for cell in expand(load_matrix(ROOT / "matrices" / f"{name}.yaml")):
        full = cell.config.model_dump(mode="json")
        changed = cell.config.model_dump(mode="json", exclude_defaults=True)
        before = {k: v for k, v in full.items() if k in ID_FIELDS_V1 or k in changed}
        assert json.dumps(id_payload(cell.config), sort_keys=True) == json.dumps(before, sort_keys=True)


# --------------------------------------------------------------------------- no link is followed out of the folder

TINY_MATRIX = ROOT / "tests" / "fixtures" / "tiny.yaml"


def _teacher_id() -> str:
    return next(c.id for c in expand(load_matrix(TINY_MATRIX)) if c.stage == "teacher")


@pytest.mark.parametrize("kind", ["flock", "file"])
@pytest.mark.parametrize("planted", [".lock", "log.txt", "cell folder", "cells", "artifacts"])
def test_a_planted_link_is_never_followed_and_is_named(tmp_path: Path, planted: str, kind: str) -> None:
    results, victim = tmp_path / "runs", tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("mine")
    cell = results / "cells" / _teacher_id()
    cell.mkdir(parents=True)
    if planted in ("cell folder", "cells"):
        link = cell if planted == "cell folder" else cell.parent
        cell.rmdir()
        if link.exists():
            link.rmdir()
        link.symlink_to(victim)
    elif planted == "artifacts":
        link = cell / "artifacts"
        link.symlink_to(victim)
    else:
        link = cell / (".lock.owner" if planted == ".lock" and kind == "file" else planted)
        link.symlink_to(victim / "precious")
    result = bench("run", str(TINY_MATRIX), "--results", str(results), "--only", "teacher", env={"BENCH_LOCK": kind})
    one_line_error(result, f"{link}: is a symbolic link")
    assert sorted(p.name for p in victim.iterdir()) == ["precious"] and (victim / "precious").read_text() == "mine"


def test_a_planted_ingest_lock_link_is_never_followed(tmp_path: Path, tiny_results: Path) -> None:
    results = tmp_path / "runs"
    shutil.copytree(tiny_results, results)
    victim = tmp_path / "precious"
    victim.write_text("mine")
    link = results / ".mlflow-ingest.lock"
    link.unlink(missing_ok=True)
    link.symlink_to(victim)
    one_line_error(bench("ingest", str(results)), f"{link}: is a symbolic link")
    assert victim.read_text() == "mine"


def test_a_results_folder_that_is_itself_a_link_still_works(tmp_path: Path) -> None:
    real, link = tmp_path / "real", tmp_path / "runs"
    real.mkdir()
    link.symlink_to(real)
    spec = {**SMALL, "stages": {"teacher": SMALL["stages"]["teacher"]}}
    assert main(["run", str(write_matrix(tmp_path, spec)), "--results", str(link)]) == 0
    assert len(list(real.glob("cells/*/DONE"))) == 1


def _commands_with_only() -> list[str]:
    import argparse

    from bench.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted({name for name, p in sub.choices.items() if any("--only" in a.option_strings for a in p._actions)})


def test_every_matrix_command_takes_only() -> None:
    assert {"plan", "run", "status", "cancel"} <= set(_commands_with_only())


@pytest.mark.parametrize("pattern", ["", "   "])
@pytest.mark.parametrize("command", _commands_with_only())
def test_an_empty_only_selects_nothing_and_is_an_error(command: str, pattern: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``bench cancel M --only "$UNSET"`` must not cancel every job of the matrix."""
    results = [] if command == "plan" else ["--results", str(tmp_path / "runs")]
    code = main([command, str(TINY_MATRIX), "--only", pattern, *results])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"bench: --only {pattern!r}: an empty pattern"), err
    assert not (tmp_path / "runs" / "cells").exists()
