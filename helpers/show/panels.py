"""Control panels: pick options, press Run, watch the plot fill in (every notebook has one).

The callback never raises into the kernel: a ``WorkbookError`` shows its problem and fix in the
panel, an out-of-memory error says so, anything else shows its type and message. ``panel.click()``
presses Run exactly as a person does, so executed notebooks and tests use the same path.

Only what ipywidgets 7.7 and 8 share is used: Colab's page draws ipywidgets 7 widgets, so on Colab the workbook
keeps its 7.7.1 (tools/colab_setup.py), and tests/colab_sim runs notebook 00's panel on it.
"""

from __future__ import annotations

import html
import traceback
from collections.abc import Callable, Iterable, Sequence

import ipywidgets as W
from IPython.display import display

from ..errors import WorkbookError
from ..machine.hardware import free_memory
from ..measure.sweeps import is_oom
from .live import LivePlot


class ControlPanel:
    """Dropdowns (or checkboxes, for booleans) for ``controls``, a Run button, a status line, a plot.

    Options are values, or ``(label, value)`` pairs where a value needs a readable name
    (``("natural", None)``).

    ``run(params)`` returns a result row (dict) or yields rows one by one; each, with the options
    merged in, is added to ``plot`` as it arrives and kept in ``self.rows``. ``report(rows)``, if given,
    turns the rows of one run into the status line (plain text), e.g. a recommendation and its reason.
    """

    def __init__(
        self,
        controls: dict[str, Sequence],
        run: Callable[[dict], dict | Iterable[dict]],
        *,
        plot: LivePlot | None = None,
        defaults: dict | None = None,
        title: str = "",
        report: Callable[[list[dict]], str] | None = None,
    ):
        defaults = defaults or {}
        self.run = run
        self.report = report
        self.plot = plot
        self.rows: list[dict] = []
        self.errors: list[str] = []
        self.controls: dict[str, W.ValueWidget] = {}
        self.choices: dict[str, list] = {}
        for name, options in controls.items():
            pairs = [o if isinstance(o, tuple) else (str(o), o) for o in options]
            values = [v for _, v in pairs]
            value = defaults.get(name, values[0])
            self.choices[name] = values
            if set(map(type, values)) == {bool}:
                w = W.Checkbox(value=bool(value), description=name, indent=False)
            else:  # the widget holds positions, so any value (None included) can be offered
                w = W.Dropdown(
                    options=[(label, i) for i, (label, _) in enumerate(pairs)],
                    value=self._index(name, value),
                    description=name,
                    style={"description_width": "initial"},
                    layout=W.Layout(width="auto"),
                )
            self.controls[name] = w
        self.button = W.Button(description="Run", button_style="primary", icon="play")
        self.status = W.HTML(value="<i>Choose options and press Run.</i>")
        self.output = W.Output()
        self.button.on_click(lambda _b: self._run_safely())
        if plot is not None:
            plot.attach(self.output)
        header = [W.HTML(f"<b>{html.escape(title)}</b>")] if title else []
        self.box = W.VBox(
            header
            + [
                W.HBox(list(self.controls.values()), layout=W.Layout(flex_flow="row wrap")),
                W.HBox([self.button, self.status]),
                self.output,
            ]
        )

    def values(self) -> dict:
        """The options as currently set."""
        return {
            name: w.value if isinstance(w, W.Checkbox) else self.choices[name][w.value]
            for name, w in self.controls.items()
        }

    def _index(self, name: str, value) -> int:
        for i, v in enumerate(self.choices[name]):
            if v is value or (type(v) is type(value) and v == value):
                return i
        raise ValueError(f"{name}={value!r} is not offered; choose one of {self.choices[name]}")

    def set(self, **values) -> ControlPanel:
        """Set options as a person would pick them (raises for a value the control does not offer)."""
        for name, v in values.items():
            w = self.controls[name]
            w.value = v if isinstance(w, W.Checkbox) else self._index(name, v)
        return self

    def click(self) -> None:
        """Press Run."""
        self.button.click()

    @property
    def last_error(self) -> str | None:
        return self.errors[-1] if self.errors else None

    def _show(self, text: str, color: str) -> None:
        self.status.value = f"<span style='color:{color}'>{text}</span>"

    def _run_safely(self) -> None:
        params = self.values()
        self.button.disabled = True
        self._show(
            "running " + html.escape(", ".join(f"{k}={v}" for k, v in params.items())) + " ...", "gray"
        )
        added = 0
        try:
            result = self.run(params)
            for row in [result] if isinstance(result, dict) else result:
                row = {**params, **row}  # every row carries the options it was measured with
                self.rows.append(row)
                added += 1
                if self.plot is not None:
                    self.plot.add(row)
                if row.get("status", "ok") != "ok":
                    self.errors.append(f"{row['status']}: {row.get('error', '')}")
            bad = [r for r in self.rows[-added:] if r.get("status", "ok") != "ok"] if added else []
            msg = f"done: {added} point(s)" + (
                f", {len(bad)} not measured ({bad[-1]['status']})" if bad else ""
            )
            if self.report is not None:
                msg = self.report(self.rows[len(self.rows) - added :])
            self._show(html.escape(msg), "darkorange" if bad else "green")
        except WorkbookError as e:
            self.errors.append(str(e))
            self._show(f"<b>{html.escape(e.problem)}</b><br>Fix: {html.escape(e.fix)}", "crimson")
        except Exception as e:  # noqa: BLE001 - shown in the panel, never fatal to the kernel
            free_memory()
            kind = "Out of memory" if is_oom(e) else type(e).__name__
            self.errors.append(f"{kind}: {e}")
            tb = html.escape(traceback.format_exc(limit=4))
            self._show(
                f"<b>{kind}</b>: {html.escape(str(e).splitlines()[0] if str(e) else '')}"
                f"<details><summary>traceback</summary><pre>{tb}</pre></details>",
                "crimson",
            )
        finally:
            self.button.disabled = False

    def _ipython_display_(self):

        display(self.box)
