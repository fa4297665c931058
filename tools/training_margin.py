"""How much margin notebook 06's training recipe has: the trained model taught the same sentences over a matrix of
adapter seeds, CPU threads, learning rates (the notebook's, halved and doubled) and PyTorch CPU kernel families.

    python tools/training_margin.py                          # seeds 0-2, threads 1 and 2, lr x 0.5 / 1 / 2
    python tools/training_margin.py --seeds 0 --threads 2 --capabilities default --append  # and the default kernels
    python tools/training_margin.py --schedule constant      # the plain AdamW loop, for comparison

Each cell trains QLoRA (nf4 base) and LoRA (unquantized base) with the notebook's recipe: SmolLM2-135M-Instruct,
rank 16 on every linear layer, ``training.FACTS`` of the profile, one padded batch a step, ``schedules.RECIPE``.
A cell learns when, as notebook 06 asserts, the model gives back under 50% of the sentences before training and
over 80% after it. Every cell is a row of ``results/<card>/06_training_margin.csv`` as soon as it is measured (a
stopped run keeps its rows): given back before and after, first and last-3 loss, seconds. Thread counts and
kernel families run in their own processes (``torch.set_num_threads``, ``ATEN_CPU_CAPABILITY``). ``--card``
names the folder: by default ``cpu-`` and the CPU's model, since a CPU's arithmetic is what the matrix tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # notebook 06's


def cell_rows(seeds, lr_scales, schedule_name: str) -> list[dict]:
    """Every (seed, learning rate) cell in this process: QLoRA and LoRA each, one row per set-up."""
    from helpers import models
    from helpers.machine import profiles
    from helpers.techniques import answers, schedules, training

    # isort: split
    import torch
    from peft import LoraConfig

    sizes = profiles.pick("cpu").chapters["06"]
    facts = training.FACTS[: sizes["facts"]]
    prompts = [p for p, _ in facts]
    base_lr = 2e-3  # notebook 06's LR
    schedule = schedules.CONSTANT if schedule_name == "constant" else schedules.RECIPE
    rows = []
    for seed in seeds:
        for scale in lr_scales:
            for setup, weights in (("QLoRA", "nf4"), ("LoRA", None)):
                t0 = time.perf_counter()
                kw = {"weights": weights} if weights else {}
                m = models.load("smollm2-135m", dtype=sizes["trained_dtype"], attention="sdpa", **kw)
                lora = LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, lora_dropout=0.0)
                training.prepare(m.model, lora=lora, checkpointing=False, seed=seed)
                batches = training.padded_batches(m.tokenizer, [p + r for p, r in facts], len(facts), 64)
                before = answers.continuations(m.model, m.tokenizer, prompts, sizes["answer_tokens"])
                log = training.train(
                    m.model, batches, steps=sizes["trained_steps"], lr=base_lr * scale, schedule=schedule
                )
                after = answers.continuations(m.model, m.tokenizer, prompts, sizes["answer_tokens"])
                given_before, given_after = (
                    sum(training.reproduced(t, r) for t, (_, r) in zip(texts, facts)) / len(facts)
                    for texts in (before, after)
                )
                rows.append(
                    {
                        "setup": setup,
                        "seed": seed,
                        "lr": base_lr * scale,
                        "lr_scale": scale,
                        "steps": sizes["trained_steps"],
                        "schedule": schedule_name,
                        "given_back_before": given_before,
                        "given_back_after": given_after,
                        "learned": given_before < 0.5 and given_after > 0.8,
                        "loss_first": float(log.loss.iloc[0]),
                        "loss_last3": float(log.loss.tail(3).mean()),
                        "loss_max": float(log.loss.max()),
                        "seconds": time.perf_counter() - t0,
                        "threads": torch.get_num_threads(),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
                models.unload(m)
    return rows


def _worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    cell_rows(args.seeds, args.lr_scales, args.schedule)


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--lr-scales", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument(
        "--capabilities",
        nargs="+",
        default=["native"],
        help="native, or ATEN_CPU_CAPABILITY values (default)",
    )
    parser.add_argument("--schedule", choices=["recipe", "constant"], default="recipe")
    parser.add_argument("--card", help="results folder (default: cpu-<this CPU's model>)")
    parser.add_argument("--append", action="store_true", help="keep the rows already saved there")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.threads = args.threads[0]
        return _worker(args)

    import pandas as pd

    from helpers import results
    from helpers.errors import WorkbookError
    from helpers.machine import hardware

    card = args.card or "cpu-" + re.sub(r"[^a-z0-9]+", "-", hardware.cpu_model().lower()).strip("-")
    rows: list[dict] = []
    path = None
    if args.append:
        try:
            rows = results.load("06_training_margin", card=card).to_dict("records")
        except WorkbookError:
            rows = []
    for capability in args.capabilities:
        for threads in args.threads:
            env = {**os.environ}
            env.pop("ATEN_CPU_CAPABILITY", None)
            if capability != "native":
                env["ATEN_CPU_CAPABILITY"] = capability
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                "--threads",
                str(threads),
                "--schedule",
                args.schedule,
            ]
            cmd += ["--seeds", *map(str, args.seeds), "--lr-scales", *map(str, args.lr_scales)]
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
            for line in proc.stdout:
                if not line.startswith("{"):
                    continue
                rows.append({**json.loads(line), "capability": capability, "cpu": hardware.cpu_model()})
                r = rows[-1]
                print(
                    f"{capability:>8} threads {threads} seed {r['seed']} lr {r['lr']:.0e} {r['setup']:>5}: "
                    f"given back {r['given_back_before']:.0%} -> {r['given_back_after']:.0%}, loss "
                    f"{r['loss_first']:.2f} -> {r['loss_last3']:.2f} (max {r['loss_max']:.2f}), {r['seconds']:.0f} s",
                    flush=True,
                )
                path = results.save(  # every row as it comes
                    pd.DataFrame(rows), "06_training_margin", card=card, meta={"schedule": args.schedule}
                )
            if proc.wait() != 0:
                print(
                    f"training_margin: the worker for {capability}, {threads} threads failed", file=sys.stderr
                )
    df = pd.DataFrame(rows)
    if not df.empty:
        learned = df.groupby("setup").learned.agg(["sum", "count"])
        print(learned.to_string())
        print(f"saved: {path}")
    return path


if __name__ == "__main__":
    main()
