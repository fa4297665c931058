"""A stand-in for Colab's runtime, to run the notebooks' Colab set-up cell and then a whole notebook.

``COLAB`` is what the simulation installs: Colab's published versions of what the workbook uses (transformers 5.15,
peft 0.20, plotly 5.24, ipywidgets 7.7.1, no bitsandbytes), and Colab's kernel (IPython 7.34.0 and ipykernel 5.5.6,
the versions the ``google-colab`` package requires, with the classic notebook 6.5 and jupyter-client 7 beside
them). One is a stand-in: torch is this machine's CPU build 2.13.0 (a file on local disk), the closest to Colab's
2.11 that runs without a GPU; PyPI's torch 2.11 for Linux is a CUDA build of several GB. The set-up cell must keep
whatever torch it finds, so the stand-in tests that just as well.

The kernel imports a stub ``google.colab`` before it starts, as Colab's kernel has the real one loaded: the set-up
cell tests exactly ``"google.colab" in sys.modules``. It runs with no ``PYTHONPATH``, so the workbook is importable
only if the cell installed it.

The base environment is built once into ``.colab-sim/base`` (git-ignored; rebuilt when ``COLAB`` changes); each
run gets an empty environment layered over it (``.colab-sim/run``), so what a run installs never reaches the base
and every run starts from Colab's state. By hand, ``python -m tests.colab_sim.simulated 03`` runs notebook 03
there and saves the executed copy under ``test-artifacts/colab/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import colab  # noqa: E402  (tools/colab.py: the set-up cell)

CACHE = ROOT / ".colab-sim"
COLAB = [
    "torch==2.13.0",  # stand-in: the CPU build on local disk (Colab: 2.11 with CUDA)
    "transformers==5.15.*",
    "peft==0.20.*",
    "plotly==5.24.*",
    "ipywidgets==7.7.1",
    "ipython==7.34.0",
    "ipykernel==5.5.6",
    "jupyter-client<8",
    "notebook==6.5.*",
    "pandas==2.2.*",
    "numpy==2.0.*",
]
KERNEL = "colab-simulated"
LAUNCH = "import google.colab; from ipykernel.kernelapp import launch_new_instance; launch_new_instance()"
STUB = '"""A stand-in for Colab\'s own module: its presence is what tells a notebook it runs on Colab."""\n'


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def base() -> Path:
    """Colab's packages in a virtual environment, built once (a few minutes) and reused while ``COLAB`` holds."""
    venv, stamp = CACHE / "base", hashlib.sha256("\n".join([sys.version, *COLAB]).encode()).hexdigest()
    if (venv / ".colab-sim").is_file() and (venv / ".colab-sim").read_text() == stamp:
        return venv
    building = CACHE / "base.building"
    shutil.rmtree(building, ignore_errors=True)
    shutil.rmtree(venv, ignore_errors=True)
    python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([python, "-m", "venv", str(building)], check=True)
    done = subprocess.run(
        [str(_python(building)), "-m", "pip", "install", "--quiet", *COLAB], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"installing Colab's packages failed:\n{done.stderr[-4000:]}")
    stub = site_packages(building) / "google" / "colab"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(STUB)
    (building / ".colab-sim").write_text(stamp)
    building.rename(venv)
    return venv


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3.*/site-packages"))


def fresh() -> Path:
    """A run's own environment over the base: an empty virtual environment that sees the base's packages through a
    .pth file, as a ``--system-site-packages`` one sees the system's. pip installs into it (shadowing the base's
    older copies, which it leaves alone), so every run starts from Colab's state in seconds."""
    run, colab_site = CACHE / "run", site_packages(base())
    shutil.rmtree(run, ignore_errors=True)
    python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([python, "-m", "venv", "--without-pip", str(run)], check=True)
    (site_packages(run) / "colab-base.pth").write_text(f"{colab_site}\n")
    return run


def kernelspec(venv: Path, where: Path) -> Path:
    """A kernelspec for ``venv``'s Python with ``google.colab`` imported first; returns the ``JUPYTER_PATH`` entry."""
    spec = where / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    argv = [str(_python(venv)), "-c", LAUNCH, "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3 (simulated Colab)", "language": "python"})
    )
    return where


def installed(venv: Path, name: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({name!r}))"
    return subprocess.run(
        [str(_python(venv)), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def run(notebook: Path, workdir: Path, source: str = str(ROOT), again: bool = False, timeout: int = 1800):
    """Execute ``notebook`` on simulated Colab from ``workdir`` (Colab's /content) with its set-up cell's ``SOURCE``
    set to ``source``; ``again`` runs the set-up cell once more at the end. Returns (executed notebook, venv)."""
    import nbformat  # the test environment's, not Colab's: they drive the kernel from outside
    from nbclient import NotebookClient

    venv = fresh()
    nb = nbformat.read(notebook, as_version=4)
    setup = next(c for c in nb.cells if c.cell_type == "code")
    setup.source = colab.with_source(setup.source, source)  # what a reader sets before running it on Colab
    if again:
        nb.cells.append(nbformat.v4.new_code_cell(setup.source))
    content = workdir / "content"
    content.mkdir(parents=True, exist_ok=True)
    saved = dict(os.environ)
    os.environ["JUPYTER_PATH"] = str(kernelspec(venv, workdir / "jupyter"))
    os.environ.pop("PYTHONPATH", None)  # the kernel sees Colab's packages and nothing of this checkout
    os.environ.pop("VIRTUAL_ENV", None)
    try:
        client = NotebookClient(
            nb, timeout=timeout, kernel_name=KERNEL, resources={"metadata": {"path": str(content)}}
        )
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb, venv


if __name__ == "__main__":
    import nbformat  # the test environment's

    names = sys.argv[1:] or ["00"]
    out = ROOT / "test-artifacts" / "colab"
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = next((ROOT / "notebooks").glob(f"{name}*.ipynb"))
        t0 = time.perf_counter()
        nb, _ = run(path, out / "work")
        seconds = time.perf_counter() - t0
        nbformat.write(nb, out / path.name)
        print(f"{path.name}: ran on simulated Colab in {seconds:.0f} s -> {out / path.name}")
