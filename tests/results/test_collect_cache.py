"""bench collect's cache of rows (bench/results/collect_cache.py): a collect from the cache builds the very
table a fresh collect builds, and any change to a cell, a dependency's config or the cache file
is seen."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

import bench.results.collect as collect_module
from bench.results.collect import read_cells
from bench.results.collect_cache import CACHE_FILE


@pytest.fixture
def results(tiny_results: Path, tmp_path: Path) -> Path:
    root = tmp_path / "results"
    shutil.copytree(tiny_results, root, ignore=shutil.ignore_patterns("*.pt", CACHE_FILE))
    return root


def fresh(root: Path) -> pd.DataFrame:
    """The table without the cache, from a copy (so the cache under test is left alone)."""
    copy = root.parent / "fresh"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns(CACHE_FILE))
    frame, _ = read_cells(copy)
    return frame


def rewrite(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}, indent=2))


def no_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cell was read although the cache had it")

    monkeypatch.setattr(collect_module, "_read_cell", refuse)


def test_an_unchanged_folder_is_collected_from_the_cache_as_a_fresh_collect(results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, _ = read_cells(results)
    assert (results / CACHE_FILE).is_file()
    pd.testing.assert_frame_equal(first, fresh(results))
    no_reads(monkeypatch)
    again, problems = read_cells(results)
    assert not problems
    pd.testing.assert_frame_equal(again, first)


def test_changes_to_a_cell_or_its_teacher_are_read_again(results: Path) -> None:
    read_cells(results)
    cells = {json.loads((p / "config.json").read_text())["stage"]: p for p in (results / "cells").iterdir()}
    teacher = next(p for stage, p in cells.items() if stage == "teacher")
    student = next(p for p in (results / "cells").iterdir() if teacher.name in json.loads((p / "config.json").read_text())["deps"].values())
    rewrite(student / "result.json", test_acc=0.125)
    rewrite(teacher / "config.json", lr=0.5)  # a dependant's teacher.* columns come from it
    frame, _ = read_cells(results)
    pd.testing.assert_frame_equal(frame, fresh(results))
    assert frame.loc[frame["id"] == student.name, "test_acc"].item() == 0.125
    assert (frame.loc[frame["teacher.id"] == teacher.name, "teacher.lr"] == 0.5).all()


def test_a_cell_no_longer_done_or_no_longer_readable_leaves_the_table(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, _ = read_cells(results)
    gone, broken = sorted(p for p in (results / "cells").iterdir())[:2]
    (gone / "DONE").unlink()
    (broken / "result.json").write_text("{ not json")
    frame, problems = read_cells(results)
    assert set(frame["id"]) == set(first["id"]) - {gone.name, broken.name}
    assert list(problems) == [broken.name] and "corrupt JSON" in problems[broken.name]
    assert broken.name not in json.loads((results / CACHE_FILE).read_text())["cells"]


@pytest.mark.parametrize("garbage", [b"not json", b"[]", b'{"format": 1, "cells": {"abc": [1, 2]}}',
                                     b'{"format": 1, "cells": []}', b'{"format": 999, "cells": {}}'])
def test_a_damaged_cache_costs_only_a_fresh_collect(results: Path, garbage: bytes) -> None:
    read_cells(results)
    (results / CACHE_FILE).write_bytes(garbage)
    frame, problems = read_cells(results)
    assert not problems
    pd.testing.assert_frame_equal(frame, fresh(results))
    assert json.loads((results / CACHE_FILE).read_text())["format"] == 1  # rewritten


def test_tables_are_rewritten_only_when_the_table_or_the_files_changed(results: Path) -> None:
    from bench.results.collect import TABLES_STATE, write_tables

    def signatures() -> tuple:
        return tuple((p.stat().st_mtime_ns, p.stat().st_ino) for p in (results / "results.csv", results / "results.parquet"))

    frame, _ = read_cells(results)
    write_tables(frame, results)
    first = signatures()
    write_tables(read_cells(results)[0], results)
    assert signatures() == first  # the same table: neither file written again
    changed = frame.copy()
    changed.loc[0, "test_acc"] = 0.125
    write_tables(changed, results)
    assert signatures() != first and pd.read_csv(results / "results.csv")["test_acc"][0] == 0.125
    assert pd.read_parquet(results / "results.parquet")["test_acc"][0] == 0.125
    for spoil in (lambda: (results / "results.csv").write_text("edited by hand\n"),
                  lambda: (results / "results.parquet").unlink(),
                  lambda: (results / TABLES_STATE).write_bytes(b"\xff not json")):
        spoil()
        write_tables(frame, results)
        assert pd.read_parquet(results / "results.parquet")["test_acc"][0] == frame["test_acc"][0]
        assert pd.read_csv(results / "results.csv")["test_acc"][0] == pytest.approx(frame["test_acc"][0])


def test_a_read_only_copy_works_for_reading_without_its_caches(tiny_results: Path, tmp_path: Path) -> None:
    """A copy (new inodes: every cached row is stale) mounted read-only: ``bench report --out
    ELSEWHERE`` and a rerun of the finished matrix work, one note saying the caches are skipped."""
    from tests.conftest import TINY
    from tests.results.test_hostile import bench, mounted

    copy, view, out = tmp_path / "copy", tmp_path / "ro", tmp_path / "out"
    shutil.copytree(tiny_results, copy)
    with mounted(view, "--bind", str(copy)):
        import subprocess

        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        for args in (["report", str(view), "--out", str(out)], ["run", str(TINY), "--results", str(view)]):
            done = bench(*args)
            assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
            notes = [line for line in done.stderr.splitlines() if line.startswith("bench: ")]
            assert notes == [f"bench: note: {view}: caches cannot be written there (Read-only file system); working without them"], notes
    assert (out / "tiny" / "report.md").is_file()
