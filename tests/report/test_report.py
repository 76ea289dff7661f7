"""bench report: the numbers in the report CSVs, the files written, and the stand-in data note."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.report.paper_figures import load_paper
from bench.report.build import build_report
from bench.report.targets import Target
from bench.report.khose_figures import plot_khose

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "tiny.yaml"
MNET = "mobilenetv3_large_100"


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-report") / "results"
    assert main(["run", str(TINY), "--results", str(root)]) == 0
    return root


def _khose_row(matrix: str, seed: int, stage: str, val: float, train: float, arch: str = MNET,
               teacher_arch: str | None = None, lf: float = 0.1) -> dict:
    row = {"matrix": matrix, "id": f"{stage}-{arch}-{teacher_arch}-{lf}-{seed}", "stage": stage, "arch": arch,
           "dataset": "cifar10", "seed": seed, "val_acc": val, "train_acc": train, "test_acc": val,
           "train_images_per_s": 100.0 + seed, "infer_images_per_s": 1000.0, "params": 4_000_000, "flops": 2e8,
           "peak_memory_mb": 500.0, "peak_memory_kind": "process_rss", "wall_seconds": 10.0, "device": "cpu",
           "device_name": "cpu"}
    if stage == "teacher":
        row.update(method="supervised", label_fraction=lf)
    else:
        row.update(method="kd", label_fraction=1.0, **{"teacher.arch": teacher_arch or arch, "teacher.label_fraction": lf})
    return row


def khose_table(matrix: str = "khose2021") -> pd.DataFrame:
    """MobileNet self-distillation at 10% labels with two seeds, whose relative val gains are known:
    seed 0: 0.40 -> 0.50 (+25 %), seed 1: 0.50 -> 0.55 (+10 %): mean 17.5 %, std 10.6066 %, n 2."""
    rows = [
        _khose_row(matrix, 0, "teacher", 0.40, 0.90), _khose_row(matrix, 0, "student", 0.50, 0.60),
        _khose_row(matrix, 1, "teacher", 0.50, 0.95), _khose_row(matrix, 1, "student", 0.55, 0.65),
        # Knowledge distillation EfficientNet -> MobileNet at 10 % labels (one seed): 0.60 -> 0.63 = +5 %.
        _khose_row(matrix, 0, "teacher", 0.60, 0.99, arch="efficientnet_b5"),
        _khose_row(matrix, 0, "student", 0.63, 0.70, arch=MNET, teacher_arch="efficientnet_b5"),
    ]
    return pd.DataFrame(rows)


def test_relative_gain_in_report_csv(tmp_path: Path) -> None:
    out = tmp_path / "khose2021"
    written = build_report(khose_table(), Target("khose2021", tmp_path, paper="khose2021"), out)
    assert out / "report.md" in written and out / "report.html" in written
    frame = pd.read_csv(out / "self-distillation-sec-4-1.csv").set_index("id")
    gain = frame.loc["khose2021/sec4.1/mnet->mnet/10/val_gain"]
    assert gain["unit"] == "% rel."
    assert gain["reported"] == pytest.approx(9.37)
    assert gain["reproduced"] == pytest.approx(17.5)
    assert gain["std"] == pytest.approx(math.sqrt(2 * 7.5**2), abs=1e-4)
    assert gain["n"] == 2
    assert gain["delta"] == pytest.approx(17.5 - 9.37)
    assert gain["reproduced_text"] == "17.50 ± 10.61 (n=2)"
    assert gain["data"] == "as paper"  # the paper's own matrix: no data note
    assert gain["train_images_per_s"] == pytest.approx(100.5)  # throughput of the distilled students
    # A value figure: the teacher's val accuracy, mean of 0.40 and 0.50.
    teacher = frame.loc["khose2021/sec4.1/mnet->mnet/10/teacher/val_acc"]
    assert (teacher["reproduced"], teacher["n"], teacher["delta"]) == (pytest.approx(45.0), 1 * 2, pytest.approx(45.0 - 46.38))
    kd = pd.read_csv(out / "knowledge-distillation-sec-4-2.csv").set_index("id").loc["khose2021/sec4.2/enet->mnet/10/val_gain"]
    assert (kd["reproduced"], kd["n"]) == (pytest.approx(5.0), 1)
    # No cells for 50 % labels: reproduced is empty, n = 0.
    missing = frame.loc["khose2021/sec4.1/mnet->mnet/50/val_gain"]
    assert missing["n"] == 0 and pd.isna(missing["reproduced"]) and pd.isna(missing["delta"])
    # khose Figures 1-3 are drawn from the khose-style cells.
    for name in ("khose-fig1-self-distillation.png", "khose-fig2-self-distillation-gain.png", "khose-fig3-distillation.png"):
        assert (out / name).stat().st_size > 5000
        assert f"]({name})" in (out / "report.md").read_text()


def test_khose_plots_skip_with_a_note_without_khose_cells(tmp_path: Path) -> None:
    figures = load_paper("khose2021").figures
    tiny_like = pd.DataFrame([{"matrix": "m", "id": "x", "stage": "teacher", "method": "supervised", "arch": "a",
                               "label_fraction": 1.0, "test_acc": 0.9}])
    for table in (tiny_like, pd.DataFrame()):
        written, notes = plot_khose(table, figures, tmp_path, "m")
        assert written == [] and len(notes) == 1 and "skipped" in notes[0]
    assert not list(tmp_path.glob("*.png"))


def test_report_files_for_tiny_results(tiny_results: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(TINY), "--results", str(tiny_results)]) == 0
    printed = capsys.readouterr().out.split()
    folder = tiny_results / "report" / "tiny"
    for name in ("report.md", "report.html", "table-1.csv", "table-1.png", "cells.csv"):
        assert (folder / name).is_file() and str(folder / name) in printed, name
    cells = pd.read_csv(folder / "cells.csv")
    assert len(cells) == 4 and {"train_images_per_s", "infer_images_per_s", "params", "flops", "peak_memory_mb"} <= set(cells)
    table = pd.read_csv(folder / "table-1.csv").set_index("id")
    teacher = table.loc["menghani2019/table1/mlp->mlp/teacher"]
    assert teacher["n"] == 1 and teacher["params"] > 0 and teacher["train_images_per_s"] > 0
    assert teacher["delta"] == pytest.approx(teacher["reproduced"] - 97.69)
    assert cells.set_index("id").loc[teacher["cells"], "test_acc"] * 100 == pytest.approx(teacher["reproduced"])
    assert table.loc["menghani2019/table1/cnn->cnn/teacher", "n"] == 0  # tiny has no CNN
    page = (folder / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page
    assert "](table-1.png)" in (folder / "report.md").read_text()  # relative link


def test_stand_in_matrix_says_data_differ(tiny_results: Path) -> None:
    # tiny names `paper: menghani2019` but is not the paper's matrix: digits stands in for MNIST.
    assert main(["report", str(tiny_results), "--out", str(tiny_results / "by-folder")]) == 0
    folder = tiny_results / "by-folder" / "tiny"
    md = (folder / "report.md").read_text()
    assert "Stand-in matrix" in md
    note = "data differs from the paper: paper MNIST←Fashion-MNIST, here digits←fashion_mnist"
    assert note in md
    table = pd.read_csv(folder / "table-1.csv").set_index("id")
    assert table.loc["menghani2019/table1/mlp->mlp/blind", "data"] == note
    assert table.loc["menghani2019/table1/mlp->mlp/teacher", "data"] == "data differs from the paper: paper MNIST, here digits"
    assert not (folder / "table-2.csv").exists()  # Table 2 (CIFAR) has no cell in tiny: left out, and said so
    assert "left out: Table 2, Table 3, Table 4" in md


def test_own_matrix_is_not_a_stand_in(tmp_path: Path) -> None:
    written = build_report(khose_table(), Target("khose2021", tmp_path, paper="khose2021"), tmp_path / "k")
    md = (tmp_path / "k" / "report.md").read_text()
    assert "Stand-in" not in md and "data differs" not in md
    # The same cells under another matrix name are a stand-in, and cifar10 = cifar10 is said to be the same data.
    build_report(khose_table("other"), Target("other", tmp_path, paper="khose2021"), tmp_path / "o")
    frame = pd.read_csv(tmp_path / "o" / "self-distillation-sec-4-1.csv").set_index("id")
    assert frame.loc["khose2021/sec4.1/mnet->mnet/10/val_gain", "reproduced"] == pytest.approx(17.5)
    assert frame.loc["khose2021/sec4.1/mnet->mnet/10/val_gain", "data"] == "same data as paper (stand-in matrix)"
    assert written


def test_a_set_variant_of_a_papers_own_matrix_is_not_a_stand_in() -> None:
    """menghani2019@<hash> (a run with --set) keeps the dataset in its selectors: Tables 3 and 4
    must not average the Caltech-256 and ImageNet teachers together."""
    import pandas as pd

    from bench.report.paper_figures import load_paper
    from bench.report.figures import figure_rows

    paper = load_paper("menghani2019")
    for name in ("menghani2019", "menghani2019@1a2b3c4d"):
        table = pd.DataFrame([
            {"matrix": name, "id": "c", "stage": "teacher", "method": "supervised", "arch": "mobilenetv2_100",
             "dataset": "caltech256", "unlabeled": "", "label_fraction": 1.0, "seed": 0, "test_acc": 0.70},
            {"matrix": name, "id": "i", "stage": "teacher", "method": "supervised", "arch": "mobilenetv2_100",
             "dataset": "imagenet", "unlabeled": "", "label_fraction": 1.0, "seed": 0, "test_acc": 0.40},
        ])
        rows = {r.figure.id: r for r in figure_rows(table, name, paper)}
        assert rows["menghani2019/table3/teacher"].result["mean"] == 0.70
        assert not rows["menghani2019/table3/teacher"].stand_in
