"""Print the README's reproduction table from every ``results/<card>/reproduce_<date>.csv`` in the repository.

    python tools/drift_table.py            print it
    python tools/drift_table.py --write    and replace it in README.md (between the reproduce markers)

One table per run of ``./workbook reproduce`` (tools/reproduce.py): each headline figure's stored value, the new
median with its 95% interval, the drift, the GPU's busy share and the verdict. tests/test_project.py checks that
the README's block is this script's output, so no number in it is typed by hand.
"""

from __future__ import annotations

import sys

import readme_blocks

from helpers import results


def runs() -> list[tuple[str, str]]:
    """(card, table name) of every reproduction under results/ (``readme_blocks.shipped``), oldest first."""
    found = sorted(readme_blocks.shipped("*/reproduce_*.csv"), key=lambda p: (p.stem, p.parent.name))
    return [(p.parent.name, p.stem) for p in found]


def _num(v: float) -> str:
    return "" if v != v else f"{v:.4g}"


def run_table(card: str, name: str) -> str:
    """One run: a line saying where and against what, then its figures."""
    df, meta = results.stored(name, card=card)
    host = meta.get("host", {})
    versions = meta.get("versions", {})
    lines = [
        f"**{meta['card']['name']}**, {meta['saved'][:10]} ({host.get('cpu_model', 'host not recorded')}, "
        f"{host.get('cpu_cores', '?')} cores, driver {host.get('driver_version', '?')}; torch "
        f"{versions.get('torch', '?')}, transformers {versions.get('transformers', '?')}), compared with the "
        f"stored run of `{meta['stored_card']}`, {meta['wall_s'] / 60:.1f} minutes: `results/{card}/{name}.csv`"
        + (f"; **{meta['stopped']}**: the figures it had measured" if meta.get("stopped") else ""),
        "",
        "| figure | stored | new (95% interval) | drift | GPU busy | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in df.itertuples():
        new = f"{_num(r.new)} ({_num(r.new_ci_low)}-{_num(r.new_ci_high)})" if r.new == r.new else ""
        drift = "" if r.drift != r.drift else f"{r.drift:+.1%}"
        busy = "" if r.busy_share != r.busy_share else f"{r.busy_share:.0%}"
        lines.append(f"| {r.figure} | {_num(r.stored)} | {new} | {drift} | {busy} | {r.verdict} |")
    return "\n".join(lines)


def render() -> str:
    """Every run's table, oldest first."""
    tables = [run_table(card, name) for card, name in runs()]
    return "\n\n".join(tables) + "\n" if tables else "No reproduction has been run yet.\n"


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        readme_blocks.replace("reproduce", render())
    print(render(), end="")
