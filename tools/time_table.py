"""Print the README's table of chapter times from every ``results/<card>/run_all_<date>.csv`` in the repository.

    python tools/time_table.py            print it
    python tools/time_table.py --write    and replace it in README.md (between the times markers)

For each chapter, its latest time on each card that has one (``tools/run_notebooks.py`` writes the tables): its
own seconds (one-time builds and compilations apart), its status, the profile's budget and the date; then a line per
card with the chapters' total against the workbook's budget, given only once every chapter has run to its end. The
tables are those under ``results/`` (``readme_blocks.shipped``: this machine's ignored ``results/cpu/`` left out).
tests/test_project.py checks that the README's block is this script's output, so no time in it is typed by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import readme_blocks

from helpers import results
from helpers.machine import budgets

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def latest() -> pd.DataFrame:
    """The latest row of every (card, notebook) among the shipped time tables."""
    frames = []
    for path in readme_blocks.shipped("*/run_all_*.csv"):
        df, meta = results.stored(path.stem, card=path.parent.name)
        frames.append(df.assign(card=meta["card"]["name"], date=path.stem[-10:]))
    if not frames:
        return pd.DataFrame()
    return newest(pd.concat(frames, ignore_index=True))


def newest(every: pd.DataFrame) -> pd.DataFrame:
    """The last row of each (card, profile, notebook): the latest date, and of one date's rows the last written (a
    table appends each run's rows); ``prepare``'s rows left out."""
    every = every[every.notebook != "prepare"].sort_values("date", kind="stable")
    return every.drop_duplicates(["card", "profile", "notebook"], keep="last").sort_values(
        ["card", "notebook"]
    )


def render() -> str:
    df = latest()
    if df.empty:
        return "No timed run of the notebooks is stored yet.\n"
    lines = [
        "| notebook | card | profile | its own time | budget | within it | status | date |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in df.itertuples():
        status = r.status + ("" if r.status == "ok" else " (not run to its end)")
        within = "yes" if r.status == "ok" and r.chapter_s <= r.time_budget_s else "no"
        own = f"{r.chapter_s:.0f} s" if pd.notna(r.chapter_s) else "not measured"
        lines.append(
            f"| `{r.notebook}` | {r.card} | {r.profile} | {own} | {r.time_budget_s:.0f} s | "
            f"{within} | {status} | {r.date} |"
        )
    lines.append("")
    for (card, profile), part in df.groupby(["card", "profile"], sort=False):
        whole, own = budgets.WORKBOOK_BUDGET_S.get(profile), part.chapter_s.sum()
        ran = set(part.notebook)
        unfinished = sorted(ran - set(part.notebook[part.status == "ok"]))
        never = sorted(set(CHAPTERS) - ran)
        if unfinished or never:
            why = []
            if unfinished:
                why.append(f"{len(unfinished)} not run to its end ({', '.join(unfinished)})")
            if never:
                why.append(f"{len(never)} not run ({', '.join(never)})")
            total = f"no total yet: {'; '.join(why)}"
        elif whole:
            kept = "kept" if own <= whole else "exceeded"
            total = f"{own:.0f} s of their own (the workbook's budget: {whole:.0f} s, {kept})"
        else:
            total = f"{own:.0f} s of their own (no workbook budget on this profile)"
        lines.append(
            f"{card} ({profile}): {len(ran & set(CHAPTERS))} of {len(CHAPTERS)} chapters, {total}, "
            f"and {part.one_time_s.sum():.0f} s of one-time costs while they ran, counted apart."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        readme_blocks.replace("times", render())
    print(render(), end="")
