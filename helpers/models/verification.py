"""What was asked for against what is in effect after loading: attention, dtype, quantized layers, devices.

``models.load`` runs ``verify`` on every model; notebook 00 shows the table and a deliberately wrong request.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from .. import variants
from ..machine.hardware import device


@dataclass
class Verification:
    """What was asked for against what is in effect, one row per property."""

    rows: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r["ok"] for r in self.rows)

    @property
    def problems(self) -> list[str]:
        return [
            f"{r['property']}: asked {r['requested']}, got {r['in_effect']}" for r in self.rows if not r["ok"]
        ]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def quantized_layers(model) -> Counter:
    """Count layers by what they really are: ``Linear8bitLt``, ``Linear4bit/nf4``, ``Linear``, ..."""
    counts: Counter = Counter()
    for m in model.modules():
        cls = type(m).__name__
        if cls == "Linear4bit":
            qs = getattr(m.weight, "quant_state", None)
            nested = " +dq" if qs is not None and getattr(qs, "nested", False) else ""
            counts[f"Linear4bit/{getattr(m.weight, 'quant_type', '?')}{nested}"] += 1
        elif cls in ("Linear8bitLt", "Linear"):
            counts[cls] += 1
    return counts


def verify(model, req) -> Verification:
    """Check attention implementation, dtype, quantized layer types and devices against ``req``
    (a ``models.Request``)."""
    v = variants.attention_variant(req.attention)
    rows = []

    def row(prop, requested, in_effect, ok):
        rows.append(
            {"property": prop, "requested": str(requested), "in_effect": str(in_effect), "ok": bool(ok)}
        )

    impl = model.config._attn_implementation
    row("attention implementation", v.implementation, impl, impl == v.implementation)
    float_params = Counter(p.dtype for n, p in model.named_parameters() if p.dtype.is_floating_point)
    main = float_params.most_common(1)[0][0] if float_params else None
    want = variants.dtype_of(req.dtype)
    row("dtype of unquantized weights", req.dtype, variants.dtype_name(main) if main else None, main == want)
    layers = quantized_layers(model)
    if req.quant is None:
        quant = {k: n for k, n in layers.items() if k != "Linear"}
        row("quantized linear layers", 0, dict(quant) or 0, not quant)
    else:
        key = (
            "Linear8bitLt"
            if req.quant == "int8"
            else f"Linear4bit/{req.quant}" + (" +dq" if req.double_quant else "")
        )
        n = layers.get(key, 0)
        others = {k: c for k, c in layers.items() if k not in (key, "Linear")}
        row(
            f"{key} layers",
            "> 0",
            f"{n} (plain Linear left: {layers.get('Linear', 0)})",
            n > 0 and not others,
        )
    devices = sorted({str(p.device) for p in model.parameters()})
    if req.device_map in (None, "cuda", "cuda:0", "cpu", 0):
        target = str(device()) if req.device_map in (None, 0, "cuda") else req.device_map
        target = "cuda:0" if target == "cuda" else target
        row("devices", target, devices, devices == [target])
    else:
        row("devices", req.device_map, devices, True)
    return Verification(rows)
