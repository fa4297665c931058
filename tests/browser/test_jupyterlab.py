"""The notebooks in a real JupyterLab in headless Chromium: those with a control panel run in full and the panel
clicked, every other one opened with its stored outputs drawn and its kernel started. nbval executes every notebook
(the same kernel, without the front end), so running the other five here again would only double CI's time (about
14 minutes on a 2-core machine).

Runs as part of ``./workbook test`` (CPU profile). Screenshots land in ``test-artifacts/screenshots/``.
Set ``WORKBOOK_BROWSER_TESTS=0`` to skip on a machine without Chromium (CI installs it).
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from .lab import ROOT, JupyterLab, LabPage, system_browser

pytestmark = pytest.mark.skipif(
    os.environ.get("WORKBOOK_BROWSER_TESTS") == "0", reason="WORKBOOK_BROWSER_TESTS=0"
)
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SHOTS = ROOT / "test-artifacts" / "screenshots"

# Per notebook: the panel's title, a good choice, a choice this CPU cannot run, and what its message must say.
PANELS = {
    "00_start_here.ipynb": ("forward pass", {"attention": "sdpa-math"}, {"attention": "fa2"}, "Fix:"),
    "01_flash_attention_2.ipynb": (
        "forward pass",
        {"attention": "eager", "dtype": "bf16"},
        {"attention": "fa2"},
        "Fix:",
    ),
    "03_fp4_nf4.ipynb": (
        "generate with quantized weights",
        {"weights": "fp4", "double_quant": "false"},
        {"weights": "int8", "double_quant": "true"},
        "double_quant",
    ),
}


OPENED_ONLY = [n for n in NOTEBOOKS if n not in PANELS]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with JupyterLab(tmp_path_factory.mktemp("lab")) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=system_browser(), args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    pg = context.new_page()
    yield pg
    context.close()


def _errors(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.execution_count is None:
            out.append(f"cell {i} never ran")
        out += [f"cell {i}: {o.ename}: {o.evalue}" for o in cell.outputs if o.output_type == "error"]
    return out


@pytest.mark.parametrize("notebook", OPENED_ONLY)
def test_notebook_opens_in_jupyterlab_with_its_outputs(lab, page, notebook):
    nb = LabPage(page, lab, notebook).open()
    cells = nbformat.read(ROOT / "notebooks" / notebook, as_version=4).cells
    assert len(nb.prompts()) == sum(c.cell_type == "code" for c in cells), "every code cell is drawn"
    stored = sum(bool(c.outputs) for c in cells if c.cell_type == "code")
    drawn = page.evaluate(
        "() => document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-OutputArea-output').length"
    )
    assert drawn >= stored, f"{notebook}: {drawn} outputs drawn for {stored} cells with stored outputs"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{notebook[:-6]}.png"))


@pytest.mark.parametrize("notebook", sorted(PANELS))
def test_notebook_runs_in_jupyterlab(lab, page, notebook):
    nb = LabPage(page, lab, notebook).open()
    state = nb.run_all()
    saved = nb.save()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{notebook[:-6]}.png"))
    errors = _errors(saved)
    assert state == "done" and not errors, f"{notebook}: {state}; " + "; ".join(errors[:5])
    _click_panel(nb, notebook, *PANELS[notebook])


def _click_panel(nb: LabPage, notebook, title, good, bad, message):
    panel = nb.panel(title)
    panel.scroll_into_view_if_needed()
    before = nb.plotted_points(panel)
    for control, label in good.items():
        nb.choose(panel, control, label)
    status = nb.press_run(panel)
    assert status.startswith("done"), f"{notebook}: {status}"
    after = nb.plotted_points(panel, more_than=before)
    assert after > before, (
        f"{notebook}: the plot did not gain the new point ({before} -> {after}); panel status "
        f"{status!r}; panel text: {panel.inner_text()[-600:]!r}"
    )
    for control, label in bad.items():
        nb.choose(panel, control, label)
    status = nb.press_run(panel)
    assert message in status, f"{notebook}: expected {message!r} in the panel, got {status!r}"
    nb.page.screenshot(path=str(SHOTS / f"{notebook[:-6]}-panel.png"))
    for control, label in good.items():  # the kernel survived: the next good choice runs
        nb.choose(panel, control, label)
    assert nb.press_run(panel).startswith("done")
    assert nb.plotted_points(panel, more_than=after) > after
