"""Live plots: a plotly figure that gains a point as each measurement finishes (every notebook).

``LivePlot.show()`` displays the figure with a display id and ``add(row)`` redraws it in place,
so in JupyterLab, Colab or VS Code the reader watches the sweep fill in, and a notebook executed
without a front end keeps the last state as an ordinary static figure. Inside a control panel the
plot draws into the panel's output area instead. Failed points (OOM, unsupported) are drawn as
crosses on the x axis with their status, so a gap is never silent.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from IPython.display import clear_output, display


class LivePlot:
    """A figure of ``y`` against ``x``, one line per value of ``color`` (a column or a list of columns).

    ``ceiling``: an optional (value, label) horizontal line, e.g. the card's speed of light.
    ``sol=True``: beside each line, a dashed line of what the card could do for the same points (its
    speed of light: bytes over bandwidth for decode, FLOPs over peak for prefill and forward passes),
    and each point labelled with the fraction it reached. Needs rows measured with ``sol=`` (they carry
    ``sol_fraction_bandwidth`` or ``sol_fraction_compute``; see ``workload.against_sol``).
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
    ):
        self.x, self.y, self.color, self.sol = x, y, color, sol
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
        fig = go.Figure()
        ok = [r for r in self.rows if r.get("status", "ok") == "ok" and _finite(r.get(self.y))]
        bad = [r for r in self.rows if r.get("status", "ok") != "ok"]
        categorical = any(isinstance(r.get(self.x), str) for r in self.rows)
        for label in dict.fromkeys(self._label(r) for r in self.rows):
            pts = [r for r in ok if self._label(r) == label]
            if not pts:
                continue
            if categorical:
                fig.add_trace(
                    go.Bar(
                        x=[r[self.x] for r in pts],
                        y=[r[self.y] for r in pts],
                        name=label,
                        text=[f"{r[self.y]:.3g}" for r in pts],
                        textposition="outside",
                    )
                )
            else:
                pts.sort(key=lambda r: r[self.x])
                fractions = [sol_fraction(r, self.y) for r in pts] if self.sol else []
                fig.add_trace(
                    go.Scatter(
                        x=[r[self.x] for r in pts],
                        y=[r[self.y] for r in pts],
                        mode="lines+markers+text" if fractions else "lines+markers",
                        name=label,
                        text=[f"{f:.0%}" if f else "" for f in fractions],
                        textposition="top center",
                    )
                )
                limits = [(r[self.x], sol_limit(r, self.y)) for r in pts]
                limits = [(x, v) for x, v in limits if v is not None]
                if self.sol and limits:
                    fig.add_trace(
                        go.Scatter(
                            x=[x for x, _ in limits],
                            y=[v for _, v in limits],
                            mode="lines",
                            name=f"{label} · speed of light",
                            line=dict(dash="dash", width=1),
                        )
                    )
        if bad:
            ys = [r[self.y] for r in ok]
            floor = (min(ys) * 0.8 if ys else 1) if self.log_y else 0
            by_x: dict = {}
            for r in bad:
                by_x.setdefault(r[self.x], []).append(r)
            fig.add_trace(
                go.Scatter(
                    x=list(by_x),
                    y=[floor] * len(by_x),
                    mode="markers+text",
                    name="not measured",
                    marker=dict(symbol="x", size=12, color="crimson"),
                    textposition="top center",
                    text=[
                        " / ".join(f"{n} {st}" for st, n in Counter(r.get("status") for r in rs).items())
                        for rs in by_x.values()
                    ],
                    hovertext=[
                        "<br>".join(f"{self._label(r)}: {str(r.get('error', ''))[:90]}" for r in rs)
                        for rs in by_x.values()
                    ],
                )
            )
        if self.ceiling:
            fig.add_hline(y=self.ceiling[0], line_dash="dash", annotation_text=self.ceiling[1])
        fig.update_layout(
            title=self.title or f"{self.y} vs {self.x}",
            xaxis_title=self.x,
            yaxis_title=self.y,
            height=self.height,
            template="plotly_white",
            legend_title_text=_legend(self.color),
            barmode="group",
        )
        if categorical:
            fig.update_xaxes(
                type="category",
                categoryorder="array",
                categoryarray=list(dict.fromkeys(r[self.x] for r in self.rows)),
            )
        if self.log_x:
            fig.update_xaxes(type="log")
        if self.log_y:
            fig.update_yaxes(type="log")
        return fig

    def point_count(self) -> int:
        """Points drawn (measured ones), for tests and assertions."""
        return sum(
            len(t.x)
            for t in self.figure().data
            if t.name != "not measured" and "speed of light" not in t.name
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
            with self._output:
                clear_output(wait=True)
                display(mime_bundle(self.figure()), raw=True)
        elif self._handle is not None:
            self._handle.update(mime_bundle(self.figure()), raw=True)


def sol_fraction(row: dict, y: str) -> float | None:
    """The share of the card's speed of light a row reached for metric ``y``: bandwidth for decode metrics,
    compute for everything else (prefill, forward passes). ``None`` when the row was measured without ``sol``."""
    value = row.get("sol_fraction_bandwidth" if y.startswith("decode") else "sol_fraction_compute")
    return float(value) if _finite(value) and value > 0 else None


def sol_limit(row: dict, y: str) -> float | None:
    """What ``y`` would be at the speed of light: a rate divided by the fraction reached, a time multiplied by it."""
    f = sol_fraction(row, y)
    if f is None or not _finite(row.get(y)):
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


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _legend(color) -> str:
    return "" if color is None else color if isinstance(color, str) else " / ".join(color)


def bars(
    df: pd.DataFrame, x: str, y: str, color: str | None = None, title: str = "", barmode: str = "group", **kw
) -> go.Figure:
    """A grouped (or, with ``barmode="stack"``, stacked) bar chart of a results table."""
    fig = go.Figure()
    groups = [(None, df)] if color is None else list(df.groupby(color, sort=False))
    for label, part in groups:
        fig.add_trace(
            go.Bar(
                x=part[x].astype(str),
                y=part[y],
                name=str(label) if label is not None else y,
                text=[f"{v:.2f}" for v in part[y]],
                textposition="outside",
            )
        )
    fig.update_layout(
        title=title, xaxis_title=x, yaxis_title=y, barmode=barmode, template="plotly_white", **kw
    )
    return fig


def facet_bars(
    df: pd.DataFrame,
    x: str,
    y: str,
    color: str,
    facet: str,
    title: str = "",
    log_y: bool = False,
    height: int = 420,
) -> go.Figure:
    """Grouped bars of ``y`` by ``x`` and ``color``, one panel per value of ``facet`` (e.g. a workload).

    Rows that did not run (OOM, unsupported) keep their place: an empty bar labelled with the status."""
    d = df.copy()
    ok = (d.get("status", "ok") == "ok") & d[y].notna()
    d["label"] = [
        f"{v:.3g}" if good else str(st) for v, good, st in zip(d[y], ok, d.get("status", ["ok"] * len(d)))
    ]
    d[y] = d[y].where(ok, 0)
    d[x], d[color] = d[x].astype(str), d[color].astype(str)
    fig = px.bar(
        d,
        x=x,
        y=y,
        color=color,
        facet_col=facet,
        barmode="group",
        text="label",
        log_y=log_y,
        title=title,
        height=height,
        template="plotly_white",
    )
    fig.update_traces(textposition="outside", cliponaxis=False, textfont_size=9)
    return fig


def pareto_plot(
    df: pd.DataFrame,
    front,
    x: str = "peak_alloc_gib",
    y: str = "decode_tok_s",
    label: tuple[str, ...] = ("attention", "weights"),
    title: str = "",
) -> go.Figure:
    """Every measured combination as a point (less ``x`` and more ``y`` is better); the Pareto front, the points
    nothing beats on both counts, joined by a line and named."""
    d = df[df.get("status", "ok") == "ok"].copy() if "status" in df else df.copy()
    on = pd.Series(front, index=df.index).reindex(d.index).fillna(False).astype(bool)
    d["name"] = d[list(label)].astype(str).agg(" + ".join, axis=1)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=d.loc[~on, x],
            y=d.loc[~on, y],
            mode="markers",
            name="dominated",
            marker=dict(color="lightgray", size=9),
            text=d.loc[~on, "name"],
            hoverinfo="text+x+y",
        )
    )
    best = d[on].sort_values(x)
    fig.add_trace(
        go.Scatter(
            x=best[x],
            y=best[y],
            mode="lines+markers+text",
            name="Pareto front",
            marker=dict(size=12, color="seagreen"),
            text=best["name"],
            textposition="top left",
        )
    )
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white", height=440)
    return fig
