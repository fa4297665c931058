"""Static charts of a results table: grouped or stacked bars, bars faceted by workload, the Pareto front (notebooks
01, 03, 05, 06); and log axes whose ticks are labelled in full, shared with the live plots of ``live``.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go


def finite(v) -> bool:
    """A number that is not None, NaN or infinite."""
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def log_ticks(values) -> dict:
    """Tick values for a log axis over ``values``, labelled in full: 1-2-5 in each decade (1-2-3-5 where
    the data span less than one, every power of ten where they span more than five), instead of plotly's
    bare "2" and "5" between powers of ten. Empty (plotly's own ticks) when there is nothing to place."""
    v = [float(x) for x in values if finite(x) and float(x) > 0]
    if not v:
        return {}
    lo, hi = min(v), max(v)
    decades = range(math.floor(math.log10(lo)), math.floor(math.log10(hi)) + 1)
    span = math.log10(hi / lo)
    steps = (1,) if span > 5 else (1, 2, 5) if span > 1 else (1, 1.5, 2, 3, 5, 7)
    ticks = [m * 10**e for e in [decades[0] - 1, *decades, decades[-1] + 1] for m in steps]
    # one tick beyond the data on each side, so the padded axis still has labels at both ends
    below = [t for t in ticks if t < lo][-1:]
    above = [t for t in ticks if t > hi][:1]
    ticks = below + [t for t in ticks if lo <= t <= hi] + above
    return dict(tickvals=ticks, ticktext=[tick_text(t) for t in ticks])


def tick_text(t: float) -> str:
    return f"{t:,.0f}" if t >= 1 and float(t).is_integer() else f"{t:.3g}"


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
                text=[f"{v:.3g}" for v in part[y]],  # three figures: a tiny model's 0.00123 GiB is not "0.00"
                textposition="inside" if barmode == "stack" else "outside",  # a stack has no room above
            )
        )
    fig.update_layout(
        title=title, xaxis_title=x, yaxis_title=y, barmode=barmode, template="plotly_white", **kw
    )
    fig.update_layout(uniformtext_minsize=9, uniformtext_mode="hide")  # a label too small to read is hidden
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
    values: bool = False,
) -> go.Figure:
    """Grouped bars of ``y`` by ``x`` and ``color``, one panel per value of ``facet`` (e.g. a workload).

    Rows that did not run (OOM, unsupported) keep their place: a faint stub with its status written above it
    (upwards, unless ``values``). Measured values are written above their bars only with ``values=True`` (a
    chart of few bars; a label that would be too small to read is left out); hover always shows them."""
    d = df.copy()
    ok = (d.get("status", "ok") == "ok") & d[y].notna()
    d["label"] = [
        (f"{v:.3g}" if values else "") if good else str(st)
        for v, good, st in zip(d[y], ok, d.get("status", ["ok"] * len(d)))
    ]
    d[x], d[color] = d[x].astype(str), d[color].astype(str)
    d["shown"] = [
        f"{v:.4g}" if good else f"not measured ({lab})" for v, good, lab in zip(d[y], ok, d["label"])
    ]
    floor = d[y][ok].min() / 2 if log_y and ok.any() else 0  # a log axis has no zero to stand on
    d[y] = d[y].where(ok, floor)
    fig = px.bar(
        d,
        x=x,
        y=y,
        color=color,
        facet_col=facet,
        barmode="group",
        text="label",
        # per bar: the status of a row that did not run (else ""), and what hover shows for its value
        custom_data=[d["label"].where(~ok, ""), d["shown"]],
        log_y=log_y,
        title=title,
        height=height,
        template="plotly_white",
    )
    fig.update_traces(textangle=0 if values else -90, constraintext="none", cliponaxis=False)
    fig.update_traces(hovertemplate=f"{x}=%{{x}}<br>{y}=%{{customdata[1]}}<extra>%{{fullData.name}}</extra>")
    if values:
        fig.update_layout(uniformtext_minsize=9, uniformtext_mode="hide")
    # a row that did not run: its status above a faint stub (log axes: half the smallest value, having no zero)
    fig.for_each_trace(
        lambda t: t.update(
            textposition=["outside" if values or st[0] else "none" for st in t.customdata],
            marker_opacity=[0.25 if st[0] else 1.0 for st in t.customdata],
        )
    )
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))  # "prompt 512, batch 1"
    if log_y:
        fig.update_yaxes(**log_ticks(d[y][ok]))
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
