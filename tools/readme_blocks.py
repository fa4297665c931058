"""The README's generated blocks: text between ``<!-- name:start -->`` and ``<!-- name:end -->`` that a tool writes
(``headline``, ``reproduce``, ``times``) and a test compares with that tool's output, from the tables under ``results/``
(``shipped``)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# results/cpu/ is in .gitignore: a CPU's own runs are not shipped, so a clean clone has none
LOCAL_CARD = "cpu"


def shipped(pattern: str, results: Path = ROOT / "results") -> list[Path]:
    """The result files matching ``pattern`` (e.g. ``"*/run_all_*.csv"``) under ``results/``, this machine's ignored
    ``results/cpu/`` left out, so that a block written on a CPU equals the one a clean clone writes. A GPU machine's
    own run saved into ``results/<card>/`` counts: commit it with the block it changes (the test then agrees), or
    run with ``$WORKBOOK_RESULTS`` set elsewhere."""
    return sorted(p for p in results.glob(pattern) if p.parent.name != LOCAL_CARD)


def replace(name: str, text: str, readme: Path = README) -> None:
    """Put ``text`` between the README's markers of block ``name``."""
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    head, rest = readme.read_text().split(start, 1)
    readme.write_text(head + start + text + end + rest.split(end, 1)[1])
