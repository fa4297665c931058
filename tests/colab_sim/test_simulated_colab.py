"""Notebook 00 on a simulated Colab: its first cell installs this checkout beside Colab's packages, then the whole
notebook runs (its control panel on Colab's ipywidgets 7.7.1).

Needs PyPI (Colab's versions, then what the set-up cell installs). The first run builds ``.colab-sim/base`` (about
five minutes here); later runs reuse it. Set ``WORKBOOK_COLAB_TESTS=0`` to skip on a machine without network.
"""

from __future__ import annotations

import os

import pytest

from .simulated import ROOT, installed, run, site_packages

pytestmark = pytest.mark.skipif(
    os.environ.get("WORKBOOK_COLAB_TESTS") == "0", reason="WORKBOOK_COLAB_TESTS=0"
)


def _text(cell) -> str:
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)


def test_notebook_00_runs_on_simulated_colab(tmp_path):
    import tomllib
    from packaging.requirements import Requirement

    nb, venv = run(ROOT / "notebooks" / "00_start_here.ipynb", tmp_path, again=True)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first, again = _text(code[0]), _text(code[-1])
    assert first.startswith("Colab set-up: installed ") and "Restart" not in first, first
    assert "bitsandbytes" in first and "single-gpu-inference-workbook" in first, first
    assert f"kept Colab's torch {installed(venv, 'torch')} and ipywidgets 7.7.1" in first, first
    assert "installed nothing new" in again, "run a second time, the set-up installs nothing"
    own = {p.name.split("-")[0].lower() for p in site_packages(venv).glob("*.dist-info")}
    assert not own & {"torch", "ipywidgets"}, "Colab's torch and ipywidgets are never replaced"
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(dep)
        if req.name in ("transformers", "peft", "bitsandbytes", "accelerate", "plotly"):
            assert req.specifier.contains(installed(venv, req.name)), (req, installed(venv, req.name))
    report = "\n".join(_text(c) for c in code)
    assert "version.ipywidgets" in report and "7.7.1" in report, "the panels ran on Colab's widgets"
