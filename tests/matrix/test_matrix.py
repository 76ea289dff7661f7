"""Matrix loading, expansion into cells, stable ids, and one-line errors for bad input."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from bench.errors import ConfigError
from bench.matrix.schema import load_matrix
from bench.matrix.plan import expand, parse_sets
from tests.conftest import ROOT, write_matrix

KHOSE_LIKE = {
    "name": "k",
    "defaults": {"dataset": "digits", "protocol": "resplit_4_1_1", "lr": 0.01, "epochs": 2},
    "axes": {"label_fraction": [0.1, 0.5], "seed": [0, 1]},
    "stages": {
        "teacher": {"method": "supervised", "axes": {"arch": ["resnet18", "menghani_cnn", "menghani_mlp"]}},
        "student": {
            "method": "kd",
            "needs": {"teacher": "teacher"},
            "axes": {"arch": ["resnet18", "menghani_cnn", "menghani_mlp"]},
            "include": [
                {"teacher.arch": "resnet18", "arch": ["resnet18", "menghani_cnn", "menghani_mlp"]},
                {"teacher.arch": "menghani_cnn", "arch": ["menghani_cnn", "menghani_mlp"]},
                {"teacher.arch": "menghani_mlp", "arch": "menghani_mlp"},
            ],
        },
    },
    "overrides": [{"when": {"arch": "menghani_mlp"}, "set": {"lr": 0.001}}],
}


def plan(tmp_path: Path, matrix: dict, sets: list[str] | None = None):
    return expand(load_matrix(write_matrix(tmp_path, matrix)), parse_sets(sets or []))


def test_expansion_counts_pairs_and_shared_teachers(tmp_path: Path) -> None:
    cells = plan(tmp_path, KHOSE_LIKE)
    teachers = [c for c in cells if c.stage == "teacher"]
    students = [c for c in cells if c.stage == "student"]
    assert len(teachers) == 3 * 2 * 2
    assert len(students) == (3 + 2 + 1) * 2 * 2
    teacher_ids = {t.id for t in teachers}
    assert {s.config.deps["teacher"] for s in students} == teacher_ids  # every teacher serves students, none duplicated
    for s in students:
        teacher = next(t for t in teachers if t.id == s.config.deps["teacher"])
        assert (s.config.label_fraction, s.config.seed) == (teacher.config.label_fraction, teacher.config.seed)
    assert all(cells.index(next(t for t in teachers if t.id == s.config.deps["teacher"])) < cells.index(s) for s in students)


def test_overrides_apply_per_axis_value(tmp_path: Path) -> None:
    cells = plan(tmp_path, KHOSE_LIKE)
    assert {c.config.lr for c in cells if c.config.arch == "menghani_mlp"} == {0.001}
    assert {c.config.lr for c in cells if c.config.arch != "menghani_mlp"} == {0.01}


def test_cell_ids_do_not_depend_on_key_or_axis_order(tmp_path: Path) -> None:
    shuffled = copy.deepcopy(KHOSE_LIKE)
    shuffled["axes"] = {"seed": [1, 0], "label_fraction": [0.5, 0.1]}
    shuffled["defaults"] = dict(reversed(list(shuffled["defaults"].items())))
    shuffled["stages"]["teacher"]["axes"]["arch"].reverse()
    a = {c.id for c in plan(tmp_path, KHOSE_LIKE)}
    b = {c.id for c in plan(tmp_path / "..", shuffled)}
    assert a == b and len(a) == 12 + 24


def test_cell_id_changes_with_config_and_propagates_to_students(tmp_path: Path) -> None:
    base = plan(tmp_path, KHOSE_LIKE)
    changed = plan(tmp_path, KHOSE_LIKE, ["teacher.epochs=3"])
    assert {c.id for c in base if c.stage == "teacher"}.isdisjoint({c.id for c in changed if c.stage == "teacher"})
    assert {c.id for c in base if c.stage == "student"}.isdisjoint({c.id for c in changed if c.stage == "student"})
    assert all(c.config.epochs == 2 for c in changed if c.stage == "student")


def test_set_overrides_every_cell(tmp_path: Path) -> None:
    assert {c.config.epochs for c in plan(tmp_path, KHOSE_LIKE, ["epochs=1"])} == {1}


def test_shipped_matrices_plan(tmp_path: Path) -> None:
    for path in sorted((ROOT / "matrices").glob("*.yaml")):
        cells = expand(load_matrix(path))
        assert cells, path
        assert len({c.id for c in cells}) == len(cells)


def test_khose2021_matrix_has_the_papers_grid() -> None:
    cells = expand(load_matrix(ROOT / "matrices" / "khose2021.yaml"))
    teachers = [c for c in cells if c.stage == "teacher"]
    students = [c for c in cells if c.stage == "student"]
    assert {c.config.arch for c in teachers} == {"efficientnet_b5", "resnet18", "mobilenetv3_large_100"}
    assert {c.config.label_fraction for c in teachers} == {0.1, 0.25, 0.5, 1.0}
    pairs = {(c.lookup("teacher.arch"), c.config.arch) for c in students}
    assert pairs == {("efficientnet_b5", "efficientnet_b5"), ("resnet18", "resnet18"),
                     ("mobilenetv3_large_100", "mobilenetv3_large_100"), ("efficientnet_b5", "resnet18"),
                     ("efficientnet_b5", "mobilenetv3_large_100"), ("resnet18", "mobilenetv3_large_100")}
    assert {c.config.lr for c in cells if c.config.arch == "mobilenetv3_large_100"} == {0.001}
    assert {c.config.lr for c in cells if c.config.arch != "mobilenetv3_large_100"} == {0.01}
    assert all(c.config.pretrained and c.config.epochs == 30 and c.config.momentum == 0.9 and c.config.weight_decay == 5e-4 for c in cells)


def test_menghani2019_matrix_grid() -> None:
    cells = expand(load_matrix(ROOT / "matrices" / "menghani2019.yaml"))
    pairs = {(c.config.dataset, c.config.unlabeled) for c in cells if c.stage == "student"}
    assert pairs == {("mnist", "fashion_mnist"), ("cifar10", "cifar100"), ("caltech256", "openimages"), ("imagenet", "openimages")}
    assert {c.config.n_per_class for c in cells if c.stage == "finetune"} == {10, 20, 60, "all"}


BAD = [
    ("text", "name: [unclosed", "line"),
    ("not a mapping", "- a\n- b\n", "mapping"),
    ("unknown top key", {"name": "x", "stages": {"t": {"method": "supervised"}}, "colour": 1}, "colour: unknown field"),
    ("wrong type", {"name": "x", "stages": {"t": {"method": "supervised", "axes": {"seed": 3}}}}, "stages.t.axes.seed"),
    ("unknown field", {"name": "x", "defaults": {"epochz": 3}, "stages": {"t": {"method": "supervised"}}}, "defaults.epochz: unknown field"),
    ("unknown arch", {"name": "x", "defaults": {"dataset": "digits"}, "stages": {"t": {"method": "supervised", "axes": {"arch": ["resnet9000"]}}}}, "stages.t.axes.arch[0]: unknown arch"),
    ("unknown method", {"name": "x", "stages": {"t": {"method": "magic"}}}, "stages.t.method: unknown method"),
    ("unknown dataset", {"name": "x", "defaults": {"dataset": "mnist2"}, "stages": {"t": {"method": "supervised"}}}, "defaults.dataset: unknown dataset"),
    ("fraction > 1", {"name": "x", "axes": {"label_fraction": [0.5, 1.5]}, "stages": {"t": {"method": "supervised"}}}, "axes.label_fraction[1]"),
    ("fraction 0", {"name": "x", "defaults": {"label_fraction": 0}, "stages": {"t": {"method": "supervised"}}}, "defaults.label_fraction"),
    ("missing stage", {"name": "x", "stages": {"s": {"method": "kd", "needs": {"teacher": "teachr"}}}}, "stages.s.needs.teacher: no stage 'teachr'"),
    ("cycle", {"name": "x", "stages": {"a": {"method": "kd", "needs": {"t": "b"}}, "b": {"method": "kd", "needs": {"t": "a"}}}}, "dependency cycle"),
    ("bad rule role", {"name": "x", "stages": {"t": {"method": "supervised", "include": [{"teacher.arch": "x"}]}}}, "stages.t.include[0].teacher.arch"),
    ("empty any-of", {"name": "x", "stages": {"t": {"method": "supervised", "exclude": [{"augment": []}]}}},
     "stages.t.exclude[0].augment: an empty list accepts nothing (write [[]]"),
    ("rule value a mapping", {"name": "x", "overrides": [{"when": {"arch": {"a": 1}}, "set": {"lr": 0.1}}],
        "stages": {"t": {"method": "supervised"}}}, "overrides[0].when.arch: {'a': 1} is not a text"),
    ("missing required", {"name": "x", "stages": {"t": {"method": "supervised"}}}, "stages.t"),
    ("kd without teacher role", {"name": "x", "defaults": {"dataset": "digits", "arch": "menghani_mlp"}, "stages": {
        "t": {"method": "supervised"}, "s": {"method": "kd", "needs": {"teach": "t"}}}}, "stages.s.needs: method 'kd' needs a 'teacher' role"),
    ("blind without unlabeled", {"name": "x", "defaults": {"dataset": "digits", "arch": "menghani_mlp"}, "stages": {
        "t": {"method": "supervised"}, "s": {"method": "blind", "needs": {"teacher": "t"}}}}, "stages.s: method 'blind' needs the field 'unlabeled'"),
    ("best_val without val", {"name": "x", "defaults": {"dataset": "digits", "arch": "menghani_mlp", "metric": "best_val"},
        "stages": {"t": {"method": "supervised"}}}, "stages.t: metric 'best_val' needs a validation split"),
    ("student with its own split seed", {"name": "x", "defaults": {"dataset": "digits", "arch": "menghani_mlp"}, "stages": {
        "t": {"method": "supervised"}, "s": {"method": "kd", "needs": {"teacher": "t"}, "axes": {"seed": [1]}}}}, "stages.s: split seed 1 differs from its teacher's 0"),
    ("stage with no cells", {"name": "x", "defaults": {"dataset": "digits"}, "stages": {
        "t": {"method": "supervised", "axes": {"arch": ["menghani_mlp"]}},
        "s": {"method": "kd", "needs": {"teacher": "t"}, "axes": {"arch": ["menghani_mlp"]}, "include": [{"teacher.arch": "menghani_cnn"}]}}},
     "stages.s: expands to no cells"),
]


@pytest.mark.parametrize("label,content,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_matrices_name_file_and_field(tmp_path: Path, label: str, content, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    if isinstance(content, str):
        path.write_text(content)
    else:
        write_matrix(tmp_path, content, "bad.yaml")
    with pytest.raises(ConfigError) as error:
        expand(load_matrix(path))
    message = str(error.value)
    assert message.startswith(str(path)), message
    assert expected in message, message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such matrix file"):
        load_matrix(tmp_path / "nope.yaml")


def test_bad_set_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--set: epochs: 'x'"):
        plan(tmp_path, KHOSE_LIKE, ["epochs=x"])
    with pytest.raises(ConfigError, match="no stage 'studnt'"):
        plan(tmp_path, KHOSE_LIKE, ["studnt.epochs=1"])


def test_overrides_see_command_line_sets(tmp_path: Path) -> None:
    cells = plan(tmp_path, KHOSE_LIKE, ["teacher.arch=menghani_mlp"])
    assert {c.config.lr for c in cells if c.stage == "teacher"} == {0.001}


def test_an_explicit_role_must_be_the_cell_the_other_parent_sees() -> None:
    """finetune needs student and teacher: its teacher must be its student's own teacher."""
    from bench.matrix.schema import Matrix

    matrix = Matrix.model_validate({
        "name": "d", "defaults": {"dataset": "digits"},
        "stages": {
            "teacher": {"method": "supervised", "axes": {"arch": ["menghani_cnn", "menghani_mlp"]}},
            "student": {"method": "blind", "needs": {"teacher": "teacher"}, "set": {"unlabeled": "fashion_mnist"},
                        "axes": {"arch": ["menghani_cnn", "menghani_mlp"]}},
            "finetune": {"method": "finetune", "needs": {"student": "student", "teacher": "teacher"}, "set": {"n_per_class": 5}},
        }})
    cells = expand(matrix)
    students = {c.id: c for c in cells if c.stage == "student"}
    finetunes = [c for c in cells if c.stage == "finetune"]
    assert len(finetunes) == 4
    for f in finetunes:
        assert f.config.deps["teacher"] == students[f.config.deps["student"]].config.deps["teacher"]
