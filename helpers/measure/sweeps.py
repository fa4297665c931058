"""OOM-safe sweeps (``sweeps.run``): measure many points, keep every row, never lose what was measured (every chapter).

A failure becomes a row with its ``status`` (``OOM``, ``unsupported``, ``error``), rows can be appended to a
CSV as they come, and the sweep reports how far it is ("k of N, elapsed, time left") as it goes. With ``budget_s``
(a chapter's time spent where it teaches: ``ch.sweep_seconds[name]``, see ``machine.budgets``) each point gets an
equal share of what is left; a measurement that reaches its share stops after its minimum rounds and says
``stopped_by="share"``.
"""

from __future__ import annotations

import contextlib
import re
import time
import traceback
import warnings
from collections.abc import Callable, Iterable

import pandas as pd
import torch
from IPython import get_ipython
from IPython.display import Pretty, display

from .. import results
from ..errors import WorkbookError
from ..machine.hardware import free_memory
from .protocol import time_share

OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")
NO_KERNEL_MARKERS = ("no available kernel", "no viable backend")


def is_no_kernel(exc: BaseException) -> bool:
    """True for SDPA's refusal when the pinned backend cannot take these inputs (dtype, mask, head size)."""
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in NO_KERNEL_MARKERS)


def is_oom(exc: BaseException) -> bool:
    """True for CUDA and CPU allocation failures (whatever class they arrive as)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or any(m in str(exc).lower() for m in OOM_MARKERS)
    )


_TRIGGERED = re.compile(r"\s*\(Triggered internally at .*?\)\s*$", re.S)


def _is_kernel_reason(text: str) -> bool:
    """PyTorch's SDPA explanations: "<kernel> not used because:" and the reasons that follow it, which C++ code in
    ``aten/.../transformers/sdp_utils*`` emits as UserWarnings (each ending "(Triggered internally at ...)")."""
    return "not used because" in text or ("Triggered internally at" in text and "sdp_utils" in text)


def kernel_reasons(messages: list[str]) -> list[str]:
    """Join each "<kernel> not used because:" with the reasons PyTorch emits after it, as separate warnings:
    ``["Flash attention kernel not used because: Flash attention requires q,k,v to have the same last
    dimension. ..."]`` (the source locations dropped)."""
    out: list[str] = []
    for m in messages:
        m = " ".join(_TRIGGERED.sub("", m).split())
        if out and out[-1].endswith("because:"):
            out[-1] += " " + m
        elif out and "not used because:" in out[-1] and "not used because" not in m:
            out[-1] += "; " + m
        else:
            out.append(m)
    return out


# the kernel each pinned SDPA path asks for, as PyTorch names it in "<kernel> kernel not used because:"
PINNED_KERNEL = {
    "sdpa-flash": "Flash attention",
    "sdpa-efficient": "Memory efficient",
    "sdpa-cudnn": "cuDNN attention",
}
_KERNEL_HEADER = re.compile(r"; (?=[\w ]+ kernel not used because:)")


def unsupported_reason(attention: str, error, limit: int = 300) -> str:
    """Why ``attention`` was unsupported, from a sweep row's ``error``: for a pinned SDPA path the reason of the
    kernel it pins (SDPA lists every kernel's, the disabled ones too, in an order and capitalisation that vary by
    version: "cuDNN" in 2.11, "CuDNN" before), otherwise the whole text; shortened to ``limit`` characters with an
    ellipsis, "" when there is none."""
    text = error.removeprefix("No available kernel: ") if isinstance(error, str) else ""
    kernel = PINNED_KERNEL.get(attention)
    parts = [
        t
        for t in _KERNEL_HEADER.split(text)
        if kernel and t.lower().startswith(f"{kernel} kernel not used".lower())
    ]
    text = (parts or [text])[0]
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@contextlib.contextmanager
def _kernel_reasons():
    """Collect PyTorch's warnings that say why an SDPA kernel was not used (the reasons behind "No available
    kernel"); every other warning is passed on, once each, as Python's default filter would."""
    reasons: list[str] = []
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            try:
                yield reasons
            finally:
                caught = list(record)
                reasons += kernel_reasons(
                    [str(w.message) for w in caught if _is_kernel_reason(str(w.message))]
                )
    finally:
        for w in caught:
            key = (w.category, str(w.message))
            if key not in _SHOWN and not _is_kernel_reason(key[1]):
                _SHOWN.add(key)
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)


_SHOWN: set = set()


def run(
    points: Iterable[dict],
    measure_one: Callable[[dict], dict],
    *,
    rows: list | None = None,
    on_row: Callable[[dict], None] | None = None,
    save_to=None,
    show_progress: bool = True,
    budget_s: float | None = None,
) -> pd.DataFrame:
    """Measure each point; a failure becomes a row, never the end of the sweep.

    Every row has ``status``: ``ok``, ``OOM`` (memory freed, the sweep goes on), ``unsupported``
    (a ``WorkbookError``, or SDPA's "No available kernel" for a pinned backend: the option cannot run
    these inputs here) or ``error`` (with the exception text).
    Rows are appended to ``rows`` (pass your own list to keep them even if you interrupt the
    kernel), handed to ``on_row`` (e.g. a live plot) and, with ``save_to``, appended to that CSV
    as they come. ``show_progress``: one line under the cell, "k of N, elapsed, time left", kept when done.
    ``budget_s``: the sweep's seconds; each point's share (``time_share_s`` in its row) is what is left over the
    points left, so a point that overran takes from the later ones, never below their minimum rounds.
    """
    rows = [] if rows is None else rows
    points = list(points)
    if budget_s is not None and not budget_s > 0:
        raise WorkbookError(
            f"budget_s={budget_s!r}.", "Give the sweep a positive number of seconds, or None."
        )
    progress = Progress(len(points), show=show_progress, budget_s=budget_s)
    for i, point in enumerate(points):
        t0 = time.perf_counter()
        share = None if budget_s is None else max(0.0, budget_s - progress.elapsed()) / (len(points) - i)
        try:
            with _kernel_reasons() as reasons, time_share(share):
                row = {**point, **measure_one(dict(point)), "status": "ok", "error": ""}
        except WorkbookError as e:
            row = {**point, "status": "unsupported", "error": str(e)}
        except Exception as e:  # noqa: BLE001 - recorded in the row, the sweep goes on
            if is_oom(e):
                row = {**point, "status": "OOM", "error": str(e).splitlines()[0][:300]}
            elif is_no_kernel(e):
                why = "; ".join(dict.fromkeys(reasons))[:600]
                row = {
                    **point,
                    "status": "unsupported",
                    "error": "No available kernel: " + (why or str(e).splitlines()[0][:300]),
                }
            else:
                row = {
                    **point,
                    "status": "error",
                    "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}",
                    "traceback": traceback.format_exc(limit=3),
                }
            del e
            free_memory()
        row["wall_s"] = time.perf_counter() - t0
        if share is not None:
            row["time_share_s"] = share
        rows.append(row)
        progress.step(row["status"])
        if save_to is not None:
            results.append_row(save_to, row)
        if on_row is not None:
            try:
                on_row(row)
            except Exception as e:  # noqa: BLE001 - a plotting error must not lose a measurement
                warnings.warn(f"on_row failed ({type(e).__name__}: {e}); the row is kept", stacklevel=2)
    return pd.DataFrame(rows)


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s // 60:.0f} min {s % 60:02.0f} s"


class Progress:
    """One line that says how far a sweep is: ``3 of 12 points, 41 s elapsed, about 2 min 3 s left (3 ok)``.

    In a notebook the line is updated in place (a display id) and its last state stays in the saved notebook;
    elsewhere ``text()`` gives it (a control panel shows it in its status line).
    """

    def __init__(self, total: int, show: bool = True, budget_s: float | None = None):
        self.total, self.done, self.t0, self.budget_s = total, 0, time.perf_counter(), budget_s
        self.statuses: dict[str, int] = {}
        self.handle = None
        if show and total:
            if get_ipython() is not None:  # only inside a kernel: plain scripts show nothing
                self.handle = display(Pretty(self.text()), display_id=True)

    def step(self, status: str = "ok") -> str:
        self.done += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        line = self.text()
        if self.handle is not None:
            self.handle.update(Pretty(line))
        return line

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def text(self) -> str:
        elapsed = self.elapsed()
        counts = ", ".join(f"{n} {k}" for k, n in self.statuses.items())
        budget = "" if self.budget_s is None else f" of its {_duration(self.budget_s)} budget"
        if self.done >= self.total:
            return f"done: {self.total} of {self.total} points in {_duration(elapsed)}{budget} ({counts})"
        left = (
            f", about {_duration(elapsed / self.done * (self.total - self.done))} left" if self.done else ""
        )
        return f"{self.done} of {self.total} points, {_duration(elapsed)} elapsed{budget}{left}" + (
            f" ({counts})" if counts else ""
        )
