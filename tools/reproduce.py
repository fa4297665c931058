"""Measure the headline figures again by the workbook's protocol and compare them with the stored run.

    python tools/reproduce.py [--profile cpu|small-gpu|large-gpu] [--stored-card CARD] [--new-tokens N]
    ./workbook reproduce [same options]

Writes ``results/<card>/reproduce_<date>.csv`` (and its ``.json``), one row per figure:

- forward pass at the profile's long sequence (4096 tokens on a large GPU), batch 1, one row per attention path
  (eager, sdpa, sdpa-flash, sdpa-cudnn, sdpa-efficient), timed interleaved: ``latency_ms``, compared with the
  helpers' exercise table or, for a path that table lacks, notebook 01's backends side by side (the same shape);
- prefill TFLOP/s at a few prompt lengths (the stored run's attention path);
- batch-1 greedy decode, timed per token inside each generation (``steps``), the modes of one format interleaved:
  bf16 dynamic / static / compiled-loop, nf4 and int8 dynamic / compiled-loop: ``decode_tok_s``.

Each row holds the stored value (``results.stored`` of ``--stored-card``, by default the run the README quotes) and
its p10-p90 spread, the new median and its 95% interval, the drift (new / stored - 1), whether the new value falls
inside the stored spread, the GPU's busy share and ``host_bound``, and a verdict: ``reproduced`` (GPU-bound, same
card, within 5%), ``drifted``, ``host-bound: spread only`` (the host paces it, in this run or in the stored one: not
compared), ``other card: not judged``, ``no stored value`` (another model or size) or ``not run: ...`` (unsupported
here, or an error).

Each figure is appended to the CSV as soon as it is measured; a run stopped half-way (Ctrl-C, SIGTERM from a time
limit) saves the figures it has, with ``stopped`` in its metadata. The model's checkpoint is built first if the
cache lacks it (``tools/prepare.py``), and that one-time cost is reported apart (``one_time_s``).

Time on an H200: 246 s for all 15 figures on 2026-12-04 (commit ab75321, a fresh machine, so a cold compile
cache: the three compiled loops compiled during the run), with 10 s for each group of figures. Earlier runs: stopped
at its 414 s limit on 2026-12-03, inside the int8 group, where dynamo reached its recompile limit in bitsandbytes'
matmul (the loop now runs int8's layers uncompiled, ``greedy_loop.eager_int8_layers``, and a loop that reaches the
cap ends as a ``not run`` row); failed after 112 s on the morning of 2026-12-04 in a reader that wanted the columns of
a stored decode table from before per-token timing (it reads the decode steps' p10 and p90 now). Decode: 32 new
tokens after a 128-token prompt (notebook 07's stored run makes 16, and a step's KV-cache reads at those positions
are under 1% of its weight reads, so the per-step rates compare). On a CPU the tiny profile runs in well under a
minute (the compiled loop is left out there: compiling it takes longer than the rest together).
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from helpers import environment, measure, models, results
from helpers.errors import WorkbookError
from helpers.machine import hardware, profiles
from helpers.measure.protocol import Protocol
from helpers.models import checkpoints
from helpers.results import registry
from helpers.techniques import decoding

ATTENTIONS = ["eager", "sdpa", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient"]
TOLERANCE = 0.05  # GPU-bound figures on the stored card should come back within 5%


@dataclass
class Plan:
    """What one run measures, from the profile: model, sizes, the formats' decode modes and the protocol."""

    model: str
    dtype: str
    seq_len: int
    prefill_lens: list[int]
    prompt: int
    new_tokens: int
    formats: dict[str, list[str]]
    protocol: Protocol
    notes: list[str] = field(default_factory=list)


def plan_for(prof: profiles.Profile, new_tokens: int | None = None) -> Plan:
    if prof.name == "cpu":
        return Plan(
            prof.decoder,
            prof.dtype,
            64,
            [16, 64],
            8,
            new_tokens or 4,
            {"bf16": ["dynamic", "static"], "nf4": ["dynamic"], "int8": ["dynamic"]},
            Protocol(warmup=1, min_reps=6, max_reps=8, budget_s=1.0),
            [
                "CPU: tiny model in fp32 (the 'bf16' rows), compiled loop left out (compiling takes ~30 s here)"
            ],
        )
    sizes = prof.chapters["07"]
    return Plan(
        prof.decoder,
        prof.dtype,
        prof.long_seq,
        [n for n in sizes["prefill_lens"] if n <= 8192][-3:],
        sizes["prompt"],
        new_tokens or 32,
        {"bf16": ["dynamic", "static", "compiled-loop"], "nf4": ["dynamic", "compiled-loop"]}
        | {"int8": ["dynamic", "compiled-loop"]},
        Protocol(warmup=2, min_reps=6, max_reps=40, budget_s=10.0),
    )


def _stored(name: str, card: str) -> tuple[pd.DataFrame, dict]:
    try:
        df, meta = results.stored(name, card=card)
    except Exception:  # noqa: BLE001 - no stored table: every figure of it reads "no stored value"
        return pd.DataFrame(), {}
    return (df[df.status == "ok"] if "status" in df else df), meta


def _pick(df: pd.DataFrame, **keys) -> pd.Series | None:
    for k, v in keys.items():
        if df.empty or k not in df:
            return None
        df = df[df[k] == v]
    return None if df.empty else df.iloc[0]


def _flagged(flag) -> bool:
    """A stored host-bound flag as a bool: NaN (a row measured without it) is not flagged."""
    return bool(flag) if pd.notna(flag) else False


def _host_bound(r: pd.Series) -> bool:
    """Whether a stored row was paced by its host (a figure to show, not to compare with)."""
    return _flagged(r.get("host_bound", False))


# the stored forward passes, in order of preference, for each figure: the helpers' exercise, else notebook 01's
# backends side by side (the same shape, batch 1 at the profile's long sequence; there each path is a point of its own)
FORWARD_TABLES = ("helpers_exercise_forward", "01_backends")
STORED_TABLES = (*FORWARD_TABLES, "07_prefill", "07_decode")


def stored_forward(tables, model, attention, seq_len):
    """(latency, p10, p90, host-bound) from the first of ``tables`` ((name, frame) pairs) that has this pass, and
    that table's name (the first name when none has it)."""
    for name, df in tables:
        r = _pick(df, model=model, attention=attention, seq_len=seq_len, batch_size=1)
        if r is not None:
            return (r.latency_ms, r.latency_p10_ms, r.latency_p90_ms, _host_bound(r)), name
    return None, tables[0][0]


def stored_prefill(df, model, seq_len):
    r = _pick(df, model=model, seq_len=seq_len)
    if r is None:
        return None
    lat = r.latency_ms
    return r.tflops, r.tflops * lat / r.latency_p90_ms, r.tflops * lat / r.latency_p10_ms, _host_bound(r)


def stored_decode(df, model, weights, mode):
    """decode tok/s and its p10-p90 spread in the stored run: from the decode steps of a run timed per token, or (a
    run from before per-token timing) from the whole generation less its prefill."""
    r = _pick(df, model=model, weights=weights, mode=mode, batch_size=1)
    if r is None:
        return None
    if pd.notna(r.get("decode_step_p10_ms")) and pd.notna(r.get("decode_step_p90_ms")):
        return (
            r.decode_tok_s,
            r.batch_size * 1e3 / r.decode_step_p90_ms,
            r.batch_size * 1e3 / r.decode_step_p10_ms,
            _host_bound(r),
        )
    steps = r.batch_size * (r.new_tokens - 1)
    low, high = (steps / ((r[f"total_{q}_ms"] - r.prefill_ms) / 1e3) for q in ("p90", "p10"))
    return r.decode_tok_s, low, high, _host_bound(r)


def figure(name, table, metric, row, stored, new_ci, same_card) -> dict:
    """One row of the reproduction table (see the module's docstring for the verdicts)."""
    ok = row.get("status", "ok") == "ok"
    new = row.get(metric, float("nan")) if ok else float("nan")
    s, s_lo, s_hi, *flag = stored if stored is not None else (float("nan"),) * 3
    # (value, p10, p90[, host-bound]): a stored figure its host paced is no reference (NaN: not flagged)
    stored_host_bound = bool(flag) and _flagged(flag[0])
    drift = new / s - 1 if stored is not None and ok else float("nan")
    host_bound = bool(row.get("host_bound", False))
    if not ok:
        verdict = f"not run: {row.get('status')}"
    elif stored is None:
        verdict = "no stored value"
    elif host_bound or stored_host_bound:
        verdict = "host-bound: spread only"
    elif not same_card:
        verdict = "other card: not judged"
    else:
        verdict = "reproduced" if abs(drift) <= TOLERANCE else "drifted"
    return {
        "figure": name,
        "table": table,
        "metric": metric,
        "stored": s,
        "stored_low": s_lo,
        "stored_high": s_hi,
        "new": new,
        "new_ci_low": new_ci[0] if ok else float("nan"),
        "new_ci_high": new_ci[1] if ok else float("nan"),
        "drift": drift,
        "inside_stored": bool(stored is not None and ok and min(s_lo, s_hi) <= new <= max(s_lo, s_hi)),
        "host_bound": host_bound,
        "stored_host_bound": stored_host_bound,
        "busy_share": row.get("busy_share", float("nan")),
        "n": row.get("n"),
        "ci_reached": row.get("ci_reached"),
        "stopped_by": row.get("stopped_by", ""),
        "compared": verdict in ("reproduced", "drifted"),
        "verdict": verdict,
        "error": row.get("error", ""),
        "samples_ms": row.get(
            "latency_samples_ms", row.get("decode_step_samples_ms", "")
        ),  # every sample kept
    }


def _failed(e: Exception) -> dict:
    return {
        "status": "error",
        "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}",
    }


def _alone(loaded, attention, plan) -> dict:
    try:
        loaded.switch_attention(attention)
        return measure.forward(loaded, 1, plan.seq_len, protocol=plan.protocol)
    except Exception as e:  # noqa: BLE001 - recorded in the row
        return _failed(e)


def forward_figures(env, plan, stored, same_card, keep: Callable[[dict], None]) -> None:
    """The forward and prefill figures, against ``stored`` (table name -> (rows, metadata), ``STORED_TABLES``)."""
    loaded = models.load(plan.model, dtype=plan.dtype, attention="sdpa")
    fwd = [(name, stored[name][0]) for name in FORWARD_TABLES]
    pre, pre_meta = stored["07_prefill"]
    try:
        runs = [a for a in ATTENTIONS if env.runs(attention=a)]
        try:
            rows = dict(zip(runs, measure.forwards(loaded, runs, 1, plan.seq_len, protocol=plan.protocol)))
        except Exception:  # noqa: BLE001 - one path failed (OOM?): each alone, so the others still count
            rows = {a: _alone(loaded, a, plan) for a in runs}
        for a in ATTENTIONS:
            row = rows.get(
                a, {"status": "unsupported", "error": f"{a} does not run here (environment report)"}
            )
            ci = (row.get("latency_ci_low_ms"), row.get("latency_ci_high_ms"))
            name = f"forward {a}, batch 1 x {plan.seq_len}"
            stored, table = stored_forward(fwd, plan.model, a, plan.seq_len)
            keep(figure(name, table, "latency_ms", row, stored, ci, same_card))
        attention = pre_meta.get("attention", "sdpa")
        try:  # the stored run's path, where it runs in this plan's dtype (flash has no float32 kernel)
            loaded.switch_attention(attention if env.runs(attention=attention) else "sdpa")
        except WorkbookError:
            loaded.switch_attention("sdpa")
        attention = loaded.request.attention
        for n in plan.prefill_lens:
            try:
                kw = dict(protocol=plan.protocol, sol=env.speed_of_light, beyond_positions=True)
                row = measure.forward(loaded, 1, n, **kw)
                ci = (row["tflops"] * row["latency_ms"] / row["latency_ci_high_ms"],) + (
                    row["tflops"] * row["latency_ms"] / row["latency_ci_low_ms"],
                )
            except Exception as e:  # noqa: BLE001 - one failed length is a row, the run goes on
                row, ci = _failed(e), (None, None)
            name = f"prefill TFLOP/s, {attention}, {n} tokens"
            keep(figure(name, "07_prefill", "tflops", row, stored_prefill(pre, plan.model, n), ci, same_card))
    finally:
        models.unload(loaded)


def decode_figures(plan, weights, modes, dec, same_card, keep: Callable[[dict], None]) -> None:
    """One weight format's decode figures, against ``dec``, the stored 07_decode rows."""
    quant = None if weights == "bf16" else weights
    try:
        loaded = models.load(plan.model, dtype=plan.dtype, attention="sdpa", quant=quant)
        try:
            kw = dict(prompt_len=plan.prompt, new_tokens=plan.new_tokens, protocol=plan.protocol)
            rows = dict(zip(modes, decoding.decode_modes(loaded, modes, **kw)))
        finally:
            models.unload(loaded)
    except Exception as e:  # noqa: BLE001 - a format that fails here is a row per mode, the run goes on
        rows = {m: _failed(e) for m in modes}
    for m in modes:
        row = rows[m]
        ci = (row.get("decode_tok_s_ci_low"), row.get("decode_tok_s_ci_high"))
        name = f"decode tok/s, {weights} {m}, batch 1, prompt {plan.prompt}"
        stored = stored_decode(dec, plan.model, weights, m)
        keep(figure(name, "07_decode", "decode_tok_s", row, stored, ci, same_card))


def _interrupt(signum, frame):
    """SIGTERM (a time limit) as Ctrl-C: the figures measured so far are saved, with ``stopped`` in the metadata."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--profile", default=None, help="cpu, small-gpu or large-gpu (default: from the hardware)"
    )
    ap.add_argument("--stored-card", default=registry.STORED_CARD, help="the stored run to compare with")
    ap.add_argument("--new-tokens", type=int, default=None, help="decode tokens per generation")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    prof = profiles.pick(args.profile)
    plan = plan_for(prof, args.new_tokens)
    env = environment.report(measure=prof.name != "cpu")
    card = hardware.card_slug()
    same_card = card == args.stored_card and prof.decoder == "llama-2-7b"
    print(
        f"reproduce: {env.device.name}, profile {prof.name}, model {plan.model}, compared with {args.stored_card}"
    )
    stored = {
        n: _stored(n, args.stored_card) for n in STORED_TABLES
    }  # read once: the tables the figures meet
    name = f"reproduce_{dt.date.today().isoformat()}"
    partial = results.path_for(name)  # each row appended as it is measured: a stopped run keeps them
    partial.unlink(missing_ok=True)
    partial.with_suffix(".json").unlink(missing_ok=True)  # an earlier run's of the same day
    rows: list[dict] = []

    def keep(row: dict) -> None:
        rows.append(row)
        results.append_row(partial, row)

    stopped, one_time = "", 0.0
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        start, b0 = time.time(), time.perf_counter()
        checkpoints.build(plan.model)
        t0 += time.perf_counter() - b0  # the run's time leaves the one-time build out
        one_time = checkpoints.one_time_seconds(start)
        if one_time:
            print(f"reproduce: built {plan.model} once in {one_time:.0f} s (not part of the run's time)")
        forward_figures(env, plan, stored, same_card, keep)
        for weights, modes in plan.formats.items():
            decode_figures(plan, weights, modes, stored["07_decode"][0], same_card, keep)
    except KeyboardInterrupt:
        stopped = f"stopped after {time.perf_counter() - t0:.0f} s, {len(rows)} figures measured"
        print(f"reproduce: {stopped}; the rows so far are kept")
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not rows:
        print("reproduce: stopped before the first figure; nothing to save")
        return partial
    df = pd.DataFrame(rows)
    meta = {
        "profile": prof.name,
        "stored_card": args.stored_card,
        "protocol": asdict(plan.protocol),
        "model": plan.model,
        "new_tokens": plan.new_tokens,
        "prompt": plan.prompt,
        "tolerance": TOLERANCE,
        "notes": plan.notes,
        "wall_s": time.perf_counter() - t0,
        "one_time_s": one_time,
        "stopped": stopped,
        "stored_saved": {n: m.get("saved") for n, (_, m) in stored.items()},  # a later save replaces a table
    }
    path = results.save(df, name, meta=meta)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 48):
        print(df[["figure", "stored", "new", "new_ci_low", "new_ci_high", "drift", "busy_share", "verdict"]])
    done = stopped or f"{len(df)} figures in {time.perf_counter() - t0:.0f} s"
    print(f"reproduce: {done} -> {path}")
    return path


if __name__ == "__main__":
    main()
