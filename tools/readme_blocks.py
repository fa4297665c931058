"""The README's generated blocks: text between ``<!-- name:start -->`` and ``<!-- name:end -->`` that a tool writes
(``headline``, ``reproduce``, ``times``) and a test compares with that tool's output."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def replace(name: str, text: str, readme: Path = README) -> None:
    """Put ``text`` between the README's markers of block ``name``."""
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    head, rest = readme.read_text().split(start, 1)
    readme.write_text(head + start + text + end + rest.split(end, 1)[1])
