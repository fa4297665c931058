"""Print the README's headline tables from the saved results of one card.

    python tools/headline.py [card]     (default: nvidia-h100-80gb-hbm3)

The README's tables are this script's output, pasted between markers; tests/test_project.py checks
that they still match the files in results/, so no number in the README is typed by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CARD = "nvidia-h100-80gb-hbm3"


def _read(card: str, name: str) -> tuple[pd.DataFrame, dict]:
    path = ROOT / "results" / card / f"{name}.csv"
    return pd.read_csv(path), json.loads(path.with_suffix(".json").read_text())


def forward_table(card: str) -> str:
    df, meta = _read(card, "helpers_exercise_forward")
    df = df[df.status == "ok"]
    eager = df.set_index("attention").latency_ms["eager"]
    lines = [f"Llama-2-7B architecture, bf16, one forward pass of batch {df.batch_size.iloc[0]} x "
             f"{df.seq_len.iloc[0]} tokens, {meta['card']['name']} "
             f"(torch {meta['versions']['torch']}, transformers {meta['versions']['transformers']}), "
             f"median of {df.reps.iloc[0]} timed runs:", "",
             "| attention | latency ms (p10-p90) | vs eager | TFLOP/s | of measured peak | peak memory GiB |",
             "|---|---|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(f"| {r.attention} | {r.latency_ms:.1f} ({r.latency_p10_ms:.1f}-{r.latency_p90_ms:.1f}) | "
                     f"{eager / r.latency_ms:.2f}x | {r.tflops:.0f} | {r.sol_fraction_compute:.0%} | {r.peak_alloc_gib:.2f} |")
    return "\n".join(lines)


def decode_table(card: str) -> str:
    gen, meta = _read(card, "helpers_exercise_generate")
    quant, _ = _read(card, "helpers_exercise_quant")
    g = gen.iloc[0]
    lines = [f"Same model, greedy generation of {g.new_tokens} tokens after a {g.prompt_len}-token prompt, batch 1, "
             "dynamic KV cache, SDPA:", "",
             "| weights | weight memory GiB | prefill ms | decode tokens/s | achieved GB/s | of measured bandwidth |",
             "|---|---|---|---|---|---|",
             f"| bf16 | {g.weights_gib:.2f} | {g.prefill_ms:.1f} | {g.decode_tok_s:.1f} | {g.decode_gbs:.0f} | "
             f"{g.sol_fraction_bandwidth:.0%} |"]
    for r in quant[quant.status == "ok"].itertuples():
        name = r.quant + ("-dq" if r.double_quant else "")
        lines.append(f"| {name} | {r.weights_gib:.2f} | {r.prefill_ms:.1f} | {r.decode_tok_s:.1f} | {r.decode_gbs:.0f} | "
                     f"{r.sol_fraction_bandwidth:.0%} |")
    return "\n".join(lines)


def peaks_line(card: str) -> str:
    env, _ = _read(card, "helpers_exercise_environment")
    v = env.set_index("key")["value"]
    return (f"Measured peak of this card: {float(v['sol.measured_tflops']):.0f} TFLOP/s (bf16 8192x8192x8192 matmul) "
            f"and {float(v['sol.measured_gbs']):.0f} GB/s (1 GiB device copy, read + write); datasheet "
            f"{float(v['sol.peak_tflops']):.0f} TFLOP/s and {float(v['sol.bandwidth_gbs']):.0f} GB/s.")


def headline(card: str = DEFAULT_CARD) -> str:
    return peaks_line(card) + "\n\n" + forward_table(card) + "\n\n" + decode_table(card)


if __name__ == "__main__":
    print(headline(*sys.argv[1:2]))
