"""The demo matrix end to end on reduced epochs: every cell done, and the table makes sense."""
from __future__ import annotations

from pathlib import Path

from bench.cli import main
from bench.results.collect import collect
from tests.conftest import ROOT


def test_demo_matrix_on_reduced_epochs(tmp_path: Path, capsys) -> None:
    code = main(["run", str(ROOT / "matrices" / "demo.yaml"), "--results", str(tmp_path),
                 "--set", "teacher.epochs=3", "--set", "student.epochs=2", "--set", "finetune.epochs=2",
                 "--set", "student.unlabeled_limit=3000", "--set", "seed=0"])  # one of the demo's three seeds
    assert code == 0
    # the run ends on its product: the report's summary line, where report.html is, how to open MLflow
    out = capsys.readouterr().out.splitlines()
    name = out[-3].partition(": comparable: ")[0]  # demo@<hash of the --set values>
    assert name.startswith("demo@") and "; on other data: " in out[-3] and "; claims: " in out[-3]
    assert out[-2] == f"report: {tmp_path / 'report' / name / 'report.html'}"
    assert (tmp_path / "report" / name / "report.html").is_file()
    assert out[-1].startswith(f"MLflow: bench collect {tmp_path} && mlflow ui --backend-store-uri sqlite:///")
    table = collect(tmp_path)
    assert len(table) == 14
    assert table.groupby("stage").size().to_dict() == {"teacher": 2, "student": 4, "finetune": 8}
    teachers = table[table.stage == "teacher"]
    assert (teachers.test_acc > 0.8).all()
    blind = table[table.stage == "student"]
    assert blind.train_acc.isna().all()  # trained on Fashion-MNIST only: no labeled train accuracy
    assert (blind.test_acc > 0.15).all() and blind.test_acc.mean() > 0.25  # above chance (0.1) on digits it never saw
    full = table[(table.stage == "finetune") & (table.n_per_class == "all")]
    assert len(full) == 4 and (full.test_acc > 0.6).all() and full.test_acc.mean() > blind.test_acc.mean()
    assert (table.params > 0).all() and (table.train_images_per_s > 0).all() and (table.flops > 0).all()
