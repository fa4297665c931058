"""Choosing a combination from measurements: the memory/speed Pareto front and a recommender (notebook 05).

Both work on result tables as the sweeps write them (one row per measured combination, with ``status``,
``peak_alloc_gib``, ``prefill_ms`` and ``decode_ms_per_token``), so they run on a CPU over saved GPU results.
The recommender can also hold each weight format to a quality limit, from a table with one row per format
(``quality.table``'s ``weights`` and ``ppl_increase_pct``).
"""

from __future__ import annotations

import math

import pandas as pd

from ..errors import WorkbookError

NEEDED = ("status", "prefill_ms", "decode_ms_per_token", "batch_size", "prompt_len")


def _check(df: pd.DataFrame, memory: str = "peak_alloc_gib") -> pd.DataFrame:
    missing = [c for c in NEEDED + (memory,) if c not in df.columns]
    if missing:
        raise WorkbookError(
            f"The table lacks {missing}.", "Pass rows written by measure.generate through sweeps.run."
        )
    return df[df.status == "ok"].copy()


def interval(df: pd.DataFrame, column: str) -> tuple[pd.Series, pd.Series]:
    """(low, high) of ``column`` per row: its confidence interval where the protocol wrote one (``{column}_ci_low``
    and ``_ci_high``), else the value itself (a point measured without the protocol has no interval)."""
    low, high = f"{column}_ci_low", f"{column}_ci_high"
    if low in df and high in df:
        return df[low].fillna(df[column]), df[high].fillna(df[column])
    return df[column], df[column]


def pareto(df: pd.DataFrame, memory: str = "peak_alloc_gib", speed: str = "decode_tok_s") -> pd.Series:
    """True for the rows no other row beats on both counts: less or equal memory and more speed, beyond the
    measurement's noise. Speed is compared by its confidence interval (``interval``): a row is beaten only by
    one whose interval lies wholly above its own; rows whose intervals overlap are ties, and ties stay on the
    front together (``ties`` names them). Memory, a peak of one run, is compared as measured. Rows that did not
    run are never on the front."""
    ok = df.status == "ok" if "status" in df else pd.Series(True, index=df.index)
    ok &= df[memory].notna() & df[speed].notna()
    low, high = interval(df, speed)
    front = pd.Series(False, index=df.index)
    for i in df.index[ok]:
        others = df.index[ok].drop(i)
        beaten = (df.loc[others, memory] <= df.at[i, memory]) & (low[others] > high[i])
        front[i] = not beaten.any()
    return front


def ties(df: pd.DataFrame, speed: str = "decode_tok_s") -> list[set]:
    """Groups of rows (index labels) whose ``speed`` intervals overlap pairwise: measurements that cannot tell
    them apart. Single rows are left out."""
    low, high = interval(df, speed)
    groups = []
    for i in df.index:
        tied = {j for j in df.index if j != i and low[j] <= high[i] and low[i] <= high[j]}
        if tied and all(low[a] <= high[b] for a in tied for b in tied):
            group = tied | {i}
            if group not in groups:
                groups.append(group)
    return groups


def request_seconds(row, new_tokens: int, bound: str = "") -> float:
    """Time to serve one request of ``new_tokens`` tokens: prefill, then one decode step per further token.
    ``bound="low"`` or ``"high"``: the same from the ends of the protocol's intervals, where the row has them."""
    prefill, step = row["prefill_ms"], row["decode_ms_per_token"]
    if bound:
        prefill = row.get(f"prefill_ci_{bound}_ms", prefill)
        step = row.get(f"decode_step_ci_{bound}_ms", step)
        prefill, step = (
            (row["prefill_ms"] if pd.isna(prefill) else prefill),
            (row["decode_ms_per_token"] if pd.isna(step) else step),
        )
    return (prefill + max(new_tokens - 1, 0) * step) / 1e3


def choose(
    df: pd.DataFrame,
    *,
    budget_gib: float,
    prompt_len: int,
    new_tokens: int,
    batch_size: int,
    label: tuple[str, ...] = ("attention", "weights"),
    memory: str = "peak_alloc_gib",
    quality: pd.DataFrame | None = None,
    max_ppl_increase_pct: float | None = None,
) -> tuple[pd.Series | None, str, pd.DataFrame]:
    """The fastest measured combination for a workload that fits ``budget_gib``.

    Uses the measured rows closest to the workload (the nearest measured pair of prompt length and batch size,
    at or above the ones asked for when there is such a pair, so the memory figure is not optimistic), keeps those
    whose peak memory fits the budget and ranks them by time per request. Returns (best row or None, the
    reason in words, the ranked candidates). ``memory``: the column compared with the budget (the GPU
    allocator's peak by default; a CPU has none, so there the weights' size is the honest stand-in).
    ``max_ppl_increase_pct``: leave out weight formats whose perplexity rose more than this (in %) over the
    reference in ``quality`` (one row per ``weights``, with ``ppl_increase_pct``); a format it does not list is
    left out too. The reason names what was left out and at what cost.
    """
    ok = _check(df, memory)
    ok = ok[ok[memory].notna()]
    if ok.empty:
        return None, "No measured combination ran.", ok

    def distance(pair) -> tuple[float, float]:  # first how far below the workload (optimistic), then above
        ratios = (pair[0] / prompt_len, pair[1] / batch_size)
        return sum(-math.log(r) for r in ratios if r < 1), sum(math.log(r) for r in ratios if r > 1)

    measured = sorted(set(zip(ok.prompt_len, ok.batch_size)))  # a grid need not measure every pair
    picks = dict(zip(("prompt_len", "batch_size"), min(measured, key=distance)))
    rows = ok[(ok.prompt_len == picks["prompt_len"]) & (ok.batch_size == picks["batch_size"])].copy()
    rows, left_out = _within_quality(rows, quality, max_ppl_increase_pct)
    if rows.empty:
        return None, f"Nothing measured is within +{max_ppl_increase_pct:g}% perplexity.{left_out}", rows
    rows["request_s"] = rows.apply(request_seconds, axis=1, new_tokens=new_tokens)
    rows["request_s_ci_low"] = rows.apply(request_seconds, axis=1, new_tokens=new_tokens, bound="low")
    rows["request_s_ci_high"] = rows.apply(request_seconds, axis=1, new_tokens=new_tokens, bound="high")
    rows["fits"] = rows[memory] <= budget_gib
    rows = rows.sort_values(["fits", "request_s"], ascending=[False, True])
    rows = rows.drop_duplicates(
        subset=[c for c in label if c in rows] + ["fits"]
    )  # repeated runs: keep the fastest
    name = lambda r: " + ".join(str(r[c]) for c in label if c in r)  # noqa: E731
    where = f"measured at prompt {picks['prompt_len']}, batch {picks['batch_size']}"
    fitting = rows[rows.fits]
    if fitting.empty:
        smallest = rows.sort_values(memory).iloc[0]
        return (
            None,
            (
                f"Nothing measured fits {budget_gib:.3g} GiB ({where}); the smallest, {name(smallest)}, "
                f"needs {smallest[memory]:.3g} GiB.{left_out}"
            ),
            rows,
        )
    best = fitting.iloc[0]
    why = (
        f"{name(best)}: {best.request_s:.2f} s per request of {new_tokens} tokens, needs {best[memory]:.3g} GiB "
        f"of {budget_gib:.3g} ({where})."
    )
    tied = fitting.iloc[1:][fitting.iloc[1:].request_s_ci_low <= best.request_s_ci_high]
    if not tied.empty:
        why += (
            f" Tied with {', '.join(name(r) for _, r in tied.iterrows())}: their intervals overlap "
            f"({best.request_s_ci_low:.2f}-{best.request_s_ci_high:.2f} s for the first), so the measurement "
            "cannot rank them; prefer the one that needs less memory or keeps more quality."
        )
    elif len(fitting) > 1:
        second = fitting.iloc[1]
        why += f" Next: {name(second)} at {second.request_s:.2f} s."
    faster = rows[(~rows.fits) & (rows.request_s_ci_high < best.request_s_ci_low)]
    if not faster.empty:
        f = faster.iloc[0]
        why += f" {name(f)} would be faster ({f.request_s:.2f} s) but needs {f[memory]:.3g} GiB."
    return best, why + left_out, rows


def _within_quality(rows: pd.DataFrame, quality: pd.DataFrame | None, limit: float | None):
    """The rows whose weight format is within ``limit`` % perplexity increase, each with its increase, and a
    sentence naming the formats left out (empty without a limit)."""
    if limit is None:
        return rows, ""
    if quality is None or not {"weights", "ppl_increase_pct"} <= set(quality.columns):
        raise WorkbookError(
            "A perplexity limit needs a quality table with the columns weights and ppl_increase_pct.",
            "Pass quality=quality.table([...]) (or a saved one) with max_ppl_increase_pct.",
        )
    cost = quality.dropna(subset=["ppl_increase_pct"]).drop_duplicates("weights").set_index("weights")
    rows = rows.assign(ppl_increase_pct=rows.weights.map(cost.ppl_increase_pct))
    keep = rows.ppl_increase_pct <= limit
    out = rows[~keep].drop_duplicates("weights")
    said = [
        f"{w} (no quality measured)" if pd.isna(p) else f"{w} (+{p:.1f}%)"
        for w, p in zip(out.weights, out.ppl_increase_pct)
    ]
    note = f" Left out by the limit of +{limit:g}% perplexity: {', '.join(said)}." if said else ""
    return rows[keep], note


def budget_choices(df: pd.DataFrame, n: int = 6, memory: str = "peak_alloc_gib") -> list[float]:
    """Memory budgets worth offering for a measured table: just above each distinct measured peak (so every
    budget admits one more combination than the one below it), thinned to about ``n``, two significant digits."""
    ok = _check(df, memory)
    peaks = sorted(ok[memory].dropna().unique())
    if not peaks:
        raise WorkbookError(
            "No measured combination ran, so no budget can be suggested.", "Run the grid first."
        )
    step = max(1, math.ceil(len(peaks) / n))
    picks = peaks[::step] + ([peaks[-1]] if (len(peaks) - 1) % step else [])

    def up(v):  # round up to two significant digits, a little above the peak
        v = v * 1.02
        scale = 10 ** (math.floor(math.log10(v)) - 1)
        return math.ceil(v / scale) * scale

    return sorted({float(f"{up(v):.3g}") for v in picks})
