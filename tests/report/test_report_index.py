"""The index page of a results folder with several matrices (``bench.report.index``)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest


def write_two_reports(root: Path) -> list[str]:
    """Two real reports under ``root``: the nguyen2021 analog fixture and a copy of it under another name."""
    from bench.report.build import build_report
    from tests.report.test_report_nguyen import NAME, _target, results_table

    table = results_table()
    build_report(table, _target(root), root / NAME)
    other = dataclasses.replace(_target(root), matrix="second")
    build_report(table.assign(matrix="second"), other, root / "second")
    return [NAME, "second"]


def test_the_index_has_one_row_per_matrix_with_its_summary_and_link(tmp_path: Path) -> None:
    from bench.report.index import write_index

    names = write_two_reports(tmp_path)
    md_path, html_path = write_index(tmp_path, [*names, "never-ran"])
    md = md_path.read_text()
    summary = json.loads((tmp_path / names[0] / "summary.json").read_text())
    assert summary["summary"].startswith("comparable: ")
    for name in names:
        row = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
        assert summary["summary"] in row and f"[{name}/report.html]({name}/report.html)" in row
        assert "nguyen2021" in row
    assert "never-ran" not in md and "2 matrices" in md
    page = html_path.read_text()
    assert f'<a href="{names[1]}/report.html">' in page


@pytest.mark.browser
def test_the_index_page_renders_and_its_links_reach_the_reports(tmp_path: Path) -> None:
    import html
    import re

    from bench.report.index import write_index
    from tests.report.test_report_browser import CHROMIUM, _run

    if CHROMIUM is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium); CI installs it")
    names = write_two_reports(tmp_path)
    _, page = write_index(tmp_path, names)
    probe = ("<script>window.addEventListener('load', () => {document.body.setAttribute('data-probe', JSON.stringify("
             "{rows: document.querySelectorAll('tbody tr').length, links: [...document.links].map(a => a.href)}))});"
             "</script>")
    probed = page.with_name("probed.html")
    probed.write_text(page.read_text().replace("</body>", probe + "</body>"))
    match = re.search(r"data-probe=\"([^\"]*)\"", _run("--dump-dom", probed.as_uri()).stdout)
    assert match
    found = json.loads(html.unescape(match.group(1)))
    assert found["rows"] == 2 and len(found["links"]) == 2
    for link in found["links"]:  # each link resolves to a report the browser renders with its title
        target = Path(link.removeprefix("file://"))
        assert target.is_file()
        assert "<h1>Report: " in _run("--dump-dom", link).stdout
