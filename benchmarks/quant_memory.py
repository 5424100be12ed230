"""Weight bytes and logit closeness of mixchat's 4/8-bit Mixtral against stock bitsandbytes.

Builds a small random-weight Mixtral whose experts dominate as Mixtral's do (hidden 256,
intermediate 896, 8 experts, 4 layers, vocab 1024: 94.9% of parameters in experts; Mixtral
8x7B: 96.6%), saves it in bf16 with the hub's key layout, and loads it on CPU as:
full precision; stock transformers ``load_in_4bit`` / ``load_in_8bit`` (experts untouched,
bitsandbytes #1849); mixchat ``load_quantized_mixtral`` 4bit (NF4, with and without double
quant) and 8bit, with bitsandbytes' kernels as a GPU runs them (``cpu_kernels=False``).
Bytes are ``mixchat.engine.local.loader.weight_bytes`` (parameters, buffers and
bitsandbytes' quantization state), unquantized parts in bf16. Closeness compares next-token
logits (fp32 compute) with the fp32 model on 4 x 64 random tokens: per-position cosine,
top-1 agreement, relative L2. ``--memory`` adds RSS growth while loading a larger (8-layer)
checkpoint, measured in fresh processes. ``projected_mixtral_8x7b`` applies the same storage
layout to Mixtral-8x7B's shapes.

Prints one JSON object. Not part of the tests. Run: ``python benchmarks/quant_memory.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from mixchat.engine.local.bnb_experts import import_bnb
from mixchat.engine.local.loader import weight_bytes
from mixchat.engine.local.quantized import load_quantized_mixtral
from mixchat.testing.quant import (
    MEMORY_SHAPE,
    RATIO_SHAPE,
    RETURN_FREED,
    build_mixtral_checkpoint,
    closeness,
    logits,
    measure_load_peak,
    prompts,
)


def stock(model_dir: Path, mode: str, dtype: torch.dtype) -> Any:
    """transformers' own loading; ``mode`` is none, 4bit or 8bit."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = None
    if mode == "4bit":
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    elif mode == "8bit":
        quant = BitsAndBytesConfig(load_in_8bit=True)
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, quantization_config=quant)


def projected_mixtral_8x7b() -> dict[str, float]:
    """GB for Mixtral-8x7B's shapes with the storage layouts measured here."""
    hidden, inter, layers, experts, vocab, kv = 4096, 14336, 32, 8, 32000, 1024
    expert = layers * experts * 3 * hidden * inter
    attention = layers * (2 * hidden * hidden + 2 * hidden * kv)
    rest = 2 * vocab * hidden + layers * (experts * hidden + 2 * hidden) + hidden
    nf4 = 0.5 + 1 / 64 + 4 / (64 * 256)  # packed nibbles, uint8 absmax, fp32 nested absmax
    int8 = 1 + 4 / hidden  # int8 rows and one fp32 scale per row (rows of ~hidden or more)
    gb = 1e9
    return {
        "parameters_b": round((expert + attention + rest) / 1e9, 2),
        "experts_b": round(expert / 1e9, 2),
        "bf16_gb": round(2 * (expert + attention + rest) / gb, 1),
        "stock_4bit_gb": round((2 * expert + nf4 * attention + 2 * rest) / gb, 1),
        "mixchat_4bit_gb": round((nf4 * (expert + attention) + 2 * rest) / gb, 1),
        "mixchat_8bit_gb": round((int8 * (expert + attention) + 2 * rest) / gb, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", action="store_true", help="also measure RSS while loading")
    args = parser.parse_args()
    import_bnb()  # before transformers imports it: keeps bitsandbytes' import chatter quiet
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_mixtral_checkpoint(Path(tmp) / "ratio", **RATIO_SHAPE)
        full = stock(model_dir, "none", torch.bfloat16)
        params = sum(p.numel() for p in full.parameters())
        experts = sum(p.numel() for n, p in full.named_parameters() if ".experts." in n)
        bf16 = weight_bytes(full)
        sizes = {
            "bf16": bf16,
            "stock_load_in_4bit": weight_bytes(stock(model_dir, "4bit", torch.bfloat16)),
            "stock_load_in_8bit": weight_bytes(stock(model_dir, "8bit", torch.bfloat16)),
            "mixchat_4bit": weight_bytes(
                load_quantized_mixtral(model_dir, "4bit", torch.bfloat16, "cpu", cpu_kernels=False)
            ),
            "mixchat_4bit_no_double_quant": weight_bytes(
                load_quantized_mixtral(
                    model_dir, "4bit", torch.bfloat16, "cpu", False, cpu_kernels=False
                )
            ),
            "mixchat_8bit": weight_bytes(
                load_quantized_mixtral(model_dir, "8bit", torch.bfloat16, "cpu", cpu_kernels=False)
            ),
        }
        ids = prompts(RATIO_SHAPE["vocab"])
        want = logits(stock(model_dir, "none", torch.float32), ids)
        close = {
            "stock_load_in_4bit": closeness(
                logits(stock(model_dir, "4bit", torch.float32), ids), want
            ),
            "stock_load_in_8bit": closeness(
                logits(stock(model_dir, "8bit", torch.float32), ids), want
            ),
            "mixchat_4bit": closeness(
                logits(
                    load_quantized_mixtral(
                        model_dir, "4bit", torch.float32, "cpu", cpu_kernels=False
                    ),
                    ids,
                ),
                want,
            ),
            "mixchat_8bit": closeness(
                logits(
                    load_quantized_mixtral(
                        model_dir, "8bit", torch.float32, "cpu", cpu_kernels=False
                    ),
                    ids,
                ),
                want,
            ),
        }
        report: dict[str, Any] = {
            "model": {**RATIO_SHAPE, "parameters": params, "expert_fraction": experts / params},
            "weight_bytes": sizes,
            "ratio_to_bf16": {k: round(v / bf16, 4) for k, v in sizes.items()},
            "logits_vs_fp32": {k: {m: round(x, 4) for m, x in v.items()} for k, v in close.items()},
            "projected_mixtral_8x7b": projected_mixtral_8x7b(),
        }
        if args.memory:
            mem_dir = build_mixtral_checkpoint(
                Path(tmp) / "mem", **MEMORY_SHAPE, max_shard_size="6MB"
            )
            memory: dict[str, Any] = {"shape": MEMORY_SHAPE}
            for how in ("4bit", "bf16", "stock-4bit"):
                for label, env in (("glibc_default", None), ("freed_returned", RETURN_FREED)):
                    got = measure_load_peak(mem_dir, how, env)
                    memory[f"{how}_{label}"] = {
                        "peak_growth": got["peak"] - got["before"],
                        "after_growth": got["after"] - got["before"],
                        "weight_bytes": got["weight_bytes"],
                    }
            report["load_rss"] = memory
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
