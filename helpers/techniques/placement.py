"""Where the weights go: memory budgets (``max_memory``), what ``device_map="auto"`` placed where, several GPUs.

Notebooks 03 and 04 put a model over a budget (GPU -> CPU RAM -> disk) and read back where each layer landed;
``multi_gpu_rows`` spreads one over every GPU present (``tools/multi_gpu.py``).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

import pandas as pd
import torch

from .. import measure, models
from ..errors import WorkbookError
from ..measure.protocol import Protocol

GIB = 2**30


def by_device(model) -> pd.DataFrame:
    """Where ``device_map`` put the model: modules and bytes per device (GPU index, "cpu" or "disk")."""
    dmap = getattr(model, "hf_device_map", None) or {"": str(next(model.parameters()).device)}
    rows: dict[str, list] = defaultdict(lambda: [0, 0])
    modules = dict(model.named_modules())
    for name, dev in dmap.items():
        m = modules.get(name, model)
        rows[str(dev)][0] += 1
        rows[str(dev)][1] += sum(p.numel() * p.element_size() for p in m.parameters())
    df = pd.DataFrame([{"device": d, "modules": n, "gib": b / GIB} for d, (n, b) in rows.items()])
    df["share"] = df.gib / df.gib.sum()
    return df


_UNITS = {"gib": 1.0, "mib": 1 / 1024}


def parse_gib(value) -> float:
    """A memory size in GiB from a number (GiB) or a string with binary units: ``15``, ``"15GiB"``, ``"512 MiB"``.

    Decimal units (``"15GB"``) are refused: GB and GiB differ by 7%, which is more than many budgets' margin.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        gib = float(value)
    elif re.fullmatch(r"\s*-.*", str(value)):
        raise WorkbookError(f"Memory budget {value!r} is negative.", "Give a size above zero, e.g. '15GiB'.")
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
        unit = m.group(2).lower() if m else ""
        if not m or unit not in {**_UNITS, "": 1}:
            hint = (
                f" ({m.group(1)} GB = {float(m.group(1)) * 1e9 / GIB:.2f} GiB)"
                if m and unit in ("gb", "g")
                else ""
            )
            raise WorkbookError(
                f"Memory budget {value!r} is not a size in GiB or MiB.",
                f"Write it as a number of GiB or with a binary unit, e.g. 15 or '15GiB' or '512MiB'{hint}.",
            )
        gib = float(m.group(1)) * _UNITS.get(unit, 1.0)
    if not gib > 0:
        raise WorkbookError(
            f"Memory budget {value!r} is not positive.", "Give a size above zero, e.g. '15GiB'."
        )
    if not math.isfinite(gib):
        raise WorkbookError(f"Memory budget {value!r} is not a finite size.", "Give a size such as '15GiB'.")
    return gib


def budget(gib, gpus: int | None = None) -> dict | None:
    """``max_memory`` that caps the main device at ``gib`` (GiB, or a string ``parse_gib`` reads); what does not
    fit spills to the next tier (GPU -> CPU RAM; on a CPU-only machine, CPU RAM -> disk). ``gpus``: spread over
    that many GPUs, ``gib`` each. ``None``: no budget."""
    if gib is None:
        return None
    gib = parse_gib(gib)
    present = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and gpus > present:
        raise WorkbookError(
            f"{gpus} GPUs asked for, {present} present.",
            f"Use gpus <= {present}, or run on a machine with more GPUs.",
        )
    if present:
        n = gpus or 1
        return {**{i: f"{gib:.3f}GiB" for i in range(n)}, "cpu": "200GiB"}
    return {"cpu": f"{gib * 1024:.3f}MiB"}


def gib_per_device(model) -> dict:
    """``placement`` as one row: GiB on each device (``gib_cuda:0``, ``gib_cpu``, ``gib_disk``, ...)."""
    p = by_device(model)
    return {
        f"gib_{d if d in ('cpu', 'disk') else f'cuda:{d}' if str(d).isdigit() else d}": g
        for d, g in zip(p.device, p.gib)
    }


def multi_gpu_rows(
    name: str, *, prompt_len: int = 512, new_tokens: int = 64, protocol: Protocol | None = None
) -> pd.DataFrame:
    """bf16 on one GPU, then bf16, int8 and nf4 under a per-GPU budget of 60% of the bf16 weights, spread
    by ``device_map="auto"`` over every GPU present: placement (GiB per device) and generation speed.
    Needs two GPUs or more (notebooks 03 and 04; ``tools/multi_gpu.py`` runs it on its own)."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n < 2:
        raise WorkbookError(
            f"{n} GPU(s) here; the multi-GPU run needs two or more.",
            "Run it on a machine with several GPUs, or read the saved result.",
        )
    rows = []
    for label, opts, gpus in [
        ("bf16, one GPU", {}, None),
        ("bf16", {}, n),
        ("int8", {"quant": "int8"}, n),
        ("nf4", {"quant": "nf4"}, n),
    ]:
        loaded = models.load(
            name,
            dtype="bf16",
            **opts,
            device_map="auto" if gpus else None,
            max_memory=budget(rows[0]["weights_gib"] * 0.6, gpus) if gpus else None,
        )
        r = measure.generate(loaded, 1, prompt_len, new_tokens, protocol=protocol)
        rows.append(
            {
                "setup": label,
                "gpus_used": len(
                    [
                        d
                        for d in set(loaded.model.hf_device_map.values())
                        if str(d).isdigit() or str(d).startswith("cuda")
                    ]
                )
                if gpus
                else 1,
                "budget_per_gpu_gib": rows[0]["weights_gib"] * 0.6 if gpus else None,
                **gib_per_device(loaded.model),
                **r,
            }
        )
        models.unload(loaded)
    return pd.DataFrame(rows)
