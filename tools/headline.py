"""Print the README's headline tables from the saved results of one card.

    python tools/headline.py [card]           print them (default card: nvidia-h100-80gb-hbm3)
    python tools/headline.py --write [card]   and replace them in README.md, and redraw its plots

The README's tables are this script's output, pasted between markers; tests/test_project.py checks
that they still match the files in results/, so no number in the README is typed by hand. The plots
under three of the tables are PNGs drawn from the same files by tools/readme_figures.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import readme_blocks
import readme_figures

from helpers import results
from helpers.results import registry

ROOT = Path(__file__).resolve().parent.parent


DEFAULT_CARD = registry.STORED_CARD


def _header(*columns: str) -> list[str]:
    """A Markdown table's first two lines."""
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


def forward_table(card: str) -> str:
    df, meta = results.stored("helpers_exercise_forward", card)
    df = df[df.status == "ok"]
    eager = df.set_index("attention").latency_ms["eager"]
    lines = [
        f"Llama-2-7B architecture, bf16, one forward pass of batch {df.batch_size.iloc[0]} x "
        f"{df.seq_len.iloc[0]} tokens, {meta['card']['name']} "
        f"(torch {meta['versions']['torch']}, transformers {meta['versions']['transformers']}), "
        f"median of {df.reps.iloc[0]} timed runs:",
        "",
        "| attention | latency ms (p10-p90) | vs eager | TFLOP/s | of measured peak | peak memory GiB |",
        "|---|---|---|---|---|---|",
    ]
    for r in df.itertuples():
        lines.append(
            f"| {r.attention} | {r.latency_ms:.1f} ({r.latency_p10_ms:.1f}-{r.latency_p90_ms:.1f}) | "
            f"{eager / r.latency_ms:.2f}x | {r.tflops:.0f} | {r.sol_fraction_compute:.0%} | {r.peak_alloc_gib:.2f} |"
        )
    return "\n".join(lines)


def decode_table(card: str) -> str:
    gen, meta = results.stored("helpers_exercise_generate", card)
    quant, _ = results.stored("helpers_exercise_quant", card)
    g = gen.iloc[0]
    lines = [
        f"Same model, greedy generation of {g.new_tokens} tokens after a {g.prompt_len}-token prompt, batch 1, "
        "dynamic KV cache, SDPA:",
        "",
        "| weights | weight memory GiB | prefill ms | decode tokens/s | achieved GB/s | of measured bandwidth |",
        "|---|---|---|---|---|---|",
        f"| bf16 | {g.weights_gib:.2f} | {g.prefill_ms:.1f} | {g.decode_tok_s:.1f} | {g.decode_gbs:.0f} | "
        f"{g.sol_fraction_bandwidth:.0%} |",
    ]
    for r in quant[quant.status == "ok"].itertuples():
        name = r.quant + ("-dq" if r.double_quant else "")
        lines.append(
            f"| {name} | {r.weights_gib:.2f} | {r.prefill_ms:.1f} | {r.decode_tok_s:.1f} | {r.decode_gbs:.0f} | "
            f"{r.sol_fraction_bandwidth:.0%} |"
        )
    return "\n".join(lines)


def peaks_line(card: str) -> str:
    env, _ = results.stored("helpers_exercise_environment", card)
    v = env.set_index("key")["value"]
    return (
        f"Measured peak of this card: {float(v['sol.measured_tflops']):.0f} TFLOP/s (bf16 8192x8192x8192 matmul) "
        f"and {float(v['sol.measured_gbs']):.0f} GB/s (1 GiB device copy, read + write); datasheet "
        f"{float(v['sol.peak_tflops']):.0f} TFLOP/s and {float(v['sol.bandwidth_gbs']):.0f} GB/s."
    )


def flash_table(card: str) -> str:
    """Notebook 01: speed-up over eager per model and batch size, and the attention memory saved."""
    speed, meta = results.stored("01_speedup", card)
    memory, _ = results.stored("01_memory", card)
    flash = meta["flash"]
    ok = speed[speed.status == "ok"]
    wide = ok.pivot_table(index=["model", "batch_size"], columns="attention", values="latency_ms")
    lines = [
        f"Notebook 01, forward pass at {int(speed.seq_len.iloc[0])} tokens (`{flash}`: {meta['flash_label']}). "
        "Latency in ms; speed-up over eager; OOM/unsupported where a path did not run:",
        "",
        f"| model | batch | eager | sdpa | {flash} | sdpa speed-up | {flash} speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    status = speed.set_index(["model", "batch_size", "attention"]).status
    for model, batch in dict.fromkeys(zip(speed.model, speed.batch_size)):
        row = wide.loc[(model, batch)] if (model, batch) in wide.index else pd.Series(dtype=float)

        def cell(a, row=row, model=model, batch=batch):
            return f"{row[a]:.0f}" if pd.notna(row.get(a)) else status.get((model, batch, a), "-")

        def up(a, row=row):
            return (
                f"{row['eager'] / row[a]:.2f}x"
                if pd.notna(row.get(a)) and pd.notna(row.get("eager"))
                else "-"
            )

        lines.append(
            f"| {model} | {batch} | {cell('eager')} | {cell('sdpa')} | {cell(flash)} | {up('sdpa')} | {up(flash)} |"
        )
    eager_oom = memory[(memory.attention == "eager") & (memory.status == "OOM")]
    mem = memory[memory.status == "ok"].pivot_table(
        index="seq_len", columns="attention", values="above_weights_gib"
    )
    saved = (mem["eager"] / mem[flash]).dropna()
    lines += [
        "",
        f"Activation memory of one forward pass (batch 1), eager over `{flash}`: "
        + ", ".join(f"{r:.1f}x at {s}" for s, r in saved.items())
        + f"; eager ran out of memory from {int(eager_oom.seq_len.min())} tokens.",
    ]
    return "\n".join(lines)


def sdpa_table(card: str) -> str:
    """Notebook 02: the guide's OPT-350m, fp16, prefill and decode with each SDPA kernel pinned."""
    df, meta = results.stored("02_opt_generate", card)
    g = df.iloc[0]
    lines = [
        f"Notebook 02, {meta['model']} in fp16, {g.prompt_len}-token prompt, {g.new_tokens} new tokens, batch 1:",
        "",
        "| attention | prefill ms | decode tokens/s |",
        "|---|---|---|",
    ]
    for r in df.itertuples():
        lines.append(
            f"| {r.attention} | {r.prefill_ms:.1f} | {r.decode_tok_s:.0f} |"
            if r.status == "ok"
            else f"| {r.attention} | {r.status} | {r.status} |"
        )
    return "\n".join(lines)


def quant_table(card: str) -> str:
    """Notebooks 03 and 04: sizes of the 7B architecture, decode speed against bf16, the Colab demos."""
    sizes, meta = results.stored("03_sizes", card)
    speed, smeta = results.stored("03_speed", card)
    int8, imeta = results.stored("04_speed", card)
    colab, cmeta = results.stored("04_colab", card)
    lines = [
        f"Notebooks 03-04, {meta['model']}: size by format (transformers' footprint leaves out the 4-bit "
        "scales; the next column counts them):",
        "",
        "| weights | footprint GiB | with 4-bit scales GiB | x smaller than fp32 (with scales) "
        "| bits per quantized weight |",
        "|---|---|---|---|---|",
    ]
    for r in sizes.itertuples():
        bits = "-" if pd.isna(r.bits_per_quantized_weight) else f"{r.bits_per_quantized_weight:.3f}"
        lines.append(
            f"| {r.weights} | {r.footprint_gib:.2f} | {r.breakdown_gib:.2f} | "
            f"{sizes.breakdown_gib[0] / r.breakdown_gib:.2f}x | {bits} |"
        )
    both = pd.concat([speed, int8[int8.weights == "int8"]])
    wide = both[both.status == "ok"].pivot_table(index="batch_size", columns="weights", values="decode_tok_s")
    cols = [c for c in ("bf16", "int8", "nf4", "fp4") if c in wide]
    lines += [
        "",
        f"Decode tokens/s ({smeta['prompt']}-token prompt, `generate`, dynamic cache; int8 from notebook 04 "
        f"with {imeta['new_tokens']} new tokens, the others {smeta['new_tokens']}):",
        "",
        "| batch | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for b, r in wide.iterrows():
        lines.append(
            f"| {b} | " + " | ".join("-" if pd.isna(r.get(c)) else f"{r[c]:.1f}" for c in cols) + " |"
        )
    lines += [
        "",
        f"The guide's Colab demos under a {cmeta['budget_gib']:.0f} GiB budget (notebook 04):",
        "",
        "| model | weights | GiB | on the GPU | decode tokens/s |",
        "|---|---|---|---|---|",
    ]
    for r in colab.fillna({"quant": "fp32"}).itertuples():
        if r.status != "ok":
            lines.append(f"| {r.model} | {r.quant} | - | does not fit: loading refuses | - |")
            continue
        placed = colab.loc[r.Index].filter(like="gib_")
        gpu = placed.filter(like="cuda").sum() / placed.sum()
        lines.append(f"| {r.model} | {r.quant} | {r.weights_gib:.1f} | {gpu:.0%} | {r.decode_tok_s:.2f} |")
    return "\n".join(lines)


def combinations_table(card: str) -> str:
    """Notebook 05: per workload, the fastest decode and the smallest peak memory among attention x weights."""
    grid, meta = results.stored("05_grid", card)
    ok = grid[grid.status == "ok"].copy()
    ok["workload"] = [f"prompt {p}, batch {b}" for p, b in zip(ok.prompt_len, ok.batch_size)]
    lines = [
        f"Notebook 05, {meta['model']}: every attention path x weight format, {meta['new_tokens']} new tokens, "
        f"{int(grid.reps.max())} timed runs a point ({(grid.status == 'ok').sum()} of {len(grid)} points ran); per "
        "workload the fastest decode and the least memory:",
        "",
        *_header(
            "workload",
            "fastest",
            "decode tokens/s",
            "peak GiB",
            "least memory",
            "decode tokens/s",
            "peak GiB",
        ),
    ]
    for w, part in ok.groupby("workload", sort=False):
        fast = part.loc[part.decode_tok_s.idxmax()]
        small = part.sort_values(["peak_alloc_gib", "decode_tok_s"], ascending=[True, False]).iloc[0]
        lines.append(
            f"| {w} | {fast.weights} + {fast.attention} | {fast.decode_tok_s:.0f} | {fast.peak_alloc_gib:.1f} | "
            f"{small.weights} + {small.attention} | {small.decode_tok_s:.0f} | {small.peak_alloc_gib:.1f} |"
        )
    return "\n".join(lines)


def lora_table(card: str) -> str:
    """Notebook 06: QLoRA, LoRA and full fine-tuning memory and speed; padding against packing; the loss."""
    mem, meta = results.stored("06_memory", card)
    lay, _ = results.stored("06_padding_packing", card)
    loss, lmeta = results.stored("06_training", card)
    first, last = loss.loss.head(5).mean(), loss.loss.tail(10).mean()
    lines = [
        f"Notebook 06, {lmeta['model']}: one training step of {meta['batch']} x {meta['seq_len']} tokens (packed), "
        f"adapters of rank {lmeta['rank']} on every linear layer:",
        "",
        *_header("setup", "weights", "trainable parameters", "peak GiB", "step ms", "tokens/s"),
    ]
    for r in mem.itertuples():
        lines.append(
            f"| {r.setup} | {r.weights} | {r.trainable_params:,} | {r.peak_alloc_gib:.1f} | {r.step_ms:.0f} | "
            f"{r.real_tokens_per_s:.0f} |"
            if r.status == "ok"
            else f"| {r.setup} | {r.weights} | - | {r.status} | - | - |"
        )
    lay = lay.set_index("layout")
    lines += [
        "",
        f"QLoRA training on the workbook's own text: loss {first:.2f} (first 5 steps) to {last:.2f} (last 10) over "
        f"{len(loss)} steps. Padded batches spent {lay.pad_share['padded']:.0%} of their positions on padding; packing "
        f"trained {lay.real_tokens_per_s['packed'] / lay.real_tokens_per_s['padded']:.2f}x the real tokens per second.",
    ]
    return "\n".join(lines)


def sol_table(card: str) -> str:
    """Notebook 07: batch-1 decode modes against the bandwidth ceiling, prefill against the arithmetic one."""
    dec, meta = results.stored("07_decode", card)
    pre, _ = results.stored("07_prefill", card)
    lines = [
        f"Notebook 07, {meta['model']}: batch-1 greedy decode, {meta['prompt']}-token prompt, {meta['new_tokens']} new "
        "tokens, by decode mode (share: of the measured copy bandwidth):",
        "",
        *_header(
            "weights",
            "mode",
            "decode tokens/s",
            "ms per token",
            "share",
            "compile s",
            "next-token agreement with `generate`",
        ),
    ]
    for r in dec.itertuples():
        if r.status != "ok":
            lines.append(f"| {r.weights} | {r.mode} | {r.status} | - | - | - | - |")
            continue
        agree = "-" if pd.isna(r.next_token_agreement) else f"{r.next_token_agreement:.0%}"
        compiled = f"{r.compile_s:.0f}" if isinstance(r.compiled_by, str) and r.compiled_by else "-"
        lines.append(
            f"| {r.weights} | {r.mode} | {r.decode_tok_s:.1f} | {r.decode_ms_per_token:.2f} | "
            f"{r.sol_fraction_bandwidth:.0%} | {compiled} | {agree} |"
        )
    ok = pre[pre.status == "ok"]
    best = ok.loc[ok.tflops.idxmax()]
    lines += [
        "",
        f"Prefill (`{best.attention}`, batch 1): {ok.tflops.min():.0f}-{ok.tflops.max():.0f} TFLOP/s over "
        f"{int(ok.seq_len.min())}-{int(ok.seq_len.max())} tokens, at best {best.sol_fraction_compute:.0%} of the "
        f"measured peak ({int(best.seq_len)} tokens).",
    ]
    return "\n".join(lines)


def headline(card: str = DEFAULT_CARD) -> str:
    figure = readme_figures.markdown
    return "\n\n".join(
        [
            peaks_line(card),
            forward_table(card),
            decode_table(card),
            flash_table(card),
            figure("01_speedup.png"),
            sdpa_table(card),
            quant_table(card),
            figure("03_decode.png"),
            combinations_table(card),
            lora_table(card),
            sol_table(card),
            figure("07_decode.png"),
        ]
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    write = "--write" in args
    card = [a for a in args if a != "--write"][:1]
    text = headline(*card)
    if write:
        readme_blocks.replace("headline", text + "\n")
        readme_figures.write(*card)
    else:
        print(text)
