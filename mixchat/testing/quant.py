"""Builders and probes for the quantization tests and benchmarks (tests/engine/test_quant.py,
benchmarks/quant_memory.py, benchmarks/quant_cache.py): small Mixtral checkpoints whose
experts dominate, fixed prompts, logits and their closeness, and a fresh process that
measures the peak memory of a load. Needs torch (a test and benchmark helper only)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import torch

RATIO_SHAPE = {"vocab": 1024, "hidden": 256, "intermediate": 896, "layers": 4, "experts": 8}
# For the memory test: 44M parameters (92 MB in bf16) in many tensors of 0.23M, so that one
# tensor in flight is small beside the whole, as in Mixtral (one expert matrix: 0.25%).
MEMORY_SHAPE = {"vocab": 1024, "hidden": 256, "intermediate": 896, "layers": 8, "experts": 8}
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


def build_mixtral_checkpoint(
    out_dir: Path,
    *,
    vocab: int,
    hidden: int,
    intermediate: int,
    layers: int,
    experts: int,
    seed: int = 0,
    max_shard_size: str = "8MB",
) -> Path:
    """Save a random bf16 ``MixtralForCausalLM`` (hub key layout, sharded) without tokenizer."""
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(seed)
    config = MixtralConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=2,
        num_local_experts=experts,
        num_experts_per_tok=2,
        max_position_embeddings=4096,
    )
    model = MixtralForCausalLM(config).to(torch.bfloat16)  # type: ignore[arg-type]
    model.save_pretrained(out_dir, max_shard_size=max_shard_size)
    return out_dir


def prompts(vocab: int) -> torch.Tensor:
    """The same 4 x 64 random token ids for every model compared."""
    return torch.randint(0, vocab, (4, 64), generator=torch.Generator().manual_seed(1))


def logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits.float()


def closeness(got: torch.Tensor, want: torch.Tensor) -> dict[str, float]:
    """Per-position cosine of next-token logit vectors, top-1 agreement, relative L2."""
    cos = torch.nn.functional.cosine_similarity(got, want, dim=-1)
    return {
        "cos_min": float(cos.min()),
        "cos_mean": float(cos.mean()),
        "top1": float((got.argmax(-1) == want.argmax(-1)).float().mean()),
        "rel_l2": float((got - want).norm() / want.norm()),
    }


PEAK_PROBE = """
import gc, json, sys, torch
from pathlib import Path
from mixchat.engine.local.loader import weight_bytes
from mixchat.engine.local.bnb_experts import check_device_support
from mixchat.engine.local.quantized import load_quantized_mixtral
from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig, GenerationConfig
import transformers.models.mixtral.modeling_mixtral, accelerate, safetensors

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

model_dir, how = Path(sys.argv[1]), sys.argv[2]
check_device_support("4bit", torch.device("cpu"))  # imports and kernels warmed up
check_device_support("8bit", torch.device("cpu"))
gc.collect()
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset the RSS high-water mark (VmHWM) to the current RSS
before = status("VmRSS")
if how in ("4bit", "8bit"):
    model = load_quantized_mixtral(model_dir, how, torch.bfloat16, "cpu")
else:  # stock transformers: "bf16" or "stock-4bit"
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16,
        quantization_config=quant if how == "stock-4bit" else None)
print(json.dumps({"before": before, "peak": status("VmHWM"), "after": status("VmRSS"),
                  "weight_bytes": weight_bytes(model)}))
"""

# glibc keeps freed blocks below its (self-raising) mmap threshold in the heap, so RSS would
# show the allocator's cache as well as the loader's live memory. A fixed threshold makes
# freed blocks go back to the OS; benchmarks/quant_memory.py reports both.
RETURN_FREED = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def measure_load_peak(
    model_dir: Path, how: str, env: dict[str, str] | None = None
) -> dict[str, int]:
    """RSS before, at the peak of, and after loading ``model_dir`` in a fresh process.

    ``how``: ``4bit`` / ``8bit`` (mixchat), ``bf16`` or ``stock-4bit`` (transformers).
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PEAK_PROBE), str(model_dir), how],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the load probe failed:\n{proc.stderr}")
    result: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def checkpoint_numel(model_dir: Path) -> int:
    """Parameters stored in a checkpoint's safetensors shards."""
    from safetensors import safe_open

    total = 0
    for shard in model_dir.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                total += math.prod(handle.get_slice(key).get_shape())
    return total
