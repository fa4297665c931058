"""Shaping result tables for reading: speed-ups and ratios against a baseline (every chapter)."""

from __future__ import annotations

import pandas as pd


def speedup(
    df: pd.DataFrame,
    index: list[str] | str,
    column: str = "attention",
    value: str = "latency_ms",
    baseline: str = "eager",
) -> pd.DataFrame:
    """One row per ``index``, one column per ``column`` value: ``baseline / value`` (>1: faster).

    Only rows with ``status == "ok"`` count; a missing cell means that point was not measured.
    """
    ok = df[df.get("status", "ok") == "ok"] if "status" in df else df
    wide = ok.pivot_table(index=index, columns=column, values=value, aggfunc="median")
    if baseline not in wide:
        return wide.iloc[:, :0]
    return wide.rdiv(wide[baseline], axis=0).drop(columns=[baseline]).add_suffix(" speed-up")


def column_ratio(
    df: pd.DataFrame,
    index: list[str] | str,
    value: str,
    numerator: str,
    denominator: str,
    column: str = "attention",
) -> pd.Series:
    """``value`` of ``numerator`` over ``value`` of ``denominator`` per ``index`` (e.g. memory saved)."""
    ok = df[df.status == "ok"] if "status" in df else df
    wide = ok.pivot_table(index=index, columns=column, values=value, aggfunc="median")
    if numerator not in wide or denominator not in wide:
        return pd.Series(dtype=float, name=f"{numerator} / {denominator}")
    return (wide[numerator] / wide[denominator]).rename(f"{numerator} / {denominator}")


def status_counts(df: pd.DataFrame) -> pd.Series:
    """How many points were measured, ran out of memory, were unsupported, or failed."""
    return df.status.value_counts()
