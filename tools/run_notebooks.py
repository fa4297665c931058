"""Execute the notebooks headless on the machine at hand and keep their outputs.

    python tools/run_notebooks.py                 # every notebook -> executed/<name>.ipynb
    python tools/run_notebooks.py --inplace       # refresh the stored outputs in notebooks/
    python tools/run_notebooks.py 01 --profile large-gpu

This is how the stored GPU outputs are produced, and how you benchmark your own card: each notebook
saves its measurements under results/<card>/. First the models the chosen chapters load are built once
(tools/prepare.py; ``--no-prepare`` skips it), so each chapter's time is its own. Every output is cleared
before a notebook runs, and the notebook is saved after every cell: a notebook that fails or is stopped
(Ctrl-C, SIGTERM, a time limit) is saved with what it ran and a marked cell where it stopped, never with an
earlier run's outputs below. The run goes on to the next notebook after a failure; the exit status is
non-zero if any failed. Each saved notebook then gets a PNG beside every plotly figure
(tools/static_figures.py), so viewers that run no JavaScript show it; where that cannot run (no Chromium),
the outputs are kept and the command to add the PNGs later is printed.

The time table (``results/<card>/run_all_<date>.csv``, saved after every notebook and printed at the end): per
notebook its seconds, the one-time seconds spent inside it (checkpoints built, the GGUF converted, flex attention
and the decode modes compiled: the cache's ledger), the chapter's own seconds (the difference), its status, the
profile and its time budget per chapter, and whether the chapter kept within it; a ``prepare`` row holds the builds
done before the chapters. A later run the same day adds its notebooks to the table (a notebook run again replaces
its row).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
STOP_MARK = "run_notebooks_stop"  # the metadata key of the cell that marks where a run stopped


def select(names: list[str]) -> list[Path]:
    every = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return every
    chosen = []
    for n in names:
        if Path(n).is_file():
            chosen.append(Path(n))
            continue
        hits = [p for p in every if p.name.startswith(n) or p.stem == n]
        if not hits:
            sys.exit(f"No notebook matches {n!r}. Notebooks: {[p.name for p in every]}")
        chosen += hits
    return chosen


def add_static_figures(nb, target: Path) -> str:
    """Add the PNGs of ``nb``'s plotly figures and save it again; a failure to render loses no output."""
    import nbformat
    import static_figures

    try:
        count = static_figures.add_pngs(nb, drop_html=True)
    except Exception as e:  # no Chromium, a browser that would not start: the measured outputs matter more
        print(
            f"  figures saved without PNGs: {e}\n  Once that is fixed: python tools/static_figures.py {target}",
            file=sys.stderr,
        )
        return ", figures without PNGs"
    nbformat.write(nb, target)
    return f", {count} figures as PNG" if count else ""


def progress(nb, target: Path, cell, index: int, t0: float, done: list[int]) -> None:
    """After every cell: save the notebook (a run that is stopped keeps what it measured so far) and print a line,
    so a long run's log says how far it got and where its time went."""
    import nbformat

    done.append(index)
    nbformat.write(nb, target)
    first = (cell.source.strip().splitlines() or [""])[0][:60]
    print(f"  cell {index:3d} done at {time.perf_counter() - t0:7.1f} s  {first}", flush=True)


def clear_outputs(nb) -> None:
    """Every code cell without outputs, execution count or timing, and no stop mark of an earlier run."""
    nb.cells = [c for c in nb.cells if STOP_MARK not in c.get("metadata", {})]
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
            c.metadata.pop("execution", None)


def mark_stop(nb, at: int, why: str, seconds: float, interrupted: bool) -> None:
    """Insert a markdown cell before cell ``at``: the run stopped there, why and when, and what that leaves below."""
    import nbformat

    stamp = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    below = (
        "The next code cell was running when it stopped (its outputs are partial); the cells after it did not run"
        if interrupted
        else "The cells below did not run"
    )
    text = (
        f"> **This run stopped here** ({why}, {seconds:.0f} s into the notebook, {stamp}). "
        f"{below}: their outputs are empty."
    )
    mark = nbformat.v4.new_markdown_cell(text)
    mark.metadata[STOP_MARK] = True
    nb.cells.insert(min(at, len(nb.cells)), mark)


SIGNALS: list[str] = []  # the signals that stopped the run (SIGTERM from a time limit, SIGINT from Ctrl-C)


def name_signals(**_) -> None:
    """nbclient meets SIGINT and SIGTERM by shutting the kernel down, which then reads as a dead kernel; wrap its
    handlers (hook ``on_notebook_start``) so the run also knows it was stopped, and by which signal."""
    loop = asyncio.get_event_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        handle = getattr(loop, "_signal_handlers", {}).get(sig)
        if handle is not None:
            loop.add_signal_handler(sig, _noted, sig, handle._callback, handle._args)


def _noted(sig, cleanup, args) -> None:
    SIGNALS.append(signal.Signals(sig).name)
    cleanup(*args)


def _as_interrupt(signum, frame) -> None:
    """Outside a notebook's run (building models, drawing PNGs): SIGTERM ends the run as Ctrl-C would, after the
    time table so far is saved. nbclient resets SIGTERM after each notebook, so ``main`` sets this again."""
    SIGNALS.append(signal.Signals(signum).name)
    raise KeyboardInterrupt


def time_row(name: str, seconds: float, start: float, status: str, prof) -> dict:
    """One row of the time table: the one-time seconds are the ledger's builds and compilations between ``start``
    and now."""
    from helpers.models import checkpoints

    one_time = checkpoints.one_time_seconds(start)
    budget = prof.chapters.get(name[:2], {}).get("time_budget_s", float("nan")) if name != "prepare" else None
    own = seconds - one_time
    return {
        "notebook": name,
        "seconds": round(seconds, 1),
        "one_time_s": round(one_time, 1),
        "chapter_s": round(own, 1),
        "status": status,
        "profile": prof.name,
        "time_budget_s": budget,
        "within_budget": None if budget is None else bool(status == "ok" and own <= budget),
    }


def save_times(rows: list[dict], prof, started: str) -> Path | None:
    """Save the time table so far (after every notebook: a stopped run keeps the rows it has)."""
    import pandas as pd

    from helpers import results
    from helpers.machine import budgets

    name = f"run_all_{started[:10]}"
    table = pd.DataFrame(rows)
    earlier = results.path_for(name)
    if earlier.exists():  # a run of other notebooks the same day: its rows stay, this run's replace theirs
        kept = pd.read_csv(earlier)
        kept = kept[~(kept.notebook.isin(table.notebook) & (kept.profile == prof.name))]
        table = pd.concat([kept, table], ignore_index=True)
    meta = {
        "profile": prof.name,
        "started": started,
        "chapter_budget_s": budgets.CHAPTER_BUDGET_S.get(prof.name),
        "workbook_budget_s": budgets.WORKBOOK_BUDGET_S.get(prof.name),
        "chapters_s": round(float(table[table.notebook != "prepare"].chapter_s.sum()), 1),
        "one_time_s": round(float(table.one_time_s.sum()), 1),
        "note": "chapter_s = seconds - one_time_s (checkpoints built, the GGUF converted, models compiled, as it ran)",
    }
    return results.save(table, name, meta=meta)


def run_one(path: Path, args, out_dir: Path, prof) -> tuple[str, dict, object]:
    """Execute one notebook, cleared first and saved after every cell; a failed or stopped run gets its mark.
    Returns its status (``ok``, ``FAILED``, ``stopped``), its row of the time table and the executed notebook."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    clear_outputs(nb)
    target = out_dir / path.name
    client = NotebookClient(
        nb,
        timeout=args.timeout,
        kernel_name=args.kernel,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
        record_timing=True,
        allow_errors=args.allow_errors,
        on_notebook_start=name_signals,
    )
    start, t0, done = time.time(), time.perf_counter(), []
    client.on_cell_executed = lambda cell, cell_index, nb=nb, target=target, t0=t0, done=done, **_: progress(
        nb, target, cell, cell_index, t0, done
    )
    status, stop = "ok", None
    try:
        client.execute()
    except CellExecutionError as e:
        status = "FAILED"
        stop = (done[-1] + 1 if done else 0, "the cell above failed")
        print(str(e)[-3000:], file=sys.stderr)
    except KeyboardInterrupt:  # before the kernel's handlers are in place, or after
        status = "stopped"
        stop = (done[-1] + 1 if done else 0, f"stopped by {SIGNALS[-1] if SIGNALS else 'SIGINT'}")
    except Exception as e:  # noqa: BLE001 - a cell's time limit, a dead kernel: saved with its mark
        status = "stopped" if SIGNALS else "FAILED"  # SIGTERM to the process group ends the kernel too
        why = f"stopped by {SIGNALS[-1]}" if SIGNALS else f"{type(e).__name__}: {str(e)[:200]}"
        stop = (done[-1] + 1 if done else 0, why)
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
    errors = [
        c
        for c in nb.cells
        if c.cell_type == "code" and any(o.output_type == "error" for o in c.get("outputs", []))
    ]
    if errors and status == "ok":
        status = "FAILED"
    for c in errors:
        err = next(o for o in c.outputs if o.output_type == "error")
        print(
            f"  error in cell {c.source.splitlines()[0][:70]!r}: {err.ename}: {err.evalue[:300]}",
            file=sys.stderr,
        )
    seconds = time.perf_counter() - t0
    if stop is not None and stop[0] < len(nb.cells):
        mark_stop(nb, stop[0], stop[1], seconds, interrupted=status == "stopped")
    nbformat.write(nb, target)
    return status, time_row(path.stem, seconds, start, status, prof), nb


def print_times(rows: list[dict], prof) -> None:
    """The time table, and the chapters' total against the profile's budget for the whole workbook."""
    import pandas as pd

    from helpers.machine import budgets

    if not rows:
        return
    with pd.option_context("display.width", 160, "display.max_columns", 12):
        print(pd.DataFrame(rows).to_string(index=False))
    total = sum(r["chapter_s"] for r in rows if r["notebook"] != "prepare")
    whole = budgets.WORKBOOK_BUDGET_S.get(prof.name)
    budget = f" (the whole workbook's budget on {prof.name}: {whole:.0f} s)" if whole else ""
    print(
        f"chapters: {total:.0f} s of their own{budget}; one-time: {sum(r['one_time_s'] for r in rows):.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", help="names or number prefixes (default: all)")
    ap.add_argument("--inplace", action="store_true", help="write outputs into notebooks/ (stored outputs)")
    ap.add_argument("--out", default=str(ROOT / "executed"), help="folder for executed copies")
    ap.add_argument("--profile", help="force a hardware profile (cpu, small-gpu, large-gpu)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    ap.add_argument("--kernel", default="python3")
    ap.add_argument("--no-prepare", action="store_true", help="do not build the chapters' models first")
    ap.add_argument(
        "--allow-errors", action="store_true", help="run every cell even after one fails (still exit 1)"
    )
    args = ap.parse_args(argv)

    if args.profile:
        os.environ["WORKBOOK_PROFILE"] = args.profile
    from helpers.machine import profiles

    prof = profiles.pick(args.profile)
    out_dir = NOTEBOOKS if args.inplace else Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = select(args.notebooks)
    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    failed, times = [], []
    signal.signal(signal.SIGTERM, _as_interrupt)
    try:
        if not args.no_prepare:
            import prepare

            start, t0 = time.time(), time.perf_counter()
            print(
                f"prepare: the models of {[p.name[:2] for p in chosen]} for profile {prof.name}", flush=True
            )
            built = prepare.prepare(prof.name, [p.name[:2] for p in chosen])
            status = "ok" if not any(r["error"] for r in built) else "FAILED"
            times.append(time_row("prepare", time.perf_counter() - t0, start, status, prof))
            if status != "ok":
                failed.append("prepare")
        for path in chosen:
            status, row, nb = run_one(path, args, out_dir, prof)
            signal.signal(signal.SIGTERM, _as_interrupt)
            times.append(row)
            table = save_times(times, prof, started)
            if status != "ok":
                failed.append(path.name)
            if status == "stopped":
                print(f"{path.name}: stopped after {row['seconds']:.0f} s; time table {table}", flush=True)
                break
            figures = add_static_figures(nb, out_dir / path.name)
            print(
                f"{path.name}: {status} in {row['seconds']:.0f} s{figures} -> {out_dir / path.name}",
                flush=True,
            )
    except KeyboardInterrupt:
        print(
            f"run-all: stopped by {SIGNALS[-1] if SIGNALS else 'SIGINT'} between notebooks", file=sys.stderr
        )
        failed.append("stopped")
        if times:
            save_times(times, prof, started)
    print_times(times, prof)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
