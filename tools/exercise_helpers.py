"""Exercise every helper once on the machine at hand and save what it measured.

    python tools/exercise_helpers.py [--profile large-gpu] [--quick]

Writes ``results/<card>/helpers_exercise_*.csv``: the environment report, the forward pass of
the profile's decoder at its long sequence length with eager and SDPA attention (and the SDPA
backends that run here), a short generation, and a load in each quantization mode with its
verification. Run it on a new GPU to check the whole chain before running the notebooks.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from helpers import environment, measure, models, results
from helpers.machine import profiles
from helpers.measure import sweeps
from helpers.models import checkpoints


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=None)
    ap.add_argument("--quick", action="store_true", help="fewer reps (a smoke test)")
    args = ap.parse_args()
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 30)

    env = environment.report(measure=True)
    prof = profiles.pick(args.profile)
    print(env.to_frame().to_string())
    print(env.attention[["attention", "runs_here", "detail"]].to_string())
    print(env.quantization.to_string())
    results.save(env.to_frame().reset_index(names="key"), "helpers_exercise_environment")
    sol = env.speed_of_light
    protocol = (
        measure.Protocol(warmup=1, min_reps=3, max_reps=3)
        if args.quick
        else measure.Protocol(**prof.protocol)
    )

    t0 = time.perf_counter()
    checkpoints.build(prof.decoder)
    print(f"build {prof.decoder}: {time.perf_counter() - t0:.1f} s")
    loaded = models.load(prof.decoder, dtype=prof.dtype, attention="sdpa", strict=True)
    print(f"load {prof.decoder}: {loaded.load_s:.1f} s, {loaded.footprint_gib():.2f} GiB")
    print(loaded.verification.to_frame().to_string())

    points = [
        {"attention": a, "batch_size": 1, "seq_len": prof.long_seq}
        for a in ["eager", "sdpa", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "sdpa-math"]
    ]

    def forward(p):
        loaded.switch_attention(p["attention"])
        return measure.forward(loaded, p["batch_size"], p["seq_len"], protocol=protocol, sol=sol)

    fwd = sweeps.run(points, forward, save_to=results.path_for("helpers_exercise_forward.partial"))
    results.save(fwd, "helpers_exercise_forward", meta={"profile": prof.name})
    cols = [
        "attention",
        "status",
        "latency_ms",
        "latency_p10_ms",
        "latency_p90_ms",
        "tflops",
        "sol_fraction_compute",
        "peak_alloc_gib",
        "above_weights_gib",
    ]
    print(fwd[[c for c in cols if c in fwd]].to_string())

    loaded.switch_attention("sdpa")
    gen = pd.DataFrame([measure.generate(loaded, 1, 512, prof.new_tokens, protocol=protocol, sol=sol)])
    results.save(gen, "helpers_exercise_generate", meta={"profile": prof.name})
    print(
        gen[
            [
                "prefill_ms",
                "decode_tok_s",
                "decode_ms_per_token",
                "decode_gbs",
                "sol_fraction_bandwidth",
                "peak_alloc_gib",
            ]
        ].to_string()
    )
    models.unload(loaded)

    def quantized(p):
        q = models.load(
            prof.decoder,
            dtype=prof.dtype,
            attention="sdpa",
            quant=p["quant"],
            double_quant=p["double_quant"],
            strict=True,
        )
        try:
            row = measure.generate(q, 1, 512, prof.new_tokens, protocol=protocol, sol=sol)
            row["layers"] = str(dict(models.quantized_layers(q.model)))
            row["load_s"] = q.load_s
            return row
        finally:
            models.unload(q)

    qpoints = [
        {"quant": m, "double_quant": dq}
        for m, dq in [("int8", False), ("fp4", False), ("nf4", False), ("nf4", True)]
    ]
    quant = sweeps.run(qpoints, quantized)
    results.save(quant, "helpers_exercise_quant", meta={"profile": prof.name})
    cols = [
        "quant",
        "double_quant",
        "status",
        "weights_gib",
        "prefill_ms",
        "decode_tok_s",
        "decode_gbs",
        "peak_alloc_gib",
        "load_s",
        "error",
    ]
    print(quant[[c for c in cols if c in quant]].to_string())


if __name__ == "__main__":
    main()
