"""Execute the notebooks headless on the machine at hand and keep their outputs.

    python tools/run_notebooks.py                 # every notebook -> executed/<name>.ipynb
    python tools/run_notebooks.py --inplace       # refresh the stored outputs in notebooks/
    python tools/run_notebooks.py 01 --profile large-gpu

This is how the stored GPU outputs are produced, and how you benchmark your own card: each notebook
saves its measurements under results/<card>/. A failing notebook is saved with its error and the
run goes on to the next; the exit status is non-zero if any failed. Each saved notebook then gets a PNG
beside every plotly figure (tools/static_figures.py), so viewers that run no JavaScript show it; where
that cannot run (no Chromium), the outputs are kept and the command to add the PNGs later is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


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


def progress(nb, target: Path, cell, index: int, t0: float) -> None:
    """After every cell: save the notebook (a run that is stopped keeps what it measured so far) and print a line,
    so a long run's log says how far it got and where its time went."""
    import nbformat

    nbformat.write(nb, target)
    first = (cell.source.strip().splitlines() or [""])[0][:60]
    print(f"  cell {index:3d} done at {time.perf_counter() - t0:7.1f} s  {first}", flush=True)


def main() -> int:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", help="names or number prefixes (default: all)")
    ap.add_argument("--inplace", action="store_true", help="write outputs into notebooks/ (stored outputs)")
    ap.add_argument("--out", default=str(ROOT / "executed"), help="folder for executed copies")
    ap.add_argument("--profile", help="force a hardware profile (cpu, small-gpu, large-gpu)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    ap.add_argument("--kernel", default="python3")
    ap.add_argument(
        "--allow-errors", action="store_true", help="run every cell even after one fails (still exit 1)"
    )
    args = ap.parse_args()

    if args.profile:
        os.environ["WORKBOOK_PROFILE"] = args.profile
    out_dir = NOTEBOOKS if args.inplace else Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for path in select(args.notebooks):
        nb = nbformat.read(path, as_version=4)
        target = out_dir / path.name
        client = NotebookClient(
            nb,
            timeout=args.timeout,
            kernel_name=args.kernel,
            resources={"metadata": {"path": str(NOTEBOOKS)}},
            record_timing=True,
            allow_errors=args.allow_errors,
        )
        t0 = time.perf_counter()
        client.on_cell_executed = lambda cell, cell_index, nb=nb, target=target, t0=t0, **_: progress(
            nb, target, cell, cell_index, t0
        )
        status = "ok"
        try:
            client.execute()
        except CellExecutionError as e:
            status = "FAILED"
            print(str(e)[-3000:], file=sys.stderr)
        errors = [
            c
            for c in nb.cells
            if c.cell_type == "code" and any(o.output_type == "error" for o in c.get("outputs", []))
        ]
        if errors:
            status = "FAILED"
            for c in errors:
                err = next(o for o in c.outputs if o.output_type == "error")
                print(
                    f"  error in cell {c.source.splitlines()[0][:70]!r}: {err.ename}: {err.evalue[:300]}",
                    file=sys.stderr,
                )
        if status != "ok":
            failed.append(path.name)
        nbformat.write(nb, target)
        figures = add_static_figures(nb, target)
        print(f"{path.name}: {status} in {time.perf_counter() - t0:.0f} s{figures} -> {target}", flush=True)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
