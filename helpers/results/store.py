"""Result tables on disk: ``results/<card>/<name>.csv`` with a ``.json`` of the environment beside it.

Every notebook saves what it measured here, so the stored numbers of a GPU run can be compared,
plotted and quoted without rerunning it (README's headline tables come from these files).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
from pathlib import Path

import pandas as pd

from ..errors import WorkbookError
from ..machine.hardware import card_slug, device_info, host_info, versions
from . import registry

ROOT = Path(__file__).resolve().parents[2]


def results_dir() -> Path:
    """``$WORKBOOK_RESULTS`` or the repository's ``results/`` folder."""
    return Path(os.environ.get("WORKBOOK_RESULTS") or ROOT / "results")


def path_for(name: str, card: str | None = None, shipped: bool = False) -> Path:
    """``results/<card>/<name>.csv``; ``card`` defaults to this machine's (``cpu``, ``nvidia-h100-80gb-hbm3``).
    ``shipped=True``: the repository's own ``results/`` (what the workbook ships), whatever
    ``$WORKBOOK_RESULTS`` says."""
    return (ROOT / "results" if shipped else results_dir()) / (card or card_slug()) / f"{name}.csv"


def save(df: pd.DataFrame, name: str, card: str | None = None, meta: dict | None = None) -> Path:
    """Write ``df`` and a metadata file (card, host CPU, driver and clocks, versions, date, profile) beside it;
    return the CSV path.

    ``name`` must be registered (``registry.TABLES``) and ``df``/``meta`` must carry what the registry names."""
    registry.check(name, df.columns, meta or {})
    path = path_for(name, card)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    info = {
        "card": device_info().__dict__,
        "host": host_info(),
        "versions": versions(),
        "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "rows": len(df),
    }
    info.update(meta or {})
    path.with_suffix(".json").write_text(json.dumps(info, indent=1, default=str))
    return path


def load(name: str, card: str | None = None, shipped: bool = False) -> pd.DataFrame:
    """Read a saved table back (``card=None``: this machine's; ``shipped``: see ``path_for``)."""
    registry.table(name)
    path = path_for(name, card, shipped)
    if not path.exists():
        have = sorted(p.relative_to(results_dir()).as_posix() for p in results_dir().glob("*/*.csv"))
        raise WorkbookError(
            f"No saved results at {path}.", f"Run the notebook that makes them, or pick one of {have}."
        )
    return pd.read_csv(path)


def meta(name: str, card: str | None = None, shipped: bool = False) -> dict:
    """The metadata saved with a table."""
    load(name, card, shipped)  # the same checks and messages
    return json.loads(path_for(name, card, shipped).with_suffix(".json").read_text())


def stored(name: str, card: str | None = None) -> tuple[pd.DataFrame, dict]:
    """A table that the workbook ships and its metadata: of ``card``'s stored run (default: the stored run the
    README quotes, ``registry.STORED_CARD``)."""
    card = card or registry.STORED_CARD
    return load(name, card, shipped=True), meta(name, card, shipped=True)


def chapter_tables(names, card: str | None = None) -> dict[str, pd.DataFrame]:
    """The saved tables among ``names`` that exist for ``card`` (this machine's by default)."""
    return {n: load(n, card) for n in names if path_for(n, card).exists()}


def append_row(path, row: dict) -> None:
    """Append one row to a CSV as soon as it is measured; a new column rewrites the file with it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {k: ("" if v is None else v) for k, v in row.items()}
    if path.exists() and path.stat().st_size:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        if set(row) - set(header):
            df = pd.concat([pd.read_csv(path), pd.DataFrame([row])], ignore_index=True)
            df.to_csv(path, index=False)
            return
        with path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=header).writerow({k: row.get(k, "") for k in header})
    else:
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            w.writeheader()
            w.writerow(row)


def saved() -> pd.DataFrame:
    """Every saved table: card, name, rows."""
    rows = [
        {"card": p.parent.name, "name": p.stem, "rows": sum(1 for _ in p.open()) - 1}
        for p in sorted(results_dir().glob("*/*.csv"))
    ]
    return pd.DataFrame(rows, columns=["card", "name", "rows"])
