"""``run_cell`` on its own, in seconds: one tiny supervised cell (8x8 digits, one epoch) in a
temporary store, without the command line or a matrix."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import bench.run.runner
from bench.errors import BenchError
from bench.matrix.config import CellConfig, cell_id
from bench.results.store import CellDir, Store, read_json
from bench.run.runner import run_cell
from bench.training.runtime import Runtime

CONFIG = CellConfig(stage="teacher", method="supervised", arch="menghani_mlp", dataset="digits", image_size=8,
                    epochs=1, lr=0.05, batch_size=64, schedule="constant", label_fraction=0.5)


def _run(store: Store, config: CellConfig = CONFIG, id_: str | None = None) -> dict[str, Any]:
    lines: list[str] = []
    return run_cell(store, id_ or cell_id(config), config, Runtime(device="cpu"), lines.append)


def test_the_config_is_written_first_and_the_result_and_done_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    cell = store.cell(cell_id(CONFIG))
    seen: dict[str, set[str]] = {}
    real_train, real_mark_done = bench.run.runner.train, CellDir.mark_done

    def train(*args: Any, **kwargs: Any) -> Any:
        seen["training starts"] = {p.name for p in cell.path.iterdir()}
        return real_train(*args, **kwargs)

    def mark_done(self: CellDir) -> None:
        seen["marked done"] = {p.name for p in self.path.iterdir()}
        real_mark_done(self)

    monkeypatch.setattr(bench.run.runner, "train", train)
    monkeypatch.setattr(CellDir, "mark_done", mark_done)
    result = _run(store)
    assert "config.json" in seen["training starts"]
    assert not {"result.json", "DONE", "model.pt"} & seen["training starts"]
    assert {"config.json", "result.json", "model.pt", "metrics.json"} <= seen["marked done"] and "DONE" not in seen["marked done"]
    stored = read_json(cell.result)
    assert cell.is_done() and stored.keys() == result.keys() and stored["test_acc"] == result["test_acc"]
    assert result["cell_id"] == cell.id and result["epochs_run"] == 1 and 0.0 <= result["test_acc"] <= 1.0
    assert CellConfig.model_validate_json(cell.config.read_text()) == CONFIG
    assert not cell.checkpoint.exists() and not cell.previous_checkpoint.exists()  # no --keep-checkpoints


def test_a_done_cell_is_not_run_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    _run(store)
    first = read_json(store.cell(cell_id(CONFIG)).result)
    written = store.cell(cell_id(CONFIG)).result.stat().st_mtime_ns

    def train(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a done cell trained again")

    monkeypatch.setattr(bench.run.runner, "train", train)
    assert _run(store) == first
    assert store.cell(cell_id(CONFIG)).result.stat().st_mtime_ns == written


def test_another_config_under_the_same_id_is_a_one_line_error(tmp_path: Path) -> None:
    store = Store(tmp_path)
    id_ = cell_id(CONFIG)
    other = CONFIG.model_copy(update={"lr": 0.1})
    store.cell(id_).make_folder()
    store.cell(id_).config.write_text(json.dumps(other.model_dump(mode="json")))
    with pytest.raises(BenchError) as raised:
        _run(store, CONFIG, id_)
    message = str(raised.value)
    assert "\n" not in message and str(store.cell(id_).config) in message and "differs from the planned config" in message
    assert not store.cell(id_).result.exists() and not store.cell(id_).is_done()


def test_leftovers_of_a_killed_write_are_removed_before_the_cell_runs(tmp_path: Path) -> None:
    store = Store(tmp_path)
    cell = store.cell(cell_id(CONFIG))
    cell.make_folder()
    leftover = cell.path / ".result.json.1234.tmp"
    leftover.write_text("{half")
    _run(store)
    assert not leftover.exists() and cell.is_done()
