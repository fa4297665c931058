"""The README's headline plots, drawn from the saved results of one card and written as small PNGs.

    python tools/readme_figures.py [card]      write docs/figures/*.png (default card: nvidia-h100-80gb-hbm3)

``python tools/headline.py --write`` calls this too, and puts each figure under its table in the README.
The figures are the notebooks' own kinds (``helpers.plots``), rendered by ``tools/static_figures.py``
(kaleido and the system Chromium), so they look like the stored notebook outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from helpers import results
from helpers.results import registry
from helpers.show import charts, live

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures"


DEFAULT_CARD = registry.STORED_CARD


def speedup(card: str):
    """Notebook 01: forward-pass speed-up over eager by batch size, per model and attention path."""
    df, meta = results.stored("01_speedup", card)
    eager = df[df.attention == "eager"].set_index(["model", "batch_size"]).latency_ms
    d = df[df.attention != "eager"].copy()
    d["speedup_over_eager"] = [
        eager.get((m, b), float("nan")) / lat for m, b, lat in zip(d.model, d.batch_size, d.latency_ms)
    ]
    d.loc[d.speedup_over_eager.isna() & (d.status == "ok"), "status"] = "no eager"
    fig = charts.facet_bars(
        d,
        "batch_size",
        "speedup_over_eager",
        "attention",
        "model",
        values=True,
        title=f"Notebook 01: forward pass speed-up over eager, {int(df.seq_len.iloc[0])} tokens, "
        f"{meta['card']['name']}",
    )
    fig.add_hline(y=1, line_dash="dot", line_color="gray")
    fig.update_traces(textfont_size=11)
    return fig


def decode_by_weights(card: str):
    """Notebooks 03 and 04: decode tokens/s over batch size per weight format (int8 from notebook 04)."""
    speed, meta = results.stored("03_speed", card)
    int8, _ = results.stored("04_speed", card)
    rows = pd.concat([speed, int8[int8.weights == "int8"]])
    plot = live.LivePlot(
        "batch_size",
        "decode_tok_s",
        "weights",
        log_x=True,
        log_y=True,
        title=f"Notebooks 03-04: decode tokens/s by weight format, {meta['prompt']}-token prompt, "
        f"{meta['card']['name']}",
    )
    plot.extend(rows)
    return plot.figure()  # log x: ticks at the swept batch sizes


def decode_modes(card: str):
    """Notebook 07: batch-1 decode tokens/s per decode mode and weight format."""
    dec, meta = results.stored("07_decode", card)
    plot = live.LivePlot(
        "mode",
        "decode_tok_s",
        "weights",
        title=f"Notebook 07: batch-1 decode tokens/s by decode mode, {meta['card']['name']}",
    )
    plot.extend(dec)
    return plot.figure()


# file name -> (figure builder, the README's alt text)
README = {
    "01_speedup.png": (
        speedup,
        "Forward-pass speed-up over eager by batch size for Llama-2-7B and Falcon-7B",
    ),
    "03_decode.png": (
        decode_by_weights,
        "Decode tokens/s over batch size for bf16, int8, nf4 and fp4 weights",
    ),
    "07_decode.png": (decode_modes, "Batch-1 decode tokens/s by decode mode for bf16, nf4 and int8 weights"),
}


def markdown(name: str) -> str:
    """The README's line for one figure."""
    return f"![{README[name][1]}](docs/figures/{name})"


def write(card: str = DEFAULT_CARD) -> list[Path]:
    """Render every README figure from ``results/<card>/`` into ``docs/figures/``; return the paths."""
    import static_figures

    figures = {name: json.loads(build(card).to_json()) for name, (build, _) in README.items()}
    FIGURES.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, png in zip(figures, static_figures.render(list(figures.values()))):
        (FIGURES / name).write_bytes(png)
        paths.append(FIGURES / name)
    return paths


if __name__ == "__main__":
    for p in write(*sys.argv[1:2]):
        print(f"{p.relative_to(ROOT)}: {p.stat().st_size / 1024:.1f} KiB")
