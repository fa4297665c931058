"""A real JupyterLab on localhost, driven by headless Chromium through Playwright (issue: used as people use it).

``JupyterLab`` starts the server on a copy of the workbook (notebooks, helpers, shipped results) so that
autosave never touches the repository. ``LabPage`` does what a person does: open a notebook, Run > Run All
Cells, wait, save; pick options in a control panel and press its Run button.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def system_browser() -> str:
    """The system's Chromium (Playwright's own browser download is not used)."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError(
        "No Chromium found for the browser tests. Fix: install Debian's package "
        "(`apt-get install chromium`; .ci/run does this), or set WORKBOOK_BROWSER_TESTS=0 to skip them."
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """``with JupyterLab(tmp) as lab:`` a server on ``lab.url`` serving a copy of the workbook in ``lab.root``."""

    def __init__(self, workdir: Path):
        self.root = workdir / "workbook"
        for part in ("notebooks", "helpers", "results"):
            shutil.copytree(
                ROOT / part, self.root / part, ignore=shutil.ignore_patterns("cpu", "__pycache__")
            )
        settings = workdir / "lab-settings"
        for plugin, values in {
            "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
            "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        }.items():
            path = settings / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        self.token, self.port = secrets.token_hex(16), _free_port()
        self.env = {
            **os.environ,
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "WORKBOOK_PROFILE": "cpu",
            "JUPYTERLAB_WORKSPACES_DIR": str(workdir / "workspaces"),
        }
        self.log = workdir / "lab.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> JupyterLab:
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--port={self.port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--allow-root",
        ]
        # Import the heavy packages once first: on a fresh environment this writes their bytecode, so the
        # first notebook's kernel starts as fast as the others.
        subprocess.run(
            [sys.executable, "-c", "import torch, transformers, plotly, ipywidgets, ipykernel, helpers"],
            cwd=self.root,
            env=self.env,
            check=True,
            timeout=600,
        )
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not start in 90 s: {self.log.read_text()[-2000:]}")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# JavaScript run in the page.
_ALL_RAN = """() => {
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
  if (!cells.length) return false;
  const prompts = cells.map(c => (c.querySelector('.jp-InputPrompt') || {}).textContent || '');
  if (prompts.some(p => p.includes('*'))) return false;
  const busy = document.querySelector('.jp-Notebook-ExecutionIndicator[data-status="busy"]');
  const ran = p => /\\[\\d+\\]/.test(p);
  if (busy) return false;
  return prompts.every(ran) ? 'done' : (prompts.some(ran) ? 'stopped' : false);
}"""

_POINTS = """el => (el.data || []).reduce((n, t) => n + ((t.x || []).length), 0)"""


class LabPage:
    """One notebook open in the page, driven like a person would."""

    def __init__(self, page, lab: JupyterLab, notebook: str):
        self.page, self.lab, self.notebook = page, lab, notebook

    def open(self) -> LabPage:
        self.page.goto(f"{self.lab.url}/lab/tree/notebooks/{self.notebook}?reset&token={self.lab.token}")
        self.page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
        self.page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=120_000)
        self._wait_kernel_idle(120)
        return self

    def kernel_state(self) -> str:
        """The execution state the server reports for this notebook's kernel ('idle', 'busy', 'starting', ...)."""
        url = f"{self.lab.url}/api/sessions?token={self.lab.token}"
        with urllib.request.urlopen(url, timeout=10) as response:
            sessions = json.load(response)
        for s in sessions:
            if s.get("path", "").endswith(self.notebook):
                return (s.get("kernel") or {}).get("execution_state", "none")
        return "no session"

    def _wait_kernel_idle(self, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.kernel_state() == "idle":
                return
            time.sleep(1)
        raise TimeoutError(
            f"{self.notebook}: the kernel is {self.kernel_state()!r}, not idle, after {timeout_s:.0f} s"
        )

    def _menu(self, menu: str, command: str) -> None:
        self.page.locator("div.lm-MenuBar-itemLabel", has_text=menu).first.click()
        self.page.locator(f"li[data-command='{command}']").click()

    def run_all(self, timeout_s: float = 600, start_s: float = 60) -> str:
        """Edit > Clear Outputs of All Cells, then Run > Run All Cells; wait until every cell ran ('done') or
        the run stopped at an error ('stopped'). If no cell has started after ``start_s`` seconds (the request
        went to a kernel that was not listening yet), Run All is pressed once more."""
        self._menu("Edit", "editmenu:clear-all")
        self.page.wait_for_function(
            "() => ![...document.querySelectorAll('.jp-InputPrompt')].some(p => /\\d/.test(p.textContent))",
            timeout=30_000,
        )
        self._menu("Run", "runmenu:run-all")
        self.page.wait_for_timeout(2000)
        started, retried = time.time(), False
        deadline = started + timeout_s
        stable = 0
        while time.time() < deadline:
            state = self.page.evaluate(_ALL_RAN)
            stable = stable + 1 if state else 0
            if stable >= 3:  # the same answer three polls in a row: the kernel has really settled
                return state
            if (
                not retried
                and time.time() - started > start_s
                and not any(re.search(r"\[(\d+|\*)\]", p) for p in self.prompts())
            ):
                retried = True
                self._menu("Run", "runmenu:run-all")
            self.page.wait_for_timeout(1000)
        raise TimeoutError(
            f"{self.notebook}: cells still running after {timeout_s:.0f} s. {self.diagnosis()}"
        )

    def prompts(self) -> list[str]:
        """The input prompt of every code cell: '[ ]:' (never ran), '[*]:' (running or queued), '[3]:' (ran)."""
        return self.page.evaluate(
            "() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')]"
            ".map(c => ((c.querySelector('.jp-InputPrompt') || {}).textContent || '').trim())"
        )

    def diagnosis(self) -> str:
        """What a failed wait saw: prompts, kernel state, the first unfinished cell's code, the server log's tail;
        a screenshot goes next to the others."""
        shots = ROOT / "test-artifacts" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(shots / f"{self.notebook[:-6]}-stuck.png"))
        prompts = self.prompts()
        stuck = next((i for i, p in enumerate(prompts) if not re.search(r"\[\d+\]", p)), None)
        source = ""
        if stuck is not None:
            source = self.page.evaluate(
                "i => document.querySelectorAll('.jp-Notebook .jp-CodeCell')[i]"
                ".querySelector('.jp-InputArea-editor').innerText",
                stuck,
            )[:300]
        log = self.lab.log.read_text(errors="replace")[-1500:] if self.lab.log.exists() else ""
        return (
            f"prompts={prompts}; kernel={self.kernel_state()!r}; first unfinished code cell {stuck}: "
            f"{source!r}; server log tail: {log}"
        )

    def save(self) -> Path:
        self.page.keyboard.press("Control+s")
        self.page.wait_for_timeout(1500)
        return self.lab.root / "notebooks" / self.notebook

    def panel(self, title: str):
        """The control panel whose bold title contains ``title``."""
        return self.page.locator(".widget-vbox").filter(has=self.page.locator("b", has_text=title)).last

    def choose(self, panel, control: str, label: str) -> None:
        """Pick ``label`` in the dropdown named ``control`` (or tick/untick a checkbox with label 'true'/'false')."""
        dropdown = panel.locator(".widget-dropdown").filter(has=self.page.locator("label", has_text=control))
        if dropdown.count():
            dropdown.first.locator("select").select_option(label=label)
        else:
            box = panel.locator(".widget-checkbox").filter(has_text=control).first
            box.locator("input[type=checkbox]").set_checked(label == "true")

    def press_run(self, panel, timeout_s: float = 180) -> str:
        """Press the panel's Run button; return the status text once the run has finished."""
        status = panel.locator(".widget-html").nth(1)
        panel.locator("button", has_text="Run").click()
        self.page.wait_for_timeout(500)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            text = status.inner_text()
            if text and not text.startswith("running"):
                return text
            self.page.wait_for_timeout(500)
        raise TimeoutError(f"{self.notebook}: the panel still runs after {timeout_s:.0f} s")

    def plotted_points(self, panel, more_than: int | None = None, timeout_s: float = 20) -> int:
        """Points drawn in the panel's plot; with ``more_than``, wait (up to ``timeout_s``) until there are more:
        the status line can say "done" a moment before plotly has redrawn the figure on a busy machine."""
        plots = panel.locator(".js-plotly-plot")
        deadline = time.time() + timeout_s
        while True:
            count = sum(plots.nth(i).evaluate(_POINTS) for i in range(plots.count()))
            if more_than is None or count > more_than or time.time() > deadline:
                return count
            self.page.wait_for_timeout(500)
