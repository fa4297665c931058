"""Sentences that state a measured figure, written by code from the results so they cannot go stale.

A chapter's markdown explains; wherever a sentence names a measured number (ms, tok/s, GiB, %, x, ...), a code
cell writes it with ``prose.say(...)`` from the table it comes from. ``tests/test_project.py`` fails when a
markdown cell states a measured figure (see ``FIGURE`` and ``allowed``), so the rule holds in every chapter.
``how_measured(row)`` says in words how a measurement ended (a plot's hover text).
"""

from __future__ import annotations

import re

# a number followed by a unit of something measured: time, speed, memory, bandwidth, compute, share, ratio
FIGURE = re.compile(
    r"(?<![\w.])\d[\d,]*(?:\.\d+)?\s*(?:ms|s|tok/s|tokens/s|GiB|MiB|GB|GB/s|TB/s|TFLOP/s|%|x|×|times)(?![\w/])"
)

# figures a markdown cell may state, because they are not measurements of this workbook
NOT_MEASURED = (
    re.compile(r'"[^"]*"'),  # a claim quoted from elsewhere, e.g. the 2023 guide's "up to 20x"
    re.compile(r"\d+ Gi?B\+?(?: \([^)]*\))? (?:T4|card|GPU|budget|cap)|\d+ or \d+ GB card"),  # a card's size
    re.compile(r"\d+% (?:of the|or \d+%)|at most \d+%|\d+% (?:confidence )?interval"),  # a setting
    re.compile(r"\d+x (?:fewer|smaller than fp32)|than \d+x"),  # arithmetic of bit widths (16 / 4, 32 / 4)
)


def figures(markdown: str) -> list[str]:
    """The sentences of ``markdown`` that state a measured figure: those with a ``FIGURE`` outside the
    ``NOT_MEASURED`` forms, unless the sentence says it quotes the 2023 guide (it names "the guide")."""
    found = []
    for sentence in re.split(r"(?<=[.!?:;])\s+|\n(?=[-#\d])", markdown):
        if "guide" in sentence.lower():
            continue
        rest = sentence
        for pattern in NOT_MEASURED:
            rest = pattern.sub(" ", rest)
        if FIGURE.search(rest):
            found.append(" ".join(sentence.split()))
    return found


class Said(str):
    """A sentence already shown: a string for asserts and tests that a notebook does not show a second time when
    it is a cell's last value."""

    def _ipython_display_(self):
        pass


def say(text: str) -> Said:
    """Show ``text`` (markdown, its figures filled in from results by the caller's f-string) as the chapter's
    prose and return it, so a test or an assert can read the same sentence the reader sees."""
    from IPython.display import Markdown, display  # IPython only where a notebook shows the sentence

    display(Markdown(text))
    return Said(text)


def times(ratio: float) -> str:
    """A ratio as prose: ``3.5x``; below 10 with one decimal, above without."""
    return f"{ratio:.1f}x" if ratio < 10 else f"{ratio:.0f}x"


STOP_WORDS = {
    "ci": "the interval reached its target",
    "budget": "stopped on the protocol's time budget",
    "share": "stopped on its share of the chapter's time",
    "max_reps": "stopped at the most repetitions",
}


def how_measured(row: dict) -> str:
    """How a point's measuring ended, for its hover text: ``"6 samples; stopped on its share of the chapter's time
    (interval not reached)"``; "" for a row that was not measured by the protocol."""
    stop = row.get("stopped_by")
    if not stop or not isinstance(stop, str):
        return ""
    reached = row.get("ci_reached")
    tail = (
        ""
        if stop == "ci" or reached is None
        else (" (interval reached)" if reached else " (interval not reached)")
    )
    reps = f"{row['n']} samples; " if row.get("n") else ""
    return f"{reps}{STOP_WORDS.get(stop, stop)}{tail}"
