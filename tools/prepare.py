"""Build once what the chapters load, so that a chapter's time is its own: the one-time costs, measured.

    python tools/prepare.py [--profile cpu|small-gpu|large-gpu] [--force]
    ./workbook prepare [same options]

Every random-weight checkpoint a profile's chapters load is written to ``$WORKBOOK_CACHE`` (default
``~/.cache/workbook/models``) and the trained model's GGUF file is converted there, each once: a later run finds
them and takes no time. Prints one row per model (built now, or found in the cache with the seconds its build
took) and returns them. Every build also goes to the cache's ledger (``checkpoints.note_one_time``), so
``tools/run_notebooks.py`` gives each chapter's time without the builds that happened while it ran. It runs this
first unless told ``--no-prepare``. Compiling (``torch.compile``, FlashAttention-4's JIT) stays in the chapters
that teach it: each such row reports its compile time apart (``compile_s``, ``first_call_s``), and the
compilations of flex attention and of the decode modes go to the ledger too, so a chapter's own time leaves them
out.
"""

from __future__ import annotations

import argparse
import json
import time

from helpers.machine import profiles
from helpers.models import catalog, checkpoints


def models_of(prof: profiles.Profile, chapters: list[str] | None = None) -> list[str]:
    """Every catalog model that the profile's chapters (``chapters``: those numbers only, e.g. ``["01", "05"]``)
    name and that is built or converted (encoders ship as they are); the profile's decoder is always among them."""
    found: list[str] = []

    def visit(value) -> None:
        if isinstance(value, str) and value in catalog.ENTRIES and value not in found:
            found.append(value)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)

    tables = [t for k, t in prof.chapters.items() if chapters is None or k in chapters]
    shared = [prof.small_decoder, prof.decoders] if chapters is None else []
    visit([prof.decoder, *shared, tables, "smollm2-135m"])
    return [m for m in found if catalog.entry(m).kind != "encoder"]


def prepare(profile: str | None = None, chapters: list[str] | None = None, force: bool = False) -> list[dict]:
    """Build every model of the profile's ``chapters`` (all by default); one row per model: ``model``,
    ``built_now``, ``seconds`` (its build, now or when it was built), ``error`` (a build that failed: the others
    still run, and the chapter that needs it will say so)."""
    prof = profiles.pick(profile)
    rows = []
    for name in models_of(prof, chapters):
        start = time.time()
        try:
            folder = checkpoints.build(name, force=force)
        except Exception as e:  # noqa: BLE001 - a full disk, a missing package: a row, the rest go on
            rows.append(
                {
                    "model": name,
                    "built_now": False,
                    "seconds": float("nan"),
                    "error": f"{type(e).__name__}: {e}",
                }
            )
            print(f"  {name:18s} failed: {rows[-1]['error'][:300]}", flush=True)
            continue
        built = checkpoints.one_time_since(start)
        seconds = (
            sum(e["seconds"] for e in built)
            if built
            else json.loads((folder / checkpoints.MARKER).read_text()).get("build_s", float("nan"))
        )  # built earlier: the seconds its marker recorded
        rows.append({"model": name, "built_now": bool(built), "seconds": round(seconds, 1), "error": ""})
        where = "built now" if built else "in the cache, built earlier"
        print(f"  {name:18s} {where} in {seconds:.1f} s -> {folder}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--profile", default=None, help="cpu, small-gpu or large-gpu (default: from the hardware)"
    )
    ap.add_argument("chapters", nargs="*", help="chapter numbers (default: every chapter)")
    ap.add_argument("--force", action="store_true", help="build again even what the cache holds")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    print(f"prepare: profile {profiles.pick(args.profile).name}, cache {checkpoints.cache_dir()}")
    rows = prepare(args.profile, args.chapters or None, args.force)
    now = sum(r["seconds"] for r in rows if r["built_now"])
    print(f"prepare: {len(rows)} models, {now:.0f} s of builds now, {time.perf_counter() - t0:.0f} s in all")
    return rows


if __name__ == "__main__":
    main()
