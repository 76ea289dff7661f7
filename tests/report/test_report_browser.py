"""The HTML report in a real browser (Debian's chromium, headless): the page renders, every image
loads, the verdict table is coloured, and a screenshot is not blank. CI installs chromium and runs
these (-m browser)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000",
         "--run-all-compositor-stages-before-draw"]
# Added to a copy of the page only: what the browser made of it, written into the DOM it dumps.
PROBE = """<script>window.addEventListener('load', () => {
  const images = [...document.images];
  const bad = [...document.querySelectorAll('td.verdict.other')].map(td => getComputedStyle(td).backgroundColor);
  document.body.setAttribute('data-probe', JSON.stringify({
    images: images.length, loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    widest: Math.max(0, ...images.map(i => i.naturalWidth)), bad: bad[0] || '', tables: document.tables?.length
      ?? document.querySelectorAll('table').length}));
});</script>"""


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium); CI installs it")
    from bench.report.build import build_report
    from tests.report.test_report_nguyen import _target, results_table

    out = tmp_path_factory.mktemp("browser")
    build_report(results_table(), _target(out), out)
    return out / "report.html"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=120)


def test_the_page_renders_with_its_images_and_coloured_verdicts(page: Path) -> None:
    probed = page.with_name("probed.html")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = _run("--dump-dom", probed.as_uri()).stdout
    match = re.search(r"data-probe=\"([^\"]*)\"", dom)
    assert match, dom[-2000:]
    import html
    import json

    probe = json.loads(html.unescape(match.group(1)))
    assert probe["images"] >= 3 and probe["loaded"] == probe["images"], probe  # Tables 1, 2, 4: every PNG decodes
    assert probe["widest"] > 300
    assert probe["bad"] == "rgb(228, 233, 245)", probe  # an "other data" cell (a stand-in's absolute reading) is blue-grey
    assert probe["tables"] >= 4


def test_a_screenshot_is_not_blank(page: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "shot.png"
    _run(f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert pixels.shape[:2] == (2400, 1280)
    assert pixels.std() > 20  # text, tables and plots, not one flat colour
    other = (np.abs(pixels - [228, 233, 245]).sum(axis=2) < 12).mean()
    assert other > 0.001  # the verdict table's "other data" cells are on screen
