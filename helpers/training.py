"""A small, real fine-tuning loop for LoRA adapters (notebook 06).

- ``corpus``: the workbook's own documentation (README and the notebooks' prose), a text corpus that ships
  with the project.
- ``padded_batches`` and ``packed_batches``: the same documents as padded rows or as packed rows whose
  position ids restart at each document (what the guide recommends for training with flash attention).
- ``lora_param_count``: the LoRA formula, r x (in + out) per adapted layer, to check the trainable count.
- ``train``: AdamW steps over batches, one row per step (loss, tokens, time), with a callback for live plots.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import torch

from .errors import WorkbookError

ROOT = Path(__file__).resolve().parent.parent


def corpus(root: Path = ROOT) -> list[str]:
    """Paragraphs of the README and of every notebook's markdown cells, in reading order."""
    texts = [(root / "README.md").read_text()]
    for nb in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        texts += ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    paragraphs = [p.strip() for t in texts for p in t.split("\n\n")]
    return [p for p in paragraphs if len(p) > 40 and not p.startswith(("|", "<!--", "```"))]


def _tokens(tokenizer, docs: list[str], max_len: int) -> list[torch.Tensor]:
    eos = tokenizer.eos_token_id
    out = []
    for d in docs:
        ids = tokenizer(d, add_special_tokens=False)["input_ids"][: max_len - 1] + ([eos] if eos is not None else [])
        out.append(torch.tensor(ids))
    return out


def padded_batches(tokenizer, docs: list[str], batch_size: int, max_len: int) -> list[dict]:
    """Each batch: ``batch_size`` documents, right-padded to the longest; padding is masked from the loss."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    seqs = _tokens(tokenizer, docs, max_len)
    batches = []
    for i in range(0, len(seqs) - batch_size + 1, batch_size):
        group = seqs[i:i + batch_size]
        n = max(len(s) for s in group)
        ids = torch.full((len(group), n), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(group):
            ids[r, :len(s)], mask[r, :len(s)] = s, 1
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)})
    return batches


def packed_batches(tokenizer, docs: list[str], batch_size: int, max_len: int) -> list[dict]:
    """Documents laid end to end in rows of ``max_len`` tokens, position ids restarting at each document
    (transformers reads the restarts as boundaries when no attention mask is given); no padding at all."""
    rows, row, pos = [], [], []
    for s in _tokens(tokenizer, docs, max_len):
        if len(row) + len(s) > max_len and row:
            rows.append((row, pos))
            row, pos = [], []
        row, pos = row + s.tolist(), pos + list(range(len(s)))
    batches = []
    for i in range(0, len(rows) - batch_size + 1, batch_size):
        group = rows[i:i + batch_size]
        n = max(len(r) for r, _ in group)
        if any(len(r) != n for r, _ in group):  # ragged rows: cut to the shortest so nothing is padded
            n = min(len(r) for r, _ in group)
        ids = torch.tensor([r[:n] for r, _ in group])
        positions = torch.tensor([p[:n] for _, p in group])
        labels = ids.clone()
        labels[positions == 0] = -100  # a document's first token has no context from its own document
        batches.append({"input_ids": ids, "position_ids": positions, "labels": labels})
    return batches


def lora_param_count(model, r: int, target_modules: Iterable[str]) -> int:
    """r x (in_features + out_features) for every linear layer whose name ends with a target: the count of
    LoRA's A (r x in) and B (out x r) matrices."""
    targets = tuple(target_modules)
    n = 0
    for name, module in model.named_modules():
        if name.split(".")[-1] in targets and hasattr(module, "in_features"):
            n += r * (module.in_features + module.out_features)
    if n == 0:
        raise WorkbookError(f"No linear layer named {targets} in {type(model).__name__}.",
                            "Use the module names printed by [n for n, _ in model.named_modules()].")
    return n


def trainable_params(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train(model, batches: list[dict], *, steps: int, lr: float = 1e-3,
          on_step: Callable[[dict], None] | None = None, log_every: int = 1) -> pd.DataFrame:
    """AdamW over the trainable parameters for ``steps`` steps, cycling through ``batches``.

    Returns one row per logged step: loss, real (unmasked) tokens trained on, tokens per second so far.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise WorkbookError("The model has no trainable parameters.", "Add an adapter first (model.add_adapter(LoraConfig(...))).")
    opt = torch.optim.AdamW(params, lr=lr)
    device = next(model.parameters()).device
    model.train()
    rows, tokens, t0 = [], 0, time.perf_counter()
    for step in range(steps):
        batch = {k: v.to(device) for k, v in batches[step % len(batches)].items()}
        loss = model(**batch, use_cache=False).loss  # no cache: also what lets transformers read packed boundaries
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int((batch["labels"] != -100).sum())
        if step % log_every == 0 or step == steps - 1:
            row = {"step": step, "loss": loss.item(), "tokens": tokens,
                   "tokens_per_s": tokens / (time.perf_counter() - t0)}
            rows.append(row)
            if on_step is not None:
                on_step(row)
    model.eval()
    return pd.DataFrame(rows)
