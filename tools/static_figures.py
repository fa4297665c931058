"""Put a PNG beside every stored plotly figure, so notebook viewers that run no JavaScript show it.

    python tools/static_figures.py                 # every notebook in notebooks/
    python tools/static_figures.py 01 05           # some, by number prefix, name or path
    python tools/static_figures.py --check         # only list plotly outputs without a PNG (exit 1 if any)

A stored figure is plotly's own JSON (``application/vnd.plotly.v1+json``, drawn by JupyterLab and VS Code)
and, for the live plots, HTML that loads plotly.js from a CDN (see ``helpers/plots.py``). A code host's
notebook viewer runs neither, so the figure is blank there. This tool renders each stored figure's JSON to
a PNG with kaleido (no GPU, no re-execution) and adds it as ``image/png`` to the same output, wherever a
plotly output is stored: cell outputs and the outputs kept in a control panel's saved widget state.

Which representation a viewer shows is its own choice. JupyterLab still draws the interactive figure: its
plotly renderer (rank 2) outranks HTML (50) and images (90); it shows the PNG until the pointer enters the
figure, then draws the live one. nbconvert, and so nbviewer, prefers text/html to image/png: the live plots
stay interactive there, and the figures stored without HTML show the PNG. A code host's viewer that prefers
HTML but strips its scripts would still show the live plots blank, so by default the tool removes that HTML
from the stored outputs (``--keep-html`` keeps it): JupyterLab and VS Code draw plotly's JSON, every other
viewer shows the PNG. Running the tool again replaces each PNG (same figure, same bytes); nothing else
in the file changes. ``tools/run_notebooks.py`` calls it after executing a notebook.

kaleido drives the system Chromium (Debian's ``chromium`` package; ``.ci/run`` installs it), found on PATH
or named by ``BROWSER_PATH``; it never downloads a browser. Every PNG is ``WIDTH`` pixels wide, as tall as
the figure's own layout asks (else ``HEIGHT``), reduced to a 256-colour palette: 5-25 KB a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from run_notebooks import select  # the one way a tool picks notebooks by name

from helpers.errors import WorkbookError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


PLOTLY = "application/vnd.plotly.v1+json"
PNG = "image/png"
WIDTH, HEIGHT, SCALE = 900, 450, 1  # pixels; a notebook's output column is about this wide
COLOURS = (
    256  # palette size: plots are flat colours, so the reduction cannot be seen and the file is 4x smaller
)
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser_path() -> str:
    """The Chromium kaleido drives: ``BROWSER_PATH`` if set, else the first of ``BROWSERS`` on PATH."""
    path = os.environ.get("BROWSER_PATH") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if not path or not Path(path).is_file():
        raise WorkbookError(
            f"No Chromium to render figures with (BROWSER_PATH={os.environ.get('BROWSER_PATH')!r}, "
            f"none of {BROWSERS} on PATH).",
            "install Debian's package (`apt-get install chromium`; .ci/run does this) or point "
            "BROWSER_PATH at a Chrome or Chromium binary.",
        )
    return path


def plotly_outputs(nb) -> list[dict]:
    """Every output in ``nb`` that holds a plotly figure: cell outputs and, in the notebook's metadata, the
    outputs a control panel's ``Output`` widget kept in the saved widget state. (A live plot's updates are
    applied to its display before saving, so no ``update_display_data`` output is ever stored.)"""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "output_type" in node and isinstance(node.get("data"), dict) and PLOTLY in node["data"]:
                found.append(node)
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(nb.get("cells", []))
    walk(nb.get("metadata", {}))
    return found


def missing(nb) -> list[dict]:
    """The plotly outputs in ``nb`` without a PNG beside them."""
    return [o for o in plotly_outputs(nb) if PNG not in o["data"]]


def size(figure: dict) -> tuple[int, int]:
    """(width, height) in pixels of a figure's PNG: ``WIDTH`` wide, as tall as its layout asks (else ``HEIGHT``)."""
    height = figure.get("layout", {}).get("height")
    return WIDTH * SCALE, int(
        round((height if isinstance(height, (int, float)) and height > 0 else HEIGHT) * SCALE)
    )


def render(figures: list[dict]) -> list[bytes]:
    """PNG bytes of each plotly figure (its JSON as stored), all in one Chromium session."""
    if not figures:
        return []
    path = browser_path()
    return [_palette(png) for png in _run(_render(figures, path))]


async def _render(figures: list[dict], path: str) -> list[bytes]:
    import kaleido

    out = []
    # mathjax=False: no figure here uses LaTeX, and kaleido would fetch MathJax from a CDN
    async with kaleido.Kaleido(n=1, path=path, mathjax=False, timeout=120) as k:
        for fig in figures:
            w, h = size(fig)
            out.append(
                await k.calc_fig(
                    fig, opts={"format": "png", "width": w // SCALE, "height": h // SCALE, "scale": SCALE}
                )
            )
    return out


def _run(coro):
    """Run a coroutine from plain code or from inside a running event loop (a Jupyter kernel)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _palette(png: bytes) -> bytes:
    """The same picture on white with at most ``COLOURS`` colours (max-coverage palette, no dithering)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image).convert("RGB")
    out = io.BytesIO()
    flat.quantize(COLOURS, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE).save(
        out, "PNG", optimize=True
    )
    return out.getvalue()


def add_pngs(*notebooks, drop_html: bool = False) -> int:
    """Render every plotly output of the notebooks (in one Chromium session; identical figures once) and set
    its ``image/png``, replacing an older one; return how many. ``drop_html`` also removes the output's
    ``text/html`` (see ``--drop-html``)."""
    outputs = [o for nb in notebooks for o in plotly_outputs(nb)]
    keys = [json.dumps(o["data"][PLOTLY], sort_keys=True) for o in outputs]
    unique = list(dict.fromkeys(keys))
    pngs = dict(zip(unique, render([json.loads(k) for k in unique])))
    for output, key in zip(outputs, keys):
        output["data"][PNG] = base64.b64encode(pngs[key]).decode("ascii")
        if drop_html:
            output["data"].pop("text/html", None)
    return len(outputs)


def process(paths: list[Path], check: bool = False, drop_html: bool = False) -> list[tuple[Path, int, int]]:
    """Add PNGs to the notebooks at ``paths`` and save each in place, in nbformat's own layout (the one the
    repository stores, so only the added lines differ). With ``check``, change nothing.
    Returns (path, plotly outputs, outputs still without a PNG) per notebook."""
    import nbformat

    nbs = [nbformat.read(path, as_version=4) for path in paths]
    if not check:
        add_pngs(*nbs, drop_html=drop_html)
        for nb, path in zip(nbs, paths):
            nbformat.write(nb, path)
    return [(path, len(plotly_outputs(nb)), len(missing(nb))) for nb, path in zip(nbs, paths)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "notebooks", nargs="*", help="notebook paths, names or number prefixes (default: every notebook)"
    )
    ap.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a plotly output has no PNG"
    )
    ap.add_argument(
        "--keep-html",
        action="store_true",
        help="keep the plotly outputs' text/html (plotly.js from a CDN): nbviewer and Colab then draw stored "
        "figures interactively, but a viewer that strips scripts shows them blank instead of the PNG",
    )
    args = ap.parse_args(argv)
    paths = select(args.notebooks)
    sizes = {p: p.stat().st_size for p in paths}
    t0 = time.perf_counter()
    done = process(paths, check=args.check, drop_html=not args.keep_html)
    for path, figures, without in done:
        if args.check:
            print(f"{path.name}: {figures} plotly outputs, {without} without a PNG")
        else:
            print(f"{path.name}: {figures} PNGs, {(path.stat().st_size - sizes[path]) / 1024:+.0f} KiB")
    if not args.check:
        print(f"{sum(f for _, f, _ in done)} figures in {time.perf_counter() - t0:.0f} s")
    return 1 if any(without for _, _, without in done) else 0


if __name__ == "__main__":
    sys.exit(main())
