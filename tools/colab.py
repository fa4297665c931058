"""The workbook on Google Colab: each notebook's set-up cell and the "Open in Colab" badges, from one address.

The repository's public address is written in one place: ``Repository`` under ``[project.urls]`` in
pyproject.toml. Everything here derives from it.

    python tools/colab.py cell      # (re)write the Colab set-up cell: the first code cell of every notebook
    python tools/colab.py badges    # badges under the title of the README and of every notebook (and the cells)
    python tools/colab.py check     # exit 1 when a cell or a badge disagrees with the address

Until an address is recorded, ``badges`` writes nothing, says what to add to pyproject.toml and exits with status
1 (no badge was written, so a script that asked for badges learns it did not get them); the set-up cell then
leaves ``SOURCE`` empty and tells the reader on Colab to set it. Colab opens notebooks straight from GitHub only,
so badges need a github.com address; the cell's git URL may be on any host. ``--root`` works on a copy of the
repository (the tests use it); ``--branch`` is the branch the badges open (default: main).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
import tomllib

ROOT = Path(__file__).resolve().parent.parent
KEY = "Repository"
BADGE_SVG = "https://colab.research.google.com/assets/colab-badge.svg"
MARK = "# Colab only:"  # how the set-up cell begins; it identifies the cell when it is rewritten

CELL = """\
# Colab only: install the workbook and what Colab lacks, keeping Colab's torch (elsewhere: nothing to do).
# SOURCE is where the workbook comes from: a git URL, or the folder of an uploaded copy of the repository.
{source_line}
import os
import runpy
import subprocess
import sys

if "google.colab" not in sys.modules:
    print("Not on Colab: nothing to install.")
elif not SOURCE:
    raise ValueError("Set SOURCE at the top of this cell: a git URL or the folder of an uploaded copy.")
else:
    root = SOURCE if os.path.isdir(SOURCE) else "workbook"  # a git URL is cloned into ./workbook
    if not os.path.isdir(root):
        subprocess.run(["git", "clone", "--depth", "1", SOURCE, root], check=True)
    runpy.run_path(os.path.join(root, "tools", "colab_setup.py"))["main"]()"""

NO_SOURCE = (
    'SOURCE = ""  # none recorded yet: set it, e.g. "https://github.com/OWNER/NAME" or "/content/workbook"'
)
NO_ADDRESS = (
    f"No public address is recorded, so no badge was written. Add it to pyproject.toml:\n\n"
    f'    [project.urls]\n    {KEY} = "https://github.com/OWNER/NAME"\n\n'
    "then run `python tools/colab.py badges` again."
)


def notebooks(root: Path) -> list[Path]:
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def address(root: Path = ROOT) -> str | None:
    """The repository's public address from pyproject.toml, or ``None`` while none is recorded."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    value = (project.get("urls") or {}).get(KEY, "").strip()
    return value or None


def github(url: str) -> tuple[str, str] | None:
    """``(owner, name)`` of a github.com address, else ``None``."""
    m = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", url)
    return (m[1], m[2]) if m else None


def cell_source(url: str | None) -> str:
    """The set-up cell, its ``SOURCE`` defaulting to the recorded address (empty while there is none)."""
    line = f'SOURCE = "{url}"  # or the folder of an uploaded copy' if url else NO_SOURCE
    return CELL.format(source_line=line)


def with_source(cell: str, source: str) -> str:
    """The set-up cell with ``SOURCE`` set to ``source``, as a reader sets it before running the cell on Colab."""
    text, n = re.subn(r"^SOURCE = .*$", f"SOURCE = {source!r}", cell, count=1, flags=re.M)
    if n != 1:
        raise ValueError("not the Colab set-up cell: no line starts with 'SOURCE = '")
    return text


def badge(owner: str, name: str, branch: str, path: str) -> str:
    return f"[![Open In Colab]({BADGE_SVG})](https://colab.research.google.com/github/{owner}/{name}/blob/{branch}/{path})"


def without_badge(markdown: str) -> str:
    lines = markdown.split("\n")
    for i in [i for i, line in enumerate(lines) if BADGE_SVG in line][::-1]:
        del lines[i - 1 if i and not lines[i - 1].strip() else i : i + 1]
    return "\n".join(lines)


def with_badge(markdown: str, line: str) -> str:
    """The badge on a line of its own after the title (the first line), replacing any badge there was."""
    lines = without_badge(markdown).split("\n")
    lines[1:1] = ["", line]
    return "\n".join(lines)


def _setup_cell(nb) -> int | None:
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code":
            return i if c.source.startswith(MARK) else None
    return None


def write_cells(root: Path, url: str | None) -> list[Path]:
    """Make the set-up cell the first code cell of every notebook; a new one has no output, like a fresh cell."""
    changed = []
    for path in notebooks(root):
        nb = nbformat.read(path, as_version=4)
        i = _setup_cell(nb)
        if i is None:
            first = next(j for j, c in enumerate(nb.cells) if c.cell_type == "code")
            nb.cells.insert(first, nbformat.v4.new_code_cell(cell_source(url)))
        elif nb.cells[i].source != cell_source(url):
            nb.cells[i].source = cell_source(url)
        else:
            continue
        nbformat.write(nb, path)
        changed.append(path)
    return changed


def write_badges(root: Path, url: str, branch: str = "main") -> list[Path]:
    """Badges under the README's and every notebook's title, each opening that notebook from ``url``."""
    owner, name = github(url)
    changed = []
    readme = root / "README.md"
    text = with_badge(readme.read_text(), badge(owner, name, branch, "notebooks/" + notebooks(root)[0].name))
    if text != readme.read_text():
        readme.write_text(text)
        changed.append(readme)
    for path in notebooks(root):
        nb = nbformat.read(path, as_version=4)
        first = nb.cells[0]
        text = with_badge(first.source, badge(owner, name, branch, f"notebooks/{path.name}"))
        if text != first.source:
            first.source = text
            nbformat.write(nb, path)
            changed.append(path)
    return changed


def problems(root: Path = ROOT, branch: str = "main") -> list[str]:
    """Where a set-up cell or a badge disagrees with the recorded address (none recorded: no badge anywhere)."""
    url = address(root)
    found = []
    for path in notebooks(root):
        nb = nbformat.read(path, as_version=4)
        i = _setup_cell(nb)
        if i is None or nb.cells[i].source != cell_source(url):
            found.append(
                f"{path.name}: its first code cell is not the Colab set-up cell (python tools/colab.py cell)"
            )
    docs = [(root / "README.md", "notebooks/" + notebooks(root)[0].name, (root / "README.md").read_text())]
    docs += [
        (p, f"notebooks/{p.name}", nbformat.read(p, as_version=4).cells[0].source) for p in notebooks(root)
    ]
    gh = github(url) if url else None
    for path, target, text in docs:
        if gh is None and BADGE_SVG in text:
            found.append(f"{path.name}: a Colab badge, but no github.com address is recorded")
        elif gh is not None and text != with_badge(text, badge(*gh, branch, target)):
            found.append(f"{path.name}: its Colab badge is missing or stale (python tools/colab.py badges)")
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["cell", "badges", "check"])
    ap.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    ap.add_argument("--branch", default="main", help="the branch the badges open (default: main)")
    args = ap.parse_args(argv)
    root, url = args.root.resolve(), address(args.root)
    if args.command == "check":
        found = problems(root, args.branch)
        print("\n".join(found) or "Colab cells and badges agree with pyproject.toml.")
        return 1 if found else 0
    if args.command == "badges":
        if url is None:
            print(NO_ADDRESS, file=sys.stderr)
            return 1
        if github(url) is None:
            print(
                f"{KEY} = {url!r} is not a github.com address; Colab opens notebooks from GitHub only.",
                file=sys.stderr,
            )
            print("No badge was written.", file=sys.stderr)
            return 1
    changed = write_cells(root, url)
    if args.command == "badges":
        changed += write_badges(root, url, args.branch)
    print(f"updated: {', '.join(sorted({p.name for p in changed}))}" if changed else "nothing to update")
    return 0


if __name__ == "__main__":
    sys.exit(main())
