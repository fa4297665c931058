"""Run time: the chapters' time budgets in the profiles, one-time costs apart (the cache's ledger, ``prepare``),
and ``run_notebooks``' time table, cleared outputs and the mark where a stopped run stopped."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from helpers.machine import budgets, profiles
from helpers.models import checkpoints

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))


def test_every_profile_gives_each_chapter_a_budget_and_its_sweeps_shares_within_it():
    keys = {}
    for name, prof in profiles.PROFILES.items():
        assert set(prof.chapters) == {f"0{i}" for i in range(8)}
        for ch, sizes in prof.chapters.items():
            budget, sweeps = sizes["time_budget_s"], sizes["sweep_seconds"]
            assert budget == budgets.CHAPTER_BUDGET_S[name]
            assert 0 < sum(sweeps.values()) <= 0.75 * budget, (name, ch, sweeps)
            keys.setdefault(ch, set(sweeps))
            assert set(sweeps) == keys[ch], "every profile names the same sweeps"
    assert budgets.CHAPTER_BUDGET_S["large-gpu"] <= 300 and budgets.CHAPTER_BUDGET_S["small-gpu"] <= 900
    assert budgets.WORKBOOK_BUDGET_S["large-gpu"] <= 1500


def test_every_sweep_share_the_profile_names_is_spent_by_its_chapter():
    """Each name of ``sweep_seconds`` is one ``budget_s=ch.sweep_seconds[...]`` in its chapter, and back (sweeps
    that time nothing, such as 03's footprints or 01's agreement check, need none)."""
    import re

    for path in sorted((ROOT / "notebooks").glob("0[0-7]_*.ipynb")):
        code = "\n".join("".join(c.source) for c in nbformat.read(path, 4).cells if c.cell_type == "code")
        named = re.findall(r'budget_s=ch\.sweep_seconds\["(\w+)"\]', code)
        assert len(named) == len(set(named)) > 0, (path.name, named)
        assert set(named) == set(profiles.PROFILES["cpu"].chapters[path.name[:2]]["sweep_seconds"]), path.name


def test_builds_go_to_the_ledger_and_prepare_finds_them_in_the_cache(monkeypatch, tmp_path):
    import prepare

    monkeypatch.setenv("WORKBOOK_CACHE", str(tmp_path))
    start = time.time()
    rows = prepare.prepare("cpu", ["03"])
    assert [r["model"] for r in rows] == ["llama-2-7b-tiny", "smollm2-135m"]
    assert all(r["built_now"] and r["seconds"] > 0 and not r["error"] for r in rows)
    ledger = checkpoints.one_time_since(start)
    assert [e["what"] for e in ledger] == ["build llama-2-7b-tiny", "convert smollm2-135m"]
    again = prepare.prepare("cpu", ["03"])
    assert not any(r["built_now"] for r in again) and len(checkpoints.one_time_since(start)) == 2
    assert checkpoints.one_time_since(time.time() + 1) == []


def test_prepare_names_every_model_a_chapter_loads():
    import prepare

    large = profiles.PROFILES["large-gpu"]
    assert prepare.models_of(large, ["04"]) == ["llama-2-7b", "t5-11b", "bloom-3b", "smollm2-135m"]
    assert "minilm-l6" not in prepare.models_of(large), "encoders ship with their package"


def _notebook(tmp_path, sleep_s: float) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# a chapter"),
        nbformat.v4.new_code_cell("print('first')"),
        nbformat.v4.new_code_cell(f"import time; time.sleep({sleep_s})"),
        nbformat.v4.new_code_cell("print('last')"),
    ]
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", text="an earlier run's output")]
    nb.cells[3].execution_count = 7
    path = tmp_path / "99_chapter.ipynb"
    nbformat.write(nb, path)
    return path


def _run(tmp_path, path, stop_after_s=None):
    env = {"WORKBOOK_RESULTS": str(tmp_path / "results"), "WORKBOOK_PROFILE": "cpu", "PATH": "/usr/bin:/bin"}
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "run_notebooks.py"),
        str(path),
        "--out",
        str(tmp_path / "out"),
    ]
    proc = subprocess.Popen(cmd + ["--no-prepare"], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if stop_after_s is not None:
        deadline = time.time() + 120
        while not (tmp_path / "out" / path.name).exists() and time.time() < deadline:
            time.sleep(0.2)  # saved after the first cell: the kernel is running the sleeping cell
        time.sleep(stop_after_s)
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=180)
    saved = nbformat.read(tmp_path / "out" / path.name, 4)
    table = pd.read_csv(next((tmp_path / "results").glob("*/run_all_*.csv")))
    return proc.returncode, out, saved, table


def test_a_run_clears_old_outputs_and_saves_its_time(tmp_path):
    code, out, saved, table = _run(tmp_path, _notebook(tmp_path, 0))
    assert code == 0, out
    assert saved.cells[3].outputs[0]["text"] == "last\n" and "an earlier run" not in json.dumps(saved.cells)
    (row,) = table.to_dict("records")
    assert row["notebook"] == "99_chapter" and row["status"] == "ok" and row["one_time_s"] == 0
    assert row["chapter_s"] == row["seconds"] > 0 and row["profile"] == "cpu"
    assert "chapters:" in out


def test_a_stopped_run_is_saved_with_a_mark_where_it_stopped_and_nothing_of_an_earlier_run(tmp_path):
    code, out, saved, table = _run(tmp_path, _notebook(tmp_path, 60), stop_after_s=1.0)
    assert code == 1
    kinds = [c.cell_type for c in saved.cells]
    assert kinds == ["markdown", "code", "markdown", "code", "code"], kinds
    mark = saved.cells[2]
    assert "This run stopped here" in mark.source and "SIGTERM" in mark.source, mark.source
    assert saved.cells[1].outputs[0]["text"] == "first\n"
    assert saved.cells[4].outputs == [] and saved.cells[4].execution_count is None, "no earlier run's output"
    (row,) = table.to_dict("records")
    assert row["status"] == "stopped" and not row["within_budget"]
    again_code, _, again, _ = _run(tmp_path, tmp_path / "out" / "99_chapter.ipynb")
    assert again_code == 0 and [c.cell_type for c in again.cells].count("markdown") == 1, "the old mark goes"


@pytest.mark.parametrize("name", ["run_all_2026-12-03"])
def test_the_time_table_is_registered(name):
    from helpers.results import registry

    t = registry.table(name)
    assert t.keys == ("notebook", "status") and "chapter_s" in t.units


def test_the_time_table_totals_a_card_only_when_every_chapter_ran_to_its_end(monkeypatch):
    import time_table

    rows = pd.DataFrame(
        {
            "notebook": time_table.CHAPTERS,
            "card": "Card",
            "profile": "large-gpu",
            "chapter_s": 190.0,
            "one_time_s": 10.0,
            "time_budget_s": 300.0,
            "status": "ok",
            "date": "2026-12-04",
        }
    )
    monkeypatch.setattr(time_table, "latest", lambda: rows)
    n = len(time_table.CHAPTERS)
    assert n == 8, time_table.CHAPTERS
    total = time_table.render().splitlines()[-1]
    assert (
        total.startswith(f"Card (large-gpu): {n} of {n} chapters, 1520 s of their own")
        and "exceeded" in total
    )
    monkeypatch.setattr(time_table, "latest", lambda: rows.assign(chapter_s=150.0))
    assert "1200 s of their own (the workbook's budget: 1500 s, kept)" in time_table.render()
    monkeypatch.setattr(time_table, "latest", lambda: rows.assign(status=["stopped"] + ["ok"] * (n - 1)))
    stopped = time_table.render().splitlines()[-1]
    assert (
        f"no total yet: 1 not run to its end ({rows.notebook[0]})" in stopped
        and "of their own" not in stopped
    )
    monkeypatch.setattr(time_table, "latest", lambda: rows.iloc[1:])
    missing = time_table.render().splitlines()[-1]
    assert f"7 of 8 chapters, no total yet: 1 not run ({rows.notebook[0]})" in missing, missing
    assert "70 s of one-time costs" in missing, "one-time seconds summed apart"
    monkeypatch.setattr(
        time_table, "latest", lambda: rows.assign(chapter_s=[float("nan")] + [150.0] * (n - 1))
    )
    assert "| not measured |" in time_table.render(), "a chapter without its time says so, not 'nan s'"


def test_the_time_table_takes_each_chapters_last_row_per_card_and_profile():
    import time_table

    base = {"card": "Card", "one_time_s": 0.0, "time_budget_s": 300.0, "status": "ok"}
    every = pd.DataFrame(
        [
            {**base, "notebook": "01_x", "profile": "large-gpu", "chapter_s": 300.0, "date": "2026-12-03"},
            {**base, "notebook": "01_x", "profile": "large-gpu", "chapter_s": 250.0, "date": "2026-12-04"},
            {**base, "notebook": "01_x", "profile": "large-gpu", "chapter_s": 200.0, "date": "2026-12-04"},
            {**base, "notebook": "01_x", "profile": "small-gpu", "chapter_s": 800.0, "date": "2026-12-02"},
            {**base, "notebook": "prepare", "profile": "large-gpu", "chapter_s": 80.0, "date": "2026-12-05"},
        ]
    )
    got = time_table.newest(every).set_index("profile").chapter_s
    assert got.to_dict() == {"large-gpu": 200.0, "small-gpu": 800.0}, got
    # many rows of one date (a table appends each run's): an unstable sort would pick any of them
    tied = pd.concat([every.iloc[[2]], every.iloc[[1]]] * 20 + [every.iloc[[0]]], ignore_index=True)
    assert time_table.newest(tied).chapter_s.tolist() == [250.0], "of one date's rows, the last written"


def test_readme_blocks_read_only_the_shipped_tables(tmp_path):
    import readme_blocks

    for card in ("cpu", "nvidia-h200"):
        (tmp_path / card).mkdir()
        (tmp_path / card / "run_all_2026-12-04.csv").write_text("notebook\n")
    found = readme_blocks.shipped("*/run_all_*.csv", results=tmp_path)
    assert [p.parent.name for p in found] == ["nvidia-h200"], "results/cpu/ is this machine's, ignored by git"
    ignored = (ROOT / ".gitignore").read_text().split()
    assert f"/results/{readme_blocks.LOCAL_CARD}/" in ignored, "the folder left out is the one git ignores"
