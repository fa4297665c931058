"""Helpers for notebooks 05 (choosing a combination) and 06 (LoRA training)."""

import pandas as pd
import pytest
import torch

from helpers import models
from helpers.errors import WorkbookError
from helpers.measure import batches
from helpers.measure.protocol import Protocol
from helpers.models import checkpoints
from helpers.show import charts, panels
from helpers.techniques import recommend, training

ONCE = Protocol(warmup=0, min_reps=1, max_reps=1)  # a row's shape, not a figure

TINY = "llama-2-7b-tiny"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


@pytest.fixture(scope="module")
def tok():
    return checkpoints.byte_tokenizer()


def test_corpus_is_the_projects_own_prose():
    docs = training.corpus()
    assert len(docs) > 50 and sum(map(len, docs)) > 20_000
    assert any("FlashAttention" in d for d in docs) and not any(d.startswith("|") for d in docs)


def test_padded_and_packed_batches_hold_the_same_documents_differently(tok):
    docs = training.corpus()[:24]
    padded = training.padded_batches(tok, docs, 4, 256)
    packed = training.packed_batches(tok, docs, 2, 512)
    for b in padded:
        assert ((b["labels"] == -100) == (b["attention_mask"] == 0)).all()
    for b in packed:
        assert "attention_mask" not in b and b["input_ids"].shape == b["position_ids"].shape
        assert (b["position_ids"][:, 0] == 0).all()
        assert ((b["labels"] == -100) == (b["position_ids"] == 0)).all()
    pad_share = sum(int((b["attention_mask"] == 0).sum()) for b in padded) / sum(
        b["input_ids"].numel() for b in padded
    )
    # the README's first paragraphs: their share moves with every edit (0.19-0.23 so far), never near 0
    assert pad_share > 0.1, "real paragraphs differ in length, so padding wastes positions"


def test_packed_documents_do_not_see_each_other(tok):
    loaded = models.load(TINY, dtype="fp32", attention="sdpa")
    a, b = torch.randint(4, 250, (40,)), torch.randint(4, 250, (24,))
    packed = {k: v.to(loaded.device) for k, v in batches.pack_batch([a, b]).items()}
    with torch.inference_mode():
        together = loaded.model(**packed, use_cache=False).logits[0, 40:]
        alone = loaded.model(b[None].to(loaded.device), use_cache=False).logits[0]
    assert torch.allclose(together, alone, atol=1e-4), "the second document sees only itself"


@pytest.fixture(scope="module")
def lora_model():
    from peft import LoraConfig, prepare_model_for_kbit_training

    loaded = models.load(TINY, dtype="bf16", quant="nf4")
    model = prepare_model_for_kbit_training(loaded.model, use_gradient_checkpointing=False)
    model.add_adapter(LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, lora_dropout=0.0))
    return model


def test_trainable_parameters_follow_the_lora_formula(lora_model):
    assert training.trainable_params(lora_model) == training.lora_param_count(lora_model, 8, TARGETS)
    with pytest.raises(WorkbookError, match="No linear layer"):
        training.lora_param_count(lora_model, 8, ["no_such_layer"])


def test_loss_falls_when_training_the_adapter_on_the_corpus(lora_model, tok):
    batches = training.packed_batches(tok, training.corpus()[:64], 2, 256)
    seen = []
    log = training.train(lora_model, batches[:4], steps=30, lr=3e-3, on_step=seen.append)
    assert len(seen) == len(log) == 30
    assert log.loss.iloc[-5:].mean() < log.loss.iloc[:5].mean() * 0.9, log.loss.tolist()


def test_training_needs_trainable_parameters():
    loaded = models.load(TINY, dtype="fp32")
    for p in loaded.model.parameters():
        p.requires_grad_(False)
    with pytest.raises(WorkbookError, match="adapter"):
        training.train(loaded.model, [], steps=1)


def _grid():
    rows = []
    for attention, weights, peak, prefill, step in [
        ("sdpa", "bf16", 14.0, 30, 20),
        ("sdpa", "nf4", 5.0, 40, 28),
        ("eager", "bf16", 18.0, 60, 22),
        ("sdpa", "int8", 8.0, 100, 90),
    ]:
        rows.append(
            {
                "attention": attention,
                "weights": weights,
                "status": "ok",
                "peak_alloc_gib": peak,
                "prefill_ms": prefill,
                "decode_ms_per_token": step,
                "decode_tok_s": 1e3 / step,
                "batch_size": 1,
                "prompt_len": 512,
            }
        )
    rows.append({**rows[0], "weights": "fp32", "status": "OOM", "peak_alloc_gib": float("nan")})
    return pd.DataFrame(rows)


def test_pareto_front_keeps_only_undominated_points():
    front = recommend.pareto(_grid())
    assert front.tolist() == [True, True, False, False, False]


def test_recommender_picks_the_fastest_that_fits_and_says_why():
    best, why, ranked = recommend.choose(_grid(), budget_gib=16, prompt_len=300, new_tokens=64, batch_size=1)
    assert (best.attention, best.weights) == ("sdpa", "bf16") and "sdpa + bf16" in why
    best, why, _ = recommend.choose(_grid(), budget_gib=10, prompt_len=512, new_tokens=64, batch_size=1)
    assert best.weights == "nf4" and "would be faster" in why and "sdpa + bf16" in why
    best, why, _ = recommend.choose(_grid(), budget_gib=2, prompt_len=512, new_tokens=64, batch_size=1)
    assert best is None and "Nothing measured fits" in why
    with pytest.raises(WorkbookError, match="lacks"):
        recommend.choose(
            _grid().drop(columns="prefill_ms"), budget_gib=16, prompt_len=512, new_tokens=8, batch_size=1
        )


def _quality():
    """Perplexity increase per weight format, as quality.table writes it (bf16 the reference)."""
    return pd.DataFrame(
        {"weights": ["bf16", "int8", "nf4", "fp4"], "ppl_increase_pct": [0.0, 1.8, 24.5, 41.8]}
    )


def test_recommender_leaves_out_formats_above_a_perplexity_limit():
    kw = dict(prompt_len=512, new_tokens=64, batch_size=1, quality=_quality())
    best, why, _ = recommend.choose(_grid(), budget_gib=10, max_ppl_increase_pct=30, **kw)
    assert best.weights == "nf4" and "Left out" not in why, "nf4 (+24.5%) is within 30%"
    best, why, ranked = recommend.choose(_grid(), budget_gib=10, max_ppl_increase_pct=5, **kw)
    assert best.weights == "int8" and "nf4 (+24.5%)" in why and "+5%" in why
    assert set(ranked.weights) == {"bf16", "int8"} and (ranked.ppl_increase_pct <= 5).all()
    best, why, _ = recommend.choose(_grid(), budget_gib=6, max_ppl_increase_pct=5, **kw)
    assert best is None and "Nothing measured fits" in why and "nf4" in why
    best, why, _ = recommend.choose(_grid(), budget_gib=16, max_ppl_increase_pct=-1, **kw)
    assert best is None and "within +-1% perplexity" in why


def test_recommender_quality_limit_needs_a_quality_table_and_names_unmeasured_formats():
    kw = dict(budget_gib=16, prompt_len=512, new_tokens=64, batch_size=1, max_ppl_increase_pct=5)
    with pytest.raises(WorkbookError, match="quality table"):
        recommend.choose(_grid(), **kw)
    best, why, _ = recommend.choose(_grid(), quality=_quality().iloc[:1], **kw)
    assert best.weights == "bf16" and "int8 (no quality measured)" in why
    best, _, ranked = recommend.choose(_grid(), **{**kw, "max_ppl_increase_pct": None})
    assert "ppl_increase_pct" not in ranked, "without a limit the quality table is not needed"


def test_packed_rows_are_full_and_keep_the_corpus(tok):
    docs = training.corpus()
    packed = training.packed_batches(tok, docs, 4, 256)
    padded = training.padded_batches(tok, docs, 4, 256)
    assert all(b["input_ids"].shape == (4, 256) for b in packed)
    labelled = lambda bs: sum(int((b["labels"] != -100).sum()) for b in bs)  # noqa: E731
    assert labelled(packed) > 0.9 * labelled(padded), "packing drops at most a partial last batch"
    for b in packed:  # a row that starts inside a document restarts its positions
        assert (b["position_ids"][:, 0] == 0).all() and (b["position_ids"] >= 0).all()


def test_prepare_sets_up_lora_qlora_and_full_fine_tuning():
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS)
    half = models.load(TINY, dtype="bf16")
    training.prepare(half.model, lora=lora, checkpointing=False)
    trainable = [p for p in half.model.parameters() if p.requires_grad]
    assert training.trainable_params(half.model) == training.lora_param_count(half.model, 4, TARGETS)
    assert all(p.dtype == torch.float32 for p in trainable), "adapters train in fp32"
    full = models.load(TINY, dtype="bf16")
    training.prepare(full.model, lora=None, checkpointing=True)
    assert training.trainable_params(full.model) == sum(p.numel() for p in full.model.parameters())
    assert full.model.is_gradient_checkpointing
    with pytest.raises(WorkbookError, match="LoraConfig"):
        training.prepare(models.load(TINY, dtype="bf16", quant="nf4").model, lora=None)


def test_prepare_seeds_the_adapter_start_whatever_ran_before():
    from peft import LoraConfig

    def first_a(seed, noise):
        torch.rand(noise)  # whatever ran before in the kernel moves torch's random state
        m = training.prepare(
            models.load(TINY, dtype="fp32").model, lora=LoraConfig(r=4), checkpointing=False, seed=seed
        )
        return next(p for n, p in m.named_parameters() if "lora_A" in n).detach().clone()

    assert torch.equal(first_a(0, 3), first_a(0, 1000))
    assert not torch.equal(first_a(0, 3), first_a(1, 3))
    assert not torch.equal(first_a(None, 3), first_a(None, 1000))


def test_train_steps_streams_rows_and_step_cost_sees_padding(tok):
    from peft import LoraConfig

    loaded = models.load(TINY, dtype="fp32")
    training.prepare(loaded.model, lora=LoraConfig(r=4, target_modules=TARGETS), checkpointing=False)
    docs = training.corpus()[:40]
    stream = training.train_steps(loaded.model, training.packed_batches(tok, docs, 2, 128), steps=3)
    assert next(stream)["step"] == 0 and len(list(stream)) == 2
    padded = training.step_cost(loaded.model, training.padded_batches(tok, docs, 4, 256), protocol=ONCE)
    packed = training.step_cost(loaded.model, training.packed_batches(tok, docs, 4, 256), protocol=ONCE)
    assert packed["pad_share"] == 0 < padded["pad_share"]
    assert padded["real_tokens_per_step"] < padded["positions_per_step"] and padded["step_ms"] > 0


def test_recommender_on_another_memory_column_and_budget_choices():
    grid = _grid().assign(weights_gib=[13.0, 4.0, 13.0, 7.0, 26.0])
    best, why, _ = recommend.choose(
        grid, budget_gib=5, prompt_len=512, new_tokens=8, batch_size=1, memory="weights_gib"
    )
    assert best.weights == "nf4" and "needs 4 GiB" in why
    budgets = recommend.budget_choices(_grid())
    assert budgets == sorted(budgets) and budgets[0] > 5.0
    admitted = [int((_grid().peak_alloc_gib <= b).sum()) for b in budgets]
    assert admitted == sorted(admitted) and admitted[-1] == 4, admitted


def test_control_panel_reports_through_its_report_hook():

    panel = panels.ControlPanel(
        {"x": [1, 2]}, lambda p: {"why": f"picked {p['x']}"}, report=lambda rows: rows[-1]["why"]
    )
    panel.set(x=2).click()
    assert "picked 2" in panel.status.value and not panel.errors


def test_pareto_and_facet_plots_draw_every_row():

    grid = _grid().assign(workload="w")
    fig = charts.pareto_plot(grid, recommend.pareto(grid))
    front = next(t for t in fig.data if t.name == "Pareto front")
    assert list(front.text) == ["sdpa + nf4", "sdpa + bf16"]
    bars = charts.facet_bars(grid, "attention", "decode_tok_s", "weights", "workload")
    labels = [t for tr in bars.data for t in tr.text]
    assert "OOM" in labels and len(labels) == len(grid)


def _with_intervals(grid: pd.DataFrame, half_width: float) -> pd.DataFrame:
    """The grid as the protocol writes it: each speed and time with a confidence interval of +-half_width."""
    g = grid.copy()
    for col, unit in (("decode_tok_s", ""), ("prefill_ms", "_ms"), ("decode_ms_per_token", "_ms")):
        name = {"prefill_ms": "prefill", "decode_ms_per_token": "decode_step"}.get(col, col)
        g[f"{name}_ci_low{unit}"] = g[col] * (1 - half_width)
        g[f"{name}_ci_high{unit}"] = g[col] * (1 + half_width)
    return g


def test_pareto_keeps_points_the_intervals_cannot_separate_and_names_the_ties():
    grid = _grid()
    narrow, wide = _with_intervals(grid, 0.001), _with_intervals(grid, 0.5)
    assert (
        recommend.pareto(narrow).tolist()
        == recommend.pareto(grid).tolist()
        == [True, True, False, False, False]
    )
    # eager (more memory) cannot be told from sdpa within +-50%; int8 is still beaten by nf4 beyond the noise
    assert recommend.pareto(wide).tolist() == [True, True, True, False, False]
    assert recommend.ties(grid[grid.status == "ok"]) == []
    groups = recommend.ties(wide[wide.status == "ok"])
    assert groups and all(len(g) >= 2 for g in groups)


def test_recommender_says_when_the_best_is_tied():
    kw = dict(budget_gib=16, prompt_len=512, new_tokens=64, batch_size=1)
    best, why, ranked = recommend.choose(_with_intervals(_grid(), 0.001), **kw)
    assert "Tied" not in why and "Next:" in why
    best, why, ranked = recommend.choose(_with_intervals(_grid(), 0.5), **kw)
    assert (best.attention, best.weights) == ("sdpa", "bf16")
    assert "Tied with" in why and "intervals overlap" in why, why
    assert (ranked.request_s_ci_low <= ranked.request_s).all() and (
        ranked.request_s <= ranked.request_s_ci_high
    ).all()


def _repacks_4bit_on_this_cpu() -> bool:
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


@pytest.mark.skipif(
    not _repacks_4bit_on_this_cpu(), reason="bitsandbytes repacks 4-bit weights only on CPUs with AVX512-BF16"
)
def test_a_4bit_model_still_trains_after_an_inference_pass():
    """bitsandbytes 0.50 repacks a CPU 4-bit layer at its first inference pass for a kernel with no backward;
    ``models.load`` turns that off, so gradients after a ``generate`` are those before it (notebook 06)."""
    loaded = models.load(TINY, dtype="fp32", quant="nf4")
    layers = [m for m in loaded.model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)
    ids = torch.randint(4, 250, (1, 16), generator=torch.Generator().manual_seed(0))

    def input_gradient():
        x = loaded.model.get_input_embeddings()(ids).detach().requires_grad_(True)
        loaded.model(inputs_embeds=x, use_cache=False).logits.pow(2).mean().backward()
        return x.grad

    before = input_gradient()
    with torch.inference_mode():
        loaded.model(ids)  # what generate does first
    assert torch.equal(input_gradient(), before) and before.norm() > 0
    for m in layers:  # bitsandbytes' own default: the same pass repacks every layer, and the gradient changes
        m.support_avx512bf16_for_cpu = True
    with torch.inference_mode():
        loaded.model(ids)
    assert all(m.weight.quant_state.packing_format_for_cpu for m in layers)
    assert (input_gradient() - before).norm() > 0.1 * before.norm()


def test_choose_takes_the_nearest_measured_pair_when_a_grid_skips_some():
    """05's grid measures (short prompt, batch 1) and (long prompt, large batch) only: a question about
    (short prompt, large batch) is answered from the pair at or above it, never from a missing one."""
    grid = pd.DataFrame(
        [
            {"weights": w, "attention": "sdpa", "prompt_len": p, "batch_size": b, "status": "ok"}
            | {"prefill_ms": 10.0 * p / 512, "decode_ms_per_token": 20.0, "peak_alloc_gib": g * b}
            for w, g in (("bf16", 1.0), ("nf4", 0.3))
            for p, b in ((512, 1), (2048, 16))
        ]
    )
    best, why, ranked = recommend.choose(grid, budget_gib=100, prompt_len=512, new_tokens=16, batch_size=16)
    assert best is not None and "prompt 2048, batch 16" in why, why
    assert set(ranked.batch_size) == {16}
    best, why, _ = recommend.choose(grid, budget_gib=100, prompt_len=256, new_tokens=16, batch_size=1)
    assert "prompt 512, batch 1" in why, why
    _, why, _ = recommend.choose(grid, budget_gib=100, prompt_len=8192, new_tokens=16, batch_size=1)
    assert "prompt 2048, batch 16" in why, "past every measured prompt: the longest, never the short one"
