"""Unit tests of the results folder (``bench.results.store``, ``bench.results.locks``): atomic
writes, the DONE marker, reading back what is untrusted, exclusive locks. No cell runs here."""
from __future__ import annotations

import multiprocessing
import os
import pickle
import time
from pathlib import Path

import pytest
import torch

from bench.errors import BenchError
from bench.results.locks import exclusive
from bench.results.store import (Store, UnreadableFile, atomic_torch_save, atomic_write_bytes, atomic_write_json,
                                 load_tensors, read_json)

CELL = "0123456789ab"


def test_an_interrupted_write_leaves_the_old_file_whole_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "result.json"
    atomic_write_json(target, {"test_acc": 0.5})

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # the process dies between writing the temporary and renaming it

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(target, {"test_acc": 0.9})
    monkeypatch.undo()
    assert read_json(target) == {"test_acc": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_an_atomic_write_replaces_the_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "blob"
    atomic_write_bytes(target, b"x" * 10_000)
    atomic_write_bytes(target, b"short")
    assert target.read_bytes() == b"short"


def test_a_cell_is_done_only_once_its_marker_is_written(tmp_path: Path) -> None:
    cell = Store(tmp_path).cell(CELL)
    atomic_write_json(cell.result, {"test_acc": 0.5})
    assert not cell.is_done()
    cell.mark_done()
    assert cell.is_done() and Store(tmp_path).done_cell_ids() == [CELL]


def test_corrupt_json_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"stage": "teacher",')
    with pytest.raises(BenchError) as error:
        read_json(path)
    assert str(error.value).startswith(f"{path}: corrupt JSON") and "\n" not in str(error.value)


def test_tensors_round_trip_and_pickles_are_refused(tmp_path: Path) -> None:
    good = tmp_path / "logits.pt"
    atomic_torch_save(good, {"logits": torch.arange(6.0).view(2, 3), "key": "k"})
    assert torch.equal(load_tensors(good)["logits"], torch.arange(6.0).view(2, 3))

    planted = tmp_path / "planted.pt"
    torch.save({"payload": Path("/etc/passwd")}, planted)  # an arbitrary object: loading it would unpickle code
    with pytest.raises(UnreadableFile, match="refused to unpickle"):
        load_tensors(planted)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(os.getcwd))
    with pytest.raises(UnreadableFile):
        load_tensors(raw)
    with pytest.raises(UnreadableFile, match="missing"):
        load_tensors(tmp_path / "absent.pt")


def test_a_truncated_checkpoint_is_unreadable_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    atomic_torch_save(path, {"w": torch.ones(1000)})
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UnreadableFile) as error:
        load_tensors(path)
    assert str(error.value).startswith(f"{path}: cannot be loaded") and "\n" not in str(error.value)


def test_a_linked_cell_folder_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "results"
    (root / "cells").mkdir(parents=True)
    (root / "cells" / CELL).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(BenchError, match="link"):
        Store(root).cell(CELL).refuse_links()


def _hold(path: str, ready: multiprocessing.synchronize.Event, seconds: float, kind: str) -> None:
    with exclusive(Path(path), "test lock", kind=kind):
        ready.set()
        time.sleep(seconds)


@pytest.mark.parametrize("kind", ["flock", "file"])
def test_a_lock_is_exclusive_between_processes(tmp_path: Path, kind: str) -> None:
    """Both kinds: flock where the mount has it, a lock file with heartbeats where it does not."""
    path = tmp_path / "cell.lock"
    ready = multiprocessing.get_context("fork").Event()
    holder = multiprocessing.get_context("fork").Process(target=_hold, args=(str(path), ready, 1.0, kind))
    holder.start()
    try:
        assert ready.wait(20)
        with exclusive(path, "test lock", wait=False, kind=kind) as got:
            assert got is False  # held by the other process
        started = time.monotonic()
        with exclusive(path, "test lock", wait=True, echo=lambda line: None, kind=kind) as got:
            assert got is not False and time.monotonic() - started > 0.1  # waited for the holder to finish
    finally:
        holder.join(20)
    assert holder.exitcode == 0


# found by a review (issue 27): each of these was a traceback, or a read through a planted link

def test_json_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b'\xff\xfe{"a": 1}')
    with pytest.raises(BenchError, match=r"config\.json: not UTF-8 text$"):
        read_json(path)


def test_json_nested_too_deeply_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_bytes(b"[" * 100_000)
    with pytest.raises(BenchError, match=r"result\.json: nested too deeply to read$"):
        read_json(path)


def test_a_linked_json_file_is_refused_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.json"
    outside.write_text('{"a": 1}')
    (tmp_path / "result.json").symlink_to(outside)
    with pytest.raises(BenchError, match="is a symbolic link"):
        read_json(tmp_path / "result.json")


def test_a_deeply_nested_or_linked_plan_is_skipped_like_any_damaged_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "elsewhere.json"
    outside.write_text('{"matrix": "x", "cells": [{"id": "%s"}]}' % CELL)
    store = Store(tmp_path / "results")
    store.write_plan("good", "m.yaml", None, [{"id": CELL}])
    plans = tmp_path / "results" / "plans"
    (plans / "deep.json").write_bytes(b"[" * 100_000)
    (plans / "planted.json").symlink_to(outside)
    assert list(store.plans()) == ["good"]
    err = capsys.readouterr().err
    assert "deep.json: nested too deeply to read" in err and "planted.json: is a symbolic link" in err
    assert len(err.strip().splitlines()) == 2
