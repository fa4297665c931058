"""Live plots: a plotly figure that gains a point as each measurement finishes (every notebook).

``LivePlot.show()`` displays the figure with a display id and ``add(row)`` redraws it in place,
so in JupyterLab, Colab or VS Code the reader watches the sweep fill in, and a notebook executed
without a front end keeps the last state as an ordinary static figure. Inside a control panel the
plot draws into the panel's output area instead. Failed points (OOM, unsupported) are drawn as
crosses on the x axis with their status, so a gap is never silent.
"""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from IPython.display import display
from plotly.subplots import make_subplots

from ..results.prose import how_measured
from .charts import finite, log_ticks, tick_text


class LivePlot:
    """A figure of ``y`` against ``x``, one line per value of ``color`` (a column or a list of columns).

    ``ceiling``: an optional (value, label) horizontal line, e.g. the card's speed of light.
    ``sol=True``: beside each line, a dashed line of what the card could do for the same points (its
    speed of light: bytes over bandwidth for decode, FLOPs over peak for prefill and forward passes),
    and each point labelled with the fraction it reached. Needs rows measured with ``sol=`` (they carry
    ``sol_fraction_bandwidth`` or ``sol_fraction_compute``; see ``workload.against_sol``). The dashed line
    takes its series' colour and legend entry; the fraction labels every point of a panel of at most four
    lines, and goes to the hover text beyond that, where labels would pile up.
    ``facet``: one panel per value of this column, side by side on one y axis (e.g. a panel per weight format
    for a grid of many lines); a line's colour means the same in every panel.
    """

    def __init__(
        self,
        x: str,
        y: str,
        color: str | list[str] | None = None,
        *,
        title: str = "",
        log_x: bool = False,
        log_y: bool = False,
        ceiling: tuple[float, str] | None = None,
        height: int = 420,
        sol: bool = False,
        facet: str | None = None,
    ):
        self.x, self.y, self.color, self.sol, self.facet = x, y, color, sol, facet
        self.title, self.log_x, self.log_y, self.ceiling, self.height = title, log_x, log_y, ceiling, height
        self.rows: list[dict] = []
        self._handle = None
        self._output = None

    # ---- data in
    def add(self, row: dict) -> None:
        """Add one measured row (failed rows too) and redraw."""
        self.rows.append(dict(row))
        self._redraw()

    def extend(self, rows) -> None:
        self.rows.extend(
            dict(r) for r in (rows.to_dict("records") if isinstance(rows, pd.DataFrame) else rows)
        )
        self._redraw()

    # ---- figure out
    def _label(self, row: dict) -> str:
        if self.color is None:
            return self.y
        cols = [self.color] if isinstance(self.color, str) else self.color
        return " / ".join(str(row.get(c)) for c in cols)

    def figure(self) -> go.Figure:
        """The current state as a plain ``go.Figure``: one line per label (bars when ``x`` is a name,
        e.g. an attention path), and a red cross per x where some point was not measured."""
        panels = list(dict.fromkeys(r.get(self.facet) for r in self.rows)) if self.facet else [None]
        if self.facet:
            fig = make_subplots(
                rows=1,
                cols=max(len(panels), 1),
                shared_yaxes=True,
                horizontal_spacing=0.03,
                subplot_titles=[f"{self.facet}={v}" for v in panels],
            )
        else:
            fig = go.Figure()
        labels = list(dict.fromkeys(self._label(r) for r in self.rows))
        palette = px.colors.qualitative.Plotly if len(labels) <= 10 else px.colors.qualitative.Dark24
        colors = {label: palette[i % len(palette)] for i, label in enumerate(labels)}
        categorical = any(isinstance(r.get(self.x), str) for r in self.rows)
        shown: set[str] = set()
        ys = [r[self.y] for r in self.rows if r.get("status", "ok") == "ok" and finite(r.get(self.y))]
        floor = (min(ys) * 0.8 if ys else 1) if self.log_y else 0  # where crosses for points not measured sit
        failed = Counter(
            f"{self._label(r)} {r.get('status')}" for r in self.rows if r.get("status", "ok") != "ok"
        )
        missing = "not measured: " + ", ".join(f"{k} (x{n})" for k, n in failed.items())
        missing = missing if len(missing) <= 100 else missing[:99] + "…"
        for col, panel in enumerate(panels, start=1):
            rows = [r for r in self.rows if not self.facet or r.get(self.facet) == panel]
            where = dict(row=1, col=col) if self.facet else {}
            self._draw_panel(
                fig, rows, labels, colors, categorical, shown, where, floor, len(panels) > 2, missing
            )
        if self.ceiling:
            fig.add_hline(y=self.ceiling[0], line_dash="dash", annotation_text=self.ceiling[1])
        fig.update_layout(
            title=self.title or f"{self.y} vs {self.x}",
            height=self.height,
            template="plotly_white",
            legend_title_text=_legend(self.color),
            barmode="group",
        )
        if self.facet:  # the legend below the panels, so that they keep the figure's width
            fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.25, x=0), margin=dict(b=120))
        fig.update_xaxes(title_text=self.x)
        fig.update_yaxes(title_text=self.y, **({"col": 1} if self.facet else {}))
        if categorical:
            fig.update_xaxes(
                type="category",
                categoryorder="array",
                categoryarray=list(dict.fromkeys(r[self.x] for r in self.rows)),
            )
        if self.log_x:
            xs = sorted({float(r[self.x]) for r in self.rows if finite(r.get(self.x)) and r[self.x] > 0})
            # a few swept values (batch sizes 1, 4, 16): ticks at exactly those; else 1-2-5 in each decade
            ticks = dict(tickvals=xs, ticktext=[tick_text(x) for x in xs]) if len(xs) <= 10 else log_ticks(xs)
            fig.update_xaxes(type="log", **ticks)
        if self.log_y:
            ys = [r.get(self.y) for r in self.rows]
            if self.sol:
                ys += [sol_limit(r, self.y) for r in self.rows]
            fig.update_yaxes(type="log", **log_ticks(ys))
        return fig

    def _draw_panel(
        self, fig, rows, labels, colors, categorical, shown, where, floor, narrow, missing
    ) -> None:
        """The traces of one panel (the whole figure without ``facet``); ``narrow``: one of three or more, whose
        crosses name what was not measured in the legend (``missing``) instead of beside them."""
        ok = [r for r in rows if r.get("status", "ok") == "ok" and finite(r.get(self.y))]
        bad = [r for r in rows if r.get("status", "ok") != "ok"]
        drawn = [label for label in labels if any(self._label(r) == label for r in ok)]
        limits = {label: self._limits([r for r in ok if self._label(r) == label]) for label in drawn}
        sharing = Counter(tuple(v) for v in limits.values() if v)  # paths doing the same work share one limit
        drawn_limits: set[tuple] = set()
        for i, label in enumerate(drawn):
            pts = [r for r in ok if self._label(r) == label]
            first = label not in shown
            shown.add(label)
            style = dict(name=label, legendgroup=label, showlegend=first)
            if categorical:
                fig.add_trace(
                    go.Bar(
                        x=[r[self.x] for r in pts],
                        y=[r[self.y] for r in pts],
                        text=[f"{r[self.y]:.3g}" for r in pts],
                        textposition="outside",
                        marker_color=colors[label],
                        **style,
                    ),
                    **where,
                )
                continue
            pts.sort(key=lambda r: r[self.x])
            fractions = [sol_fraction(r, self.y) for r in pts] if self.sol else []
            shares = [f"{f:.0%}" if f else "" for f in fractions]
            labelled = any(fractions) and len(drawn) <= 4  # more lines: labels would pile up; hover has them
            fig.add_trace(
                go.Scatter(
                    x=[r[self.x] for r in pts],
                    y=[r[self.y] for r in pts],
                    mode="lines+markers+text" if labelled else "lines+markers",
                    text=shares if labelled else None,
                    hovertext=[
                        "<br>".join(
                            filter(
                                None, [f"{label}: {s} of the speed of light" if s else label, how_measured(r)]
                            )
                        )
                        for s, r in zip(shares or [""] * len(pts), pts)
                    ],
                    textposition="top center" if i % 2 == 0 else "bottom center",  # neighbours alternate
                    cliponaxis=False,
                    line_color=colors[label],
                    **style,
                ),
                **where,
            )
            own = limits[label]
            if own and (sharing[tuple(own)] == 1 or tuple(own) not in drawn_limits):
                shared = sharing[tuple(own)] > 1
                drawn_limits.add(tuple(own))
                fig.add_trace(
                    go.Scatter(
                        x=[x for x, _ in own],
                        y=[v for _, v in own],
                        mode="lines",
                        name="speed of light (all these lines)" if shared else f"{label} · speed of light",
                        legendgroup="speed of light" if shared else label,
                        showlegend=False,
                        line=dict(dash="dash", width=1, color="gray" if shared else colors[label]),
                    ),
                    **where,
                )
        if bad:
            by_x: dict = {}
            for r in bad:
                by_x.setdefault(r[self.x], []).append(r)
            counts = [
                " / ".join(f"{n} {st}" for st, n in Counter(r.get("status") for r in rs).items())
                for rs in by_x.values()
            ]
            fig.add_trace(
                go.Scatter(
                    x=list(by_x),
                    y=[floor] * len(by_x),
                    mode="markers" if narrow else "markers+text",  # no room for words: hover has them
                    name=missing if narrow else "not measured",
                    legendgroup="not measured",
                    showlegend="not measured" not in shown,
                    marker=dict(symbol="x", size=12, color="crimson"),
                    textposition="top center",
                    cliponaxis=False,  # a word at a panel's edge stays whole
                    text=None if narrow else counts,
                    hovertext=[
                        "<br>".join([n, *(f"{self._label(r)}: {str(r.get('error', ''))[:90]}" for r in rs)])
                        for n, rs in zip(counts, by_x.values())
                    ],
                ),
                **where,
            )
            shown.add("not measured")

    def _limits(self, pts: list[dict]) -> list[tuple]:
        """The speed-of-light points of one line, rounded so that equal limits compare equal."""
        if not self.sol:
            return []
        out = [(r[self.x], sol_limit(r, self.y)) for r in sorted(pts, key=lambda r: r[self.x])]
        return [(x, float(f"{v:.6g}")) for x, v in out if v is not None]

    def point_count(self) -> int:
        """Points drawn (measured ones), for tests and assertions."""
        return sum(
            len(t.x)
            for t in self.figure().data
            if not t.name.startswith("not measured") and "speed of light" not in t.name
        )

    def failure_count(self) -> int:
        """Rows that were not measured (OOM, unsupported, error)."""
        return sum(1 for r in self.rows if r.get("status", "ok") != "ok")

    # ---- display
    def show(self) -> LivePlot:
        """Display the figure now; later ``add`` calls update it in place."""

        self._handle = display(mime_bundle(self.figure()), raw=True, display_id=True)
        return self

    def attach(self, output) -> None:
        """Draw into an ``ipywidgets.Output`` (a control panel's) instead of a cell's output."""
        self._output = output

    def _redraw(self) -> None:
        if self._output is not None:
            # the figure replaces the widget's outputs, instead of a display captured inside ``with output:``:
            # capturing routes it through messages about the running cell, and a headless run of notebook 00 on
            # simulated Colab (ipywidgets 7.7.1) hung at the panel's clicks in two of four runs that way; the
            # widget's state is the same either way, so JupyterLab, Colab and a saved notebook show the same figure
            self._output.outputs = (
                {"output_type": "display_data", "data": mime_bundle(self.figure()), "metadata": {}},
            )
        elif self._handle is not None:
            self._handle.update(mime_bundle(self.figure()), raw=True)


def sol_fraction(row: dict, y: str) -> float | None:
    """The share of the card's speed of light a row reached for metric ``y``: bandwidth for decode metrics,
    compute for everything else (prefill, forward passes). ``None`` when the row was measured without ``sol``."""
    value = row.get("sol_fraction_bandwidth" if y.startswith("decode") else "sol_fraction_compute")
    return float(value) if finite(value) and value > 0 else None


def sol_limit(row: dict, y: str) -> float | None:
    """What ``y`` would be at the speed of light: a rate divided by the fraction reached, a time multiplied by it."""
    f = sol_fraction(row, y)
    if f is None or not finite(row.get(y)):
        return None
    is_time = y.endswith("_ms") or (y.endswith("_s") and not y.endswith(("per_s", "tok_s")))
    return row[y] * f if is_time else row[y] / f


def mime_bundle(fig: go.Figure) -> dict:
    """What a figure is displayed as: plotly's own mimetype (JupyterLab, VS Code) and HTML that loads plotly.js
    from its CDN (Colab, classic notebook). Built here so a display id sticks and updates redraw in place."""
    spec = json.loads(fig.to_json())
    spec["config"] = {"displaylogo": False}
    return {
        "application/vnd.plotly.v1+json": spec,
        "text/html": fig.to_html(full_html=False, include_plotlyjs="cdn", config=spec["config"]),
    }


def _legend(color) -> str:
    return "" if color is None else color if isinstance(color, str) else " / ".join(color)
