"""Stored figures readable without running: a PNG beside every plotly output (tools/static_figures.py)."""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import static_figures as sf  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
needs_chromium = pytest.mark.skipif(
    os.environ.get("WORKBOOK_BROWSER_TESTS") == "0",
    reason="WORKBOOK_BROWSER_TESTS=0: no system Chromium to render with",
)


def _png_size(b64: str) -> tuple[int, int]:
    data = base64.b64decode(b64)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_stored_plotly_figure_has_its_png(path):
    """What a viewer without JavaScript shows: every stored plotly output carries the tool's PNG (its size says it
    is the tool's, not a screenshot JupyterLab saved). Holds once `python tools/static_figures.py` has run over the
    stored notebooks; tools/run_notebooks.py runs it after every execution."""
    nb = nbformat.read(path, as_version=4)
    outputs = sf.plotly_outputs(nb)
    lacking = sf.missing(nb)
    assert not lacking, (
        f"{len(lacking)} of {len(outputs)} plotly outputs in {path.name} have no PNG. "
        f"Fix: python tools/static_figures.py {path.name[:2]}"
    )
    for o in outputs:
        assert _png_size(o["data"][sf.PNG]) == sf.size(o["data"][sf.PLOTLY]), (
            f"{path.name}: a PNG not drawn by the tool. Fix: python tools/static_figures.py {path.name[:2]}"
        )


def _figure(title: str, height: int | None = None) -> dict:
    layout = {"title": {"text": title}, "template": {"layout": {"paper_bgcolor": "white"}}}
    if height:
        layout["height"] = height
    return {
        "data": [
            {"type": "scatter", "x": [1, 2, 3], "y": [3, 1, 2], "name": "a"},
            {"type": "bar", "x": [1, 2, 3], "y": [1, 2, 3], "name": "b"},
        ],
        "layout": layout,
        "config": {"displaylogo": False},
    }


def _synthetic() -> nbformat.NotebookNode:
    """A notebook with every kind of output the workbook stores: a live plot (plotly JSON + HTML), a plain figure
    (plotly JSON only), text, a matplotlib-style PNG, and a control panel whose saved widget state holds a figure."""
    v4 = nbformat.v4
    nb = v4.new_notebook()
    live = v4.new_output(
        "display_data",
        data={sf.PLOTLY: _figure("live", height=300), "text/html": "<div>plotly from a CDN</div>"},
    )
    plain = v4.new_output("display_data", data={sf.PLOTLY: _figure("plain")}, metadata={"note": "kept"})
    nb.cells = [
        v4.new_markdown_cell("# A chapter"),
        v4.new_code_cell(
            "live = plots.LivePlot(...).show()",
            execution_count=1,
            outputs=[v4.new_output("stream", name="stdout", text="measuring\n"), live],
        ),
        v4.new_code_cell("charts.bars(...)", execution_count=2, outputs=[plain]),
        v4.new_code_cell(
            "x",
            execution_count=3,
            outputs=[
                v4.new_output("execute_result", data={"text/plain": "42"}, execution_count=3),
                v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}),
            ],
        ),
    ]
    panel_output = {
        "output_type": "display_data",
        "metadata": {},
        "data": {sf.PLOTLY: _figure("your runs"), "text/html": "<div>panel</div>"},
    }
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "version_major": 2,
            "version_minor": 0,
            "state": {
                "abc": {
                    "model_name": "OutputModel",
                    "model_module": "@jupyter-widgets/output",
                    "model_module_version": "1.0.0",
                    "state": {"outputs": [panel_output]},
                }
            },
        }
    }
    return nb


def test_finds_figures_in_cell_outputs_and_saved_widget_state():
    nb = _synthetic()
    found = sf.plotly_outputs(nb)
    assert [o["data"][sf.PLOTLY]["layout"]["title"]["text"] for o in found] == ["live", "plain", "your runs"]
    assert len(sf.missing(nb)) == 3
    assert sf.size(found[0]["data"][sf.PLOTLY]) == (sf.WIDTH * sf.SCALE, 300 * sf.SCALE)
    assert sf.size(found[1]["data"][sf.PLOTLY]) == (sf.WIDTH * sf.SCALE, sf.HEIGHT * sf.SCALE)


@needs_chromium
def test_tool_adds_pngs_once_and_changes_nothing_else(tmp_path):
    from PIL import Image

    path = tmp_path / "synthetic.ipynb"
    nbformat.write(_synthetic(), path)
    before = path.read_text()
    assert sf.main([str(path), "--check"]) == 1
    assert sf.main([str(path), "--keep-html"]) == 0
    after = path.read_text()
    assert sf.main([str(path), "--check"]) == 0

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    outputs = sf.plotly_outputs(nb)
    assert len(outputs) == 3 and not sf.missing(nb)
    for o in outputs:
        image = Image.open(io.BytesIO(base64.b64decode(o["data"][sf.PNG])))
        assert image.format == "PNG" and image.size == sf.size(o["data"][sf.PLOTLY])
        assert len(image.getcolors(sf.COLOURS) or []) > 2, "a drawn figure, not a blank page"
    # everything but the added PNGs is as it was, the HTML of the live plot included
    stripped = json.loads(after)
    for o in sf.plotly_outputs(stripped):
        del o["data"][sf.PNG]
    assert stripped == json.loads(before)
    assert nb.cells[3].outputs[1].data["image/png"] == "iVBORw0KGgo="
    # only added lines (and the comma a JSON object needs before a new last key)
    removed = set(before.splitlines()) - set(after.splitlines())
    added = [line for line in set(after.splitlines()) - set(before.splitlines()) if '"image/png"' not in line]
    assert {line.rstrip(",") for line in added} == {line.rstrip(",") for line in removed}
    assert all(line.strip() == "}," for line in added)

    # idempotent: a second run replaces each PNG with the same bytes
    assert sf.main([str(path), "--keep-html"]) == 0
    assert path.read_text() == after

    # the default run also removes the plotly outputs' HTML, and nothing else
    assert sf.main([str(path)]) == 0
    dropped = json.loads(path.read_text())
    assert all("text/html" not in o["data"] for o in sf.plotly_outputs(dropped))
    for o in sf.plotly_outputs(stripped):
        o["data"].pop("text/html", None)
    for o in sf.plotly_outputs(dropped):
        del o["data"][sf.PNG]
    assert dropped == stripped


@needs_chromium
def test_drop_html_leaves_the_png_for_viewers_that_prefer_html():
    nb = _synthetic()
    original = copy.deepcopy(nb)
    assert sf.add_pngs(nb, drop_html=True) == 3
    assert all("text/html" not in o["data"] and sf.PNG in o["data"] for o in sf.plotly_outputs(nb))
    assert nb.cells[1].outputs[0] == original.cells[1].outputs[0]  # the stream output


def test_no_browser_says_what_to_install(monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", "/nonexistent/chromium")
    with pytest.raises(sf.WorkbookError, match="apt-get install chromium"):
        sf.browser_path()
