"""Planning without importing torch: the registries' names come from a cached index
(bench/matrix/names.py) that agrees with the registries and is rebuilt when they change."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.matrix import names as name_index
from tests.conftest import ROOT

PLAN_ALL = """
import sys
from pathlib import Path
from bench.matrix.schema import load_matrix
from bench.matrix.plan import expand
for path in sorted(Path("matrices").glob("*.yaml")):
    assert expand(load_matrix(path)), path
print("torch" in sys.modules, "timm" in sys.modules)
"""


def _python(code: str, cache: Path) -> str:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300, check=True).stdout.strip()


def test_planning_every_shipped_matrix_imports_neither_torch_nor_timm(tmp_path: Path) -> None:
    assert _python(PLAN_ALL, tmp_path) == "True True"  # the first plan builds the index: imports both
    assert list((tmp_path / "bench").glob("names-*.json"))
    assert _python(PLAN_ALL, tmp_path) == "False False"  # every later one reads it


def test_the_index_agrees_with_the_registries() -> None:
    from bench.data.datasets import dataset_names
    from bench.matrix.names import requirement
    from bench.matrix.requirements import REQUIREMENTS
    from bench.methods import METHODS
    from bench.models.architectures import architecture_exists

    data = name_index.build()
    assert set(data["methods"]) == set(METHODS.names()) and set(data["datasets"]) == set(dataset_names())
    for name in METHODS.names():
        assert requirement(name) == REQUIREMENTS[name], name
    assert requirement("no_such_method") is None
    for arch in ("menghani_mlp", "wide_mlp", "resnet50", "resnet50.a1_in1k", "tv_resnet50", "resnet9000", "timm/resnet50", ""):
        assert name_index.architecture_exists(arch) == architecture_exists(arch), arch


def test_a_changed_registering_module_changes_the_key(tmp_path: Path) -> None:
    target = ROOT / "bench" / "models" / "zoo.py"
    before = name_index._key()
    stat = target.stat()
    try:
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
        assert name_index._key() != before
    finally:
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert name_index._key() == before


def test_an_unwritable_cache_costs_only_the_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    name_index.index.cache_clear()
    try:
        assert name_index.method_exists("supervised") and not name_index.method_exists("magic")
    finally:
        name_index.index.cache_clear()
