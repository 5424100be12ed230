"""Decode speed of Mixtral-width experts computed on the CPU: int8 / int4 weight-only kernels
(``mixchat.engine.local.cpu_kernels``) against bf16 and fp32 experts, same machine, same run.

A random-weight Mixtral with Mixtral-8x7B's layer shape (hidden 4096, experts 14336 wide, 8
experts, top-2, 32 query / 8 KV heads), ``--layers`` decoder layers and a small vocabulary
(so the embedding and LM head do not hide the layers). The model is built once in bf16; the
variants swap each layer's experts module: transformers' own ``MixtralExperts`` in bf16 (its
default experts implementation), mixchat's ``CpuQuantizedExperts`` in int8 and int4 (made
from the same bf16 weights), and with ``--fp32`` an fp32 copy of the whole model. Attention
and everything else stay bf16 (fp32 in the fp32 copy). Each repetition runs every variant
once, in turn (interleaved, so load on a shared machine hits all alike): a greedy prefill of
``--prompt`` tokens, then ``--tokens`` decode steps through the KV cache, timed. Medians are
reported, with one projection (14336 x 4096, one token) per kernel for reference,
bitsandbytes' NF4 included. Prints one JSON object.

    python benchmarks/cpu_experts.py                 # 1 layer, ~5.5 GB of RAM
    python benchmarks/cpu_experts.py --fp32          # and an fp32 copy: ~11 GB
    python benchmarks/cpu_experts.py --layers 2
    python benchmarks/cpu_experts.py --small         # a quick check that it runs
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from typing import Any

import torch

from mixchat.engine.local.cpu_kernels import (
    KERNEL_DTYPE,
    CpuQuantizedExperts,
    pack_weight,
    packed_matmul,
)


def build(args: argparse.Namespace) -> Any:
    """A bf16 Mixtral with random weights and ``args``' shape."""
    from transformers import AutoModelForCausalLM, MixtralConfig

    config = MixtralConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=max(1, args.heads // 4),
        num_local_experts=8,
        num_experts_per_tok=2,
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        config, dtype=torch.bfloat16, attn_implementation="sdpa"
    )
    return model.eval()


def quantized_experts(model: Any, mode: str) -> list[CpuQuantizedExperts]:
    """Each layer's experts as ``CpuQuantizedExperts`` from the bf16 weights."""
    out = []
    for layer in model.model.layers:
        plain = layer.mlp.experts
        module = CpuQuantizedExperts(model.config, mode)
        for e in range(plain.num_experts):
            module.set_expert("gate_up", e, plain.gate_up_proj[e].detach())
            module.set_expert("down", e, plain.down_proj[e].detach())
        out.append(module)
    return out


def decode(model: Any, prompt: torch.Tensor, tokens: int) -> tuple[float, float]:
    """Prefill ``prompt`` then ``tokens`` greedy steps; (prefill s, decode tokens/s)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        start = time.perf_counter()
        logits = model(input_ids=prompt, cache=cache, use_cache=True).logits
        prefill = time.perf_counter() - start
        step = logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(tokens):
            logits = model(input_ids=step, cache=cache, use_cache=True).logits
            step = logits[:, -1:].argmax(-1)
        elapsed = time.perf_counter() - start
    return prefill, tokens / elapsed


def projection_ms(hidden: int, intermediate: int, reps: int) -> dict[str, float]:
    """One ``[intermediate, hidden]`` projection applied to one token, per kernel (ms)."""
    torch.manual_seed(1)
    weight = torch.randn(intermediate, hidden) * 0.02
    x = torch.randn(1, hidden)
    dense = {"fp32": weight, "bf16": weight.to(torch.bfloat16)}
    packs = {mode: pack_weight(mode, weight) for mode in ("8bit", "4bit")}
    calls = {
        "fp32": lambda: x @ dense["fp32"].T,
        "bf16": lambda: x.to(torch.bfloat16) @ dense["bf16"].T,
        "int8": lambda: packed_matmul(x.to(KERNEL_DTYPE), *packs["8bit"]),
        "int4": lambda: packed_matmul(x.to(KERNEL_DTYPE), *packs["4bit"]),
    }
    try:
        from mixchat.engine.local.bnb_experts import QUANT_TYPE, import_bnb

        bnb = import_bnb()
        packed, state = bnb.functional.quantize_4bit(
            weight.to(torch.bfloat16), blocksize=64, quant_type=QUANT_TYPE
        )
        xb = x.to(torch.bfloat16)
        calls["bnb_nf4"] = lambda: bnb.matmul_4bit(xb, packed.t(), quant_state=state)
    except Exception as exc:  # bitsandbytes missing or without a CPU backend
        print(json.dumps({"note": f"bitsandbytes NF4 not measured: {exc}"}))
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()
    for _ in range(reps):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: round(1000 * statistics.median(t), 2) for name, t in times.items()}


def available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=14336)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    parser.add_argument("--tokens", type=int, default=16, help="decode steps per repetition")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--fp32", action="store_true", help="also an fp32 copy (~6 GB a layer)")
    parser.add_argument("--small", action="store_true", help="a tiny shape, to check it runs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.small:
        args.hidden, args.intermediate, args.heads, args.reps, args.tokens = 256, 512, 8, 3, 8

    model = build(args)
    variants: dict[str, Any] = {"bf16": model}
    swaps = {
        "int8": quantized_experts(model, "8bit"),
        "int4": quantized_experts(model, "4bit"),
    }
    plain = [layer.mlp.experts for layer in model.model.layers]
    expert_bytes = sum(t.numel() * t.element_size() for m in plain for t in m.parameters())
    if args.fp32:
        fp32_bytes = 2 * expert_bytes + 2 * sum(p.numel() for p in model.parameters())
        room = available_ram()
        if room is not None and room < fp32_bytes + (1 << 30):
            args.fp32 = False
            print(json.dumps({"note": f"fp32 skipped: needs {fp32_bytes >> 20} MiB"}))
        else:
            variants["fp32"] = copy.deepcopy(model).float()

    def run(name: str) -> tuple[float, float]:
        for layer, plain_experts, i8, i4 in zip(
            model.model.layers, plain, swaps["int8"], swaps["int4"], strict=True
        ):
            layer.mlp.experts = {"int8": i8, "int4": i4}.get(name, plain_experts)
        target = variants.get(name, model)
        return decode(target, prompt, args.tokens)

    prompt = torch.randint(
        0, args.vocab, (1, args.prompt), generator=torch.Generator().manual_seed(2)
    )
    names = ["bf16", "int8", "int4"] + (["fp32"] if args.fp32 else [])
    decode_tps: dict[str, list[float]] = {n: [] for n in names}
    prefill_s: dict[str, list[float]] = {n: [] for n in names}
    for name in names:  # warm-up
        run(name)
    for _ in range(args.reps):
        for name in names:
            prefill, tps = run(name)
            decode_tps[name].append(tps)
            prefill_s[name].append(prefill)
    median = {n: statistics.median(v) for n, v in decode_tps.items()}
    quant_bytes = {
        mode: sum(t.numel() * t.element_size() for m in swaps[mode] for t in m.buffers())
        for mode in swaps
    }
    result = {
        "benchmark": "cpu_experts",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "load_average": list(os.getloadavg()),
        },
        "shape": {
            "layers": args.layers,
            "hidden": args.hidden,
            "intermediate": args.intermediate,
            "experts": 8,
            "top_k": 2,
            "vocab": args.vocab,
            "prompt_tokens": args.prompt,
            "decode_steps": args.tokens,
            "repetitions": args.reps,
        },
        "expert_bytes_per_layer": {
            "bf16": expert_bytes // args.layers,
            **{m: quant_bytes[m] // args.layers for m in quant_bytes},
        },
        "decode_tokens_per_s_median": {n: round(v, 3) for n, v in median.items()},
        "decode_over_bf16": {n: round(v / median["bf16"], 2) for n, v in median.items()},
        # each repetition's ratio to the bf16 run next to it, then the median: steadier when
        # the machine's load drifts during the run
        "decode_over_bf16_paired": {
            n: round(
                statistics.median(a / b for a, b in zip(v, decode_tps["bf16"], strict=True)), 2
            )
            for n, v in decode_tps.items()
        },
        "decode_tokens_per_s_all": {n: [round(x, 3) for x in v] for n, v in decode_tps.items()},
        "prefill_s_median": {n: round(statistics.median(v), 3) for n, v in prefill_s.items()},
        "one_projection_ms_median": projection_ms(args.hidden, args.intermediate, args.reps),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
