"""Set up the workbook on Google Colab, keeping what Colab's runtime brings.

Each notebook's first cell runs this file inside the notebook's kernel (``runpy.run_path(...)["main"]()``), after
cloning the repository or finding an uploaded copy. It installs what Colab lacks, or has older than the pins in
pyproject.toml, then the workbook itself (editable, so ``results/`` and the workbook's own text are found beside
the helpers). It never replaces two things:

- torch: Colab's build matches its GPU driver; another one would be a multi-gigabyte download that may not see
  the GPU. A torch outside the tested range is used all the same, and the set-up says so.
- ipywidgets: Colab's front end draws ipywidgets 7 (Colab ships 7.7.1); ipywidgets 8's controls do not display
  there, and enabling Colab's custom widget manager does not help. The control panels (helpers/widgets.py) use
  only what 7.7 and 8 share, so on Colab the pin is relaxed to ``COLAB_RANGE`` and Colab's copy is kept; with
  nothing imported before the install, no restart is needed.

Colab brings its own front end and kernel, so JupyterLab, ipykernel, nbclient, nbformat and the figure tools
(kaleido, Pillow) are left out. A runtime restart is asked for only when something this installs had already been
imported in the kernel (a cell run earlier, say): the message names it. Run again, it installs nothing.

    python tools/colab_setup.py --dry-run   # what would be installed here, installing nothing
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip carries a copy
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
KEEP = ("torch", "ipywidgets")  # Colab's own copies are never replaced (see above)
COLAB_RANGE = {"ipywidgets": ">=7.7,<9"}  # pins relaxed on Colab only
LEFT_OUT = ("jupyterlab", "ipykernel", "nbclient", "nbformat", "kaleido", "pillow")


def requirements(root: Path = ROOT) -> list[str]:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]


def installed(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def plan(have=installed, deps: list[str] | None = None) -> tuple[list[str], dict[str, str], list[str]]:
    """What to install, what to keep and why: ``(requirements, {kept name: version}, notes)``.

    ``have(name)`` gives the installed version of a distribution or ``None``.
    """
    install, keep, notes = [], {}, []
    for dep in requirements() if deps is None else deps:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        if name in LEFT_OUT:
            continue
        spec = SpecifierSet(COLAB_RANGE.get(name, str(req.specifier)))
        version = have(req.name)
        if name in KEEP and version is not None:
            keep[name] = version
            if not spec.contains(version, prereleases=True):
                notes.append(f"{name} {version} is outside the tested range {spec}; it is used all the same.")
        elif version is None or not spec.contains(version, prereleases=True):
            install.append(f"{req.name}{spec}")
    return install, keep, notes


def _pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
        raise RuntimeError(f"pip {' '.join(args[:2])} ... failed (its output is above).")


def _name(root: Path) -> str:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["name"]


def _workbook_installed(root: Path) -> bool:
    """Installed from ``root`` already (editable)."""
    try:
        direct = md.distribution(_name(root)).read_text("direct_url.json")
    except md.PackageNotFoundError:
        return False
    return bool(direct) and json.loads(direct).get("url") == root.as_uri()


def _versions() -> dict[str, str]:
    """Installed versions; where a distribution is installed twice, the copy that imports first (as ``md.version``)."""
    importlib.invalidate_caches()
    found = {}
    for d in md.distributions():
        found.setdefault(canonicalize_name(d.metadata["Name"]), d.version)
    return found


def _loaded_modules_of(dists: set[str]) -> list[str]:
    """Modules of ``dists`` that this process imported before they changed on disk."""
    owners = md.packages_distributions()
    return sorted(
        m for m, ds in owners.items() if m in sys.modules and dists & {canonicalize_name(d) for d in ds}
    )


def _no_deps_missing(root: Path) -> list[str]:
    """Pins of ``requirements-no-deps.txt`` (the trained model's package) not installed at that version."""
    path = root / "requirements-no-deps.txt"
    pins = [
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    missing = []
    for pin in pins:
        have = installed(Requirement(pin).name)
        if have is None or have not in Requirement(pin).specifier:
            missing.append(pin)
    return missing


def main(argv: list[str] = ()) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="print the plan, install nothing")
    args = ap.parse_args(list(argv))
    install, keep, notes = plan()
    kept = " and ".join(f"{n} {v}" for n, v in keep.items()) or "nothing"
    if args.dry_run:
        print(f"would install: {', '.join(install) or 'nothing'}; would keep Colab's {kept}")
        return 0
    before = _versions()
    if install:
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as pins:  # nothing may replace what is kept
            pins.write("".join(f"{n}=={v}\n" for n, v in keep.items()))
            pins.flush()
            _pip("install", "--quiet", *install, "--constraint", pins.name)
    no_deps = _no_deps_missing(ROOT)  # packages whose declared dependencies must not come along
    if no_deps:
        _pip("install", "--quiet", "--no-deps", *no_deps)
    if not _workbook_installed(ROOT):
        _pip("install", "--quiet", "--no-deps", "--editable", str(ROOT))
    if str(ROOT) not in sys.path:  # this kernel started before the editable install, so it cannot see it yet
        sys.path.insert(0, str(ROOT))
    after = _versions()
    changed = {n for n, v in after.items() if before.get(n) != v}
    asked = {canonicalize_name(Requirement(r).name) for r in install + no_deps} | {
        canonicalize_name(_name(ROOT))
    }
    names = [f"{n} {after[n]}" for n in sorted(changed & asked)]
    more = f" (and {len(changed - asked)} packages they need)" if changed - asked else ""
    print(f"Colab set-up: installed {', '.join(names) or 'nothing new'}{more}; kept Colab's {kept}.")
    for note in notes:
        print(note)
    stale = _loaded_modules_of(changed)
    if stale:
        print(
            f"Restart the runtime once (Runtime > Restart session) and run the notebook again from the top: "
            f"{', '.join(stale)} had been imported before this set-up changed it. The install is kept."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
