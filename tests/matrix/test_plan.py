"""Unit tests of the planner (``bench.matrix.plan``) on small matrices: selectors, the cell limit,
plan names, rehearsals. Expansion counts, overrides and id order-independence are in
``test_matrix.py``; nothing here trains."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.errors import BenchError
from bench.matrix.config import cell_id
from bench.matrix.plan import expand, parse_sets, plan_name, structural_key
from bench.matrix.schema import load_matrix
from bench.matrix.smoke import Smoke
from tests.conftest import write_matrix

MATRIX: dict[str, Any] = {
    "name": "p",
    "defaults": {"dataset": "digits", "epochs": 3, "batch_size": 64},
    "axes": {"seed": [0, 1]},
    "stages": {
        "teacher": {"method": "supervised", "axes": {"arch": ["menghani_cnn", "menghani_mlp"]}},
        "student": {"method": "kd", "needs": {"teacher": "teacher"}, "axes": {"arch": ["menghani_mlp", "wide_mlp"]},
                    "exclude": [{"teacher.arch": "menghani_mlp", "arch": "wide_mlp"}]},
    },
}


def plan(tmp_path: Path, matrix: dict[str, Any] = MATRIX, **options: Any) -> list[Any]:
    return expand(load_matrix(write_matrix(tmp_path, matrix)), **options)


def test_every_id_is_its_configs_hash_and_parents_come_first(tmp_path: Path) -> None:
    cells = plan(tmp_path)
    assert all(c.id == cell_id(c.config) for c in cells)
    assert len({c.id for c in cells}) == len(cells)
    position = {c.id: i for i, c in enumerate(cells)}
    assert all(position[dep] < position[c.id] for c in cells for dep in c.config.deps.values())


def test_exclude_drops_the_pairs_it_names(tmp_path: Path) -> None:
    students = [c for c in plan(tmp_path) if c.stage == "student"]
    pairs = {(c.parents["teacher"].config.arch, c.config.arch) for c in students}
    assert pairs == {("menghani_cnn", "menghani_mlp"), ("menghani_cnn", "wide_mlp"), ("menghani_mlp", "menghani_mlp")}
    assert len(students) == 3 * 2  # per seed


def test_a_plan_is_the_same_cells_every_time(tmp_path: Path) -> None:
    assert [c.id for c in plan(tmp_path)] == [c.id for c in plan(tmp_path)]


def test_the_cell_limit_refuses_before_expanding(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="max-cells"):
        plan(tmp_path, max_cells=5)
    assert len(plan(tmp_path, max_cells=10)) == 4 + 6


def test_a_set_changes_every_cell_and_the_plan_name(tmp_path: Path) -> None:
    cells = plan(tmp_path, sets=parse_sets(["epochs=1"]))
    assert {c.config.epochs for c in cells} == {1}
    assert not {c.id for c in cells} & {c.id for c in plan(tmp_path)}
    assert plan_name("p", None) == "p"
    assert plan_name("p", ["epochs=1"]) == plan_name("p", ["epochs=1"]) != plan_name("p", ["epochs=2"])
    assert plan_name("p", ["epochs=1"]).startswith("p@")


def test_a_rehearsal_is_its_own_cells_with_the_real_cells_structure(tmp_path: Path) -> None:
    real, rehearsed = plan(tmp_path), plan(tmp_path, smoke=Smoke(batches=2, batch_size=16))
    assert len(real) == len(rehearsed) and not {c.id for c in real} & {c.id for c in rehearsed}
    assert {(c.config.epochs, c.config.batch_size, c.config.smoke_batches) for c in rehearsed} == {(1, 16, 2)}
    assert [structural_key(c) for c in real] == [structural_key(c) for c in rehearsed]
    assert plan_name("p", None, Smoke()) == "p@smoke" and plan_name("p", None, Smoke(batches=5)).startswith("p@smoke-")


def test_two_real_cells_differing_only_in_a_shortened_field_share_a_key(tmp_path: Path) -> None:
    matrix = {**MATRIX, "axes": {"seed": [0], "batch_size": [32, 64]}}
    teachers = [c for c in plan(tmp_path, matrix) if c.stage == "teacher" and c.config.arch == "menghani_mlp"]
    assert len({c.id for c in teachers}) == 2 and len({structural_key(c) for c in teachers}) == 1


def test_a_student_can_teach_the_next_student(tmp_path: Path) -> None:
    # a teacher assistant: the grandchild names its parent "teacher", the role its parent sees its own teacher in
    matrix = {**MATRIX, "defaults": {**MATRIX["defaults"], "arch": "menghani_mlp"}, "axes": {}, "stages": {
        "teacher": {"method": "supervised"},
        "assistant": {"method": "kd", "needs": {"teacher": "teacher"}},
        "assistant_student": {"method": "kd", "needs": {"teacher": "assistant"}}}}
    cells = plan(tmp_path, matrix)
    assert [c.stage for c in cells] == ["teacher", "assistant", "assistant_student"]
    assert cells[2].config.deps == {"teacher": cells[1].id}
    assert cells[2].parents["teacher"] is cells[1]


def test_parents_that_see_different_cells_in_a_named_role_are_not_a_pair(tmp_path: Path) -> None:
    # the fine-tune's teacher must be the very teacher its student learnt from
    matrix = {**MATRIX, "stages": {
        "teacher": {"method": "supervised", "axes": {"arch": ["menghani_cnn", "menghani_mlp"]}},
        "student": {"method": "kd", "needs": {"teacher": "teacher"}},
        "both": {"method": "kd", "needs": {"teacher": "teacher", "student": "student"}}}}
    cells = plan(tmp_path, matrix)
    both = [c for c in cells if c.stage == "both"]
    assert len(both) == 4  # 2 seeds x 2 teachers, never a teacher beside another teacher's student
    for c in both:
        assert c.parents["student"].config.deps["teacher"] == c.config.deps["teacher"]
