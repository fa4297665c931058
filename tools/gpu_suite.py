"""Run the whole unit suite on a GPU machine and keep its log: ``results/<card>/unit_suite_<date>.log``.

    python tools/gpu_suite.py [--log PATH] [pytest options]   # a GPU machine (with the offline bundle: python3)
    ./workbook test --gpu [same options]                      # the same, after the workbook's set-up

Every test of ``tests/`` runs, those marked ``gpu`` included (on a CPU they are skipped, with the reason). The
browser and simulated-Colab tests stay with the CPU run: they need Chromium and the package index, not a GPU, and
are listed as skips with that reason. The log begins with the commit, the card and the versions and ends with
pytest's summary, every skip with its reason; the command exits with pytest's status. It refuses to start where no
CUDA GPU is visible, since the ``gpu`` tests would then only be skipped. About 5 minutes on an H200, most of it
the memory test's 20 loads of the 7B architecture (``tests/test_gpu_memory.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from helpers import results
from helpers.machine import hardware

ROOT = Path(__file__).resolve().parent.parent


def commit() -> str:
    """``$WORKBOOK_COMMIT`` where set (a copy sent to another machine can carry git metadata of another commit),
    else the commit git reports, with ``+changes`` if the tree differs from it."""
    if os.environ.get("WORKBOOK_COMMIT"):
        return os.environ["WORKBOOK_COMMIT"] + " (WORKBOOK_COMMIT)"
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return head + (" +changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git here; set WORKBOOK_COMMIT)"


def header() -> list[str]:
    info = hardware.device_info()
    versions = ", ".join(f"{k} {v}" for k, v in hardware.versions().items())
    return [
        f"# unit suite on {info.name} ({hardware.card_slug(info)}), {dt.datetime.now():%Y-%m-%d %H:%M}",
        f"# commit {commit()}",
        f"# {versions}",
        "# host: " + ", ".join(f"{k} {v}" for k, v in hardware.host_info().items() if v is not None),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--log", type=Path, help="where the log goes (default results/<card>/unit_suite_<date>.log)"
    )
    args, pytest_args = parser.parse_known_args(argv)
    if not torch.cuda.is_available():
        print(
            "gpu_suite: no CUDA GPU is visible here, so the gpu tests would only be skipped.\n"
            "Fix: run it on a machine with an NVIDIA GPU; on this one, ./workbook test runs the CPU suite.",
            file=sys.stderr,
        )
        return 2
    log = args.log or results.results_dir() / hardware.card_slug() / f"unit_suite_{dt.date.today()}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WORKBOOK_BROWSER_TESTS": "0", "WORKBOOK_COLAB_TESTS": "0", "PYTHONUNBUFFERED": "1"}
    env.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    cmd = [sys.executable, "-m", "pytest", "tests", "-rfEs", "--durations=15", *pytest_args]
    t0 = time.perf_counter()
    with log.open("w") as out:
        for line in header() + [f"# {' '.join(cmd[1:])}", ""]:
            print(line)
            out.write(line + "\n")
        out.flush()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for line in proc.stdout:  # every line is in the log as it comes: a stopped run keeps what it printed
            sys.stdout.write(line)
            out.write(line)
            out.flush()
        code = proc.wait()
        out.write(f"\n# exit status {code}, {time.perf_counter() - t0:.0f} s\n")
    print(f"gpu_suite: exit status {code} in {time.perf_counter() - t0:.0f} s; log: {log}")
    return code


if __name__ == "__main__":
    sys.exit(main())
