"""Freeze the workbook's own prose into data/corpus/workbook_prose.txt, the fixed text helpers.quality scores.

The prose is the markdown of README.md and notebooks/*.ipynb (this project's text, Apache-2.0), with code,
tables, HTML and link targets left out. Run it by hand, and only when the corpus is meant to change:
perplexities measured on different corpora are not comparable, so nothing regenerates it automatically.

    python tools/freeze_corpus.py            # rewrite the corpus
    python tools/freeze_corpus.py --check    # exit 1 if the sources' prose differs from the frozen file
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "data" / "corpus" / "workbook_prose.txt"


def prose(markdown: str) -> list[str]:
    """Paragraphs of plain English from markdown: no code blocks, tables, HTML, images or link targets."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)  # images
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text)
    paragraphs, current = [], []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("|") or s.startswith("    ") and not current:
            if current:
                paragraphs.append(" ".join(current))
            current = []
            continue
        s = re.sub(r"^(#+|[-*+]|\d+\.)\s+", "", s)  # headings and list markers
        s = s.replace("**", "").replace("__", "")
        if s.startswith(("#", "-", "*")) or len(s) > 1 and s[0] == s[1]:
            continue  # rules and leftovers
        current.append(s)
    if current:
        paragraphs.append(" ".join(current))
    return [p for p in paragraphs if len(p.split()) >= 4]  # drop labels and stray words


def sources(root: Path = ROOT) -> list[tuple[str, str]]:
    """(name, markdown) of README.md, then every notebook in order, one markdown cell at a time."""
    out = [("README.md", (root / "README.md").read_text())]
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        out += [(path.name, "".join(c["source"])) for c in cells if c["cell_type"] == "markdown"]
    return out


def corpus(root: Path = ROOT) -> str:
    return "\n\n".join(p for _, md in sources(root) for p in prose(md)) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the frozen file; write nothing")
    args = parser.parse_args()
    text = corpus()
    if args.check:
        same = CORPUS.exists() and CORPUS.read_text() == text
        print(
            "the frozen corpus matches the sources"
            if same
            else "the sources' prose has changed since the corpus was frozen"
        )
        return 0 if same else 1
    CORPUS.parent.mkdir(parents=True, exist_ok=True)
    CORPUS.write_text(text)
    print(f"wrote {CORPUS.relative_to(ROOT)}: {len(text.split())} words, {len(text)} characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
