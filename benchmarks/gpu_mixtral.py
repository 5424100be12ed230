"""Mixtral-8x7B on one GPU: decode tokens/s at batch 1 and time to first token (TTFT).

The model is a full-size Mixtral-8x7B (the hub config's shapes, 46.7B parameters) with random
weights: values do not change the speed. It is built on the meta device and each tensor is then
created directly on the target device (normal, std 0.02; norms 1), so no checkpoint is read and
host RAM stays small. Modes:

- ``bf16``: transformers' ``MixtralForCausalLM`` in bf16 with SDPA (~87 GiB: an H200).
- ``nf4``: the model ``mixchat --4bit`` runs, built as
  ``engine.local.quantized.load_quantized_mixtral`` builds it: ``quantized_skeleton``,
  experts through ``QuantizedMixtralExperts.set_expert``,
  attention projections through ``set_quantized_linear``, the rest through
  ``set_plain_parameter``, then ``finish_quantized_mixtral`` (~23 GiB: an H100).

For each prompt length (random token ids, greedy, EOS held off with ``min_new_tokens``):
``raw_generate`` is a bare ``model.generate`` (TTFT: a 1-new-token run; decode tok/s:
``(N - 1) / (t(N) - t(1))``); ``mixchat`` is ``mixchat.engine.generation.run_generate`` with a
fresh ``PrefixCache`` (its own ``ttft_s`` and ``tokens_per_s``). The bandwidth ceiling is the
bytes read per decoded token (non-expert weights but the embedding table, top-k of the experts,
summed from the module tensors, plus the KV cache at the mean context) over the bandwidth of a
device-to-device copy measured in the same run.

Experts (bf16): on a GPU, ``generate`` prefills with ``grouped_mm`` and switches to
``batched_mm`` for decode steps (``_optimize_model_for_decode``); ``batched_mm`` for a prefill
would copy two experts per prompt token. So prefill uses ``--prefill-experts`` and each of
``--experts`` is the decode implementation, set by replacing that method on the model; a hook
on layer 0's experts records which implementation each phase ran (``observed``).

Prints one JSON object (progress on stderr); not part of the tests. On a GPU machine:
``python benchmarks/gpu_mixtral.py [--mode bf16|nf4]``. On CPU, to check that it runs:
``python benchmarks/gpu_mixtral.py --small``. ``--dry-run``: parameter count and the memory each
mode needs, then exit.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from mixchat.engine.base import GenerationParams
from mixchat.engine.generation import GenerateResult, run_generate, sampling_kwargs
from mixchat.engine.kvcache import PrefixCache
from mixchat.engine.local.bnb_experts import ATTENTION, check_device_support, import_bnb
from mixchat.engine.local.loader import choose_dtype, weight_bytes
from mixchat.engine.local.placement import Placement
from mixchat.engine.local.quantized import (
    finish_quantized_mixtral,
    place_buffers,
    quantized_skeleton,
    set_plain_parameter,
    set_quantized_linear,
)
from mixchat.engine.tokenizer import ChatTokenizer
from mixchat.testing.models import v1_tokenizer_path

GIB = 2**30
NOMINAL_TB_S = {"h100_sxm": 3.35, "h200": 4.8}
ISSUE_CEILING_TOK_S = {"nf4_h100": 455, "bf16_h200": 188}
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # nibbles, uint8 absmax per 64, fp32 per 256 blocks
HEADROOM_GIB = 3.0  # activations, CUDA context, allocator slack
GREEDY = sampling_kwargs(GenerationParams(temperature=0))  # mixchat's greedy generate kwargs
SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
CONFIG_KEYS = (*SHAPE_KEYS, "num_key_value_heads", "num_local_experts", "vocab_size")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mixtral_config(small: bool) -> Any:
    """Mixtral-8x7B's config, or the same layout at toy size for ``--small``."""
    from transformers import MixtralConfig

    sizes = (256, 896, 4, 8, 2) if small else (4096, 14336, 32, 32, 8)
    shape: dict[str, Any] = dict(zip(CONFIG_KEYS[:5], sizes, strict=True))
    rope = {"rope_type": "default", "rope_theta": 1e6}
    return MixtralConfig(
        **shape, vocab_size=32000, num_local_experts=8, num_experts_per_tok=2, bos_token_id=1,
        eos_token_id=2, max_position_embeddings=32768, rope_parameters=rope,
        tie_word_embeddings=False,
    )  # fmt: skip


def kv_bytes_per_position(config: Any, element_size: int) -> int:
    head_dim = config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * element_size


def plan(config: Any, positions: int) -> dict[str, Any]:
    """Parameter counts of a meta-device model; GiB per mode; weights-only ceilings."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        meta = AutoModelForCausalLM.from_config(config)
    counts = {"experts": 0, "attention": 0, "other": 0}
    for name, param in meta.named_parameters():
        part = "experts" if ".experts." in name else "other"
        counts["attention" if ".self_attn." in name else part] += param.numel()
    # Read per decoded token: top-k experts, not the embedding table (one row of it).
    top_k = counts["experts"] * config.num_experts_per_tok / config.num_local_experts
    plain_read = counts["other"] - config.vocab_size * config.hidden_size
    bf16_token = 2 * (counts["attention"] + top_k + plain_read)
    nf4_token = NF4_BYTES * (counts["attention"] + top_k) + 2 * plain_read
    quantized = counts["experts"] + counts["attention"]
    return {
        "parameters": sum(counts.values()),
        **{f"{k}_parameters": v for k, v in counts.items()},
        "bf16_weight_gib": round(2 * sum(counts.values()) / GIB, 2),
        "nf4_weight_gib": round((NF4_BYTES * quantized + 2 * counts["other"]) / GIB, 2),
        "kv_cache_gib": round(kv_bytes_per_position(config, 2) * positions / GIB, 3),
        "headroom_gib": HEADROOM_GIB,
        "weights_only_ceiling_tok_s": {
            "nf4_h100_sxm_nominal": round(NOMINAL_TB_S["h100_sxm"] * 1e12 / nf4_token, 1),
            "bf16_h200_nominal": round(NOMINAL_TB_S["h200"] * 1e12 / bf16_token, 1),
        },
    }


def check_fits(mode: str, planned: dict[str, Any], device: torch.device) -> None:
    """Exit with one line when the mode cannot fit the device."""
    need = planned[f"{mode}_weight_gib"] + planned["kv_cache_gib"] + HEADROOM_GIB
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0] / GIB
    else:
        meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo"))  # noqa: SIM115
        free = int(meminfo["MemAvailable"].split()[0]) / 2**20
    if need > free:
        hint = "; try --mode nf4" if mode == "bf16" else ""
        raise SystemExit(f"--mode {mode} needs ~{need:.1f} GiB on {device}, {free:.1f} free{hint}")


def random_weight(shape: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """1-D tensors are norm weights (ones); the rest small normal values."""
    if len(shape) == 1:
        return torch.ones(shape, dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device).normal_(0.0, 0.02)


def finish(model: Any, device: torch.device) -> Any:
    """Computed buffers (rotary) join the weights on ``device``."""
    place_buffers(model, Placement.single(str(device), model.config.num_hidden_layers))
    return model.requires_grad_(False).eval()


def build_bf16(config: Any, device: torch.device) -> Any:
    """transformers' Mixtral in bf16, each parameter created on ``device`` in turn."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(
            config, dtype=torch.bfloat16, attn_implementation="sdpa"
        )
    for name, param in list(model.named_parameters()):
        module_name, _, attr = name.rpartition(".")
        value = random_weight(param.shape, torch.bfloat16, device)
        model.get_submodule(module_name)._parameters[attr] = torch.nn.Parameter(value, False)
    return finish(model, device)


def build_nf4(config: Any, dtype: torch.dtype, device: torch.device) -> Any:
    """The structure ``load_quantized_mixtral(..., '4bit')`` builds, fed random weights."""
    check_device_support("4bit", device)
    placement = Placement.single(str(device), config.num_hidden_layers)
    model = quantized_skeleton(config, "4bit", dtype, placement, True, "sdpa")
    for i, layer in enumerate(model.model.layers):
        experts = layer.mlp.experts
        for e in range(experts.num_experts):
            for proj, shape in experts.shapes.items():
                experts.set_expert(proj, e, random_weight(shape, dtype, device))
        for name in ATTENTION:
            module = getattr(layer.self_attn, name)
            weight = random_weight((module.out_features, module.in_features), dtype, device)
            set_quantized_linear(module, weight, "4bit", dtype, device)
        log(f"layer {i + 1}/{len(model.model.layers)} quantized")
    for name, param in list(model.named_parameters()):
        if param.device.type == "meta":  # embeddings, norms, routers, lm_head
            weight = random_weight(param.shape, dtype, device)
            set_plain_parameter(model, name, weight, dtype, device)
    return finish_quantized_mixtral(model, placement)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_bandwidth(device: torch.device) -> float:
    """Bytes/s of a device-to-device copy (read + write), best of 10 after a warm-up."""
    src = torch.ones((2 * GIB if device.type == "cuda" else 256 * 2**20) // 4, device=device)
    dst, best = torch.empty_like(src), float("inf")
    for _ in range(11):
        sync(device)
        started = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - started)
    size = 2 * src.numel() * src.element_size()
    del src, dst
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the model gets these 4 GiB back
    return size / best


def raw_generate(model: Any, ids: torch.Tensor, tokens: int) -> tuple[float, int]:
    """Seconds for a bare greedy ``generate`` of exactly ``tokens`` tokens, and the count."""
    sync(ids.device)
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
            min_new_tokens=tokens, pad_token_id=2, **GREEDY,
        )  # fmt: skip
    sync(ids.device)
    return time.perf_counter() - started, int(out.shape[1] - ids.shape[1])


def mixchat_generate(
    model: Any, tokenizer: ChatTokenizer, ids: list[int], tokens: int
) -> GenerateResult:
    """mixchat's own generation path, called as the engine's model thread calls it."""
    model.generation_config.min_new_tokens = tokens  # EOS cannot end a run early
    params = GenerationParams(temperature=0, max_new_tokens=tokens)
    texts: list[str] = []
    started = time.perf_counter()
    return run_generate(
        model, tokenizer, ids, params, threading.Event(), started, texts.append, PrefixCache()
    )


def use_decode_experts(model: Any, implementation: str) -> None:
    """Make ``generate`` decode with ``implementation`` in place of its own switch."""
    if not callable(getattr(model, "_optimize_model_for_decode", None)):
        raise SystemExit("transformers has no _optimize_model_for_decode: update this benchmark")

    @contextmanager
    def decode_with() -> Iterator[None]:
        before = model.get_experts_implementation()
        model.set_experts_implementation(implementation)
        try:
            yield
        finally:
            model.set_experts_implementation(before)

    model._optimize_model_for_decode = decode_with


def observing(model: Any) -> tuple[dict[str, set[str]], Any]:
    """Record the experts implementation each phase ran, from layer 0's experts."""
    seen: dict[str, set[str]] = {"prefill": set(), "decode": set()}

    def hook(module: Any, args: tuple[Any, ...]) -> None:
        phase = "decode" if args[0].shape[0] == 1 else "prefill"
        seen[phase].add(str(getattr(module, "config", model.config)._experts_implementation))

    return seen, model.model.layers[0].mlp.experts.register_forward_pre_hook(hook)


def measure_prompt(
    model: Any, tokenizer: ChatTokenizer, ids: list[int], args: argparse.Namespace, ceiling: float
) -> dict[str, Any]:
    """TTFT and decode tok/s of both paths for one prompt, medians of ``--repeats``."""
    device = model.model.embed_tokens.weight.device
    tensor, n = torch.tensor([ids], device=device), args.decode_tokens
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ttft: dict[str, list[float]] = {"raw_generate": [], "mixchat": []}
    decode: dict[str, list[float]] = {"raw_generate": [], "mixchat": []}
    made = {"raw_generate": 0, "mixchat": 0}
    for rep in range(args.repeats):  # alternate the order: neither side always goes first
        for side in ("raw_generate", "mixchat")[:: 1 if rep % 2 == 0 else -1]:
            if side == "raw_generate":
                first, _ = raw_generate(model, tensor, 1)
                total, made[side] = raw_generate(model, tensor, n)
                ttft[side].append(first)
                decode[side].append((made[side] - 1) / (total - first))
            else:
                result = mixchat_generate(model, tokenizer, ids, n)
                made[side] = result.completion_tokens
                ttft[side].append(float(result.ttft_s or 0.0))
                decode[side].append(float(result.tokens_per_s or 0.0))
    entry: dict[str, Any] = {"ceiling_tok_s": round(ceiling, 2)}
    for side in made:
        rate = statistics.median(decode[side])
        entry[side] = {
            "ttft_s": round(statistics.median(ttft[side]), 4),
            "decode_tok_s": round(rate, 3),
            "decode_tok_s_runs": [round(x, 3) for x in decode[side]],
            "new_tokens": made[side],
            "fraction_of_ceiling": round(rate / ceiling, 4),
        }
    ours, raw = entry["mixchat"], entry["raw_generate"]
    entry["mixchat_over_raw_decode"] = round(ours["decode_tok_s"] / raw["decode_tok_s"], 4)
    entry["mixchat_over_raw_ttft"] = round(ours["ttft_s"] / raw["ttft_s"], 4)
    if device.type == "cuda":
        entry["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / GIB, 2)
    return entry


def device_facts(device: torch.device) -> dict[str, Any]:
    import transformers

    facts: dict[str, Any] = {"device": str(device), "torch": torch.__version__}
    facts |= {"transformers": transformers.__version__, "bitsandbytes": import_bnb().__version__}
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        facts["name"] = torch.cuda.get_device_name(device)
        facts["capability"] = list(torch.cuda.get_device_capability(device))
        facts |= {"total_gib": round(total / GIB, 2), "free_gib_before": round(free / GIB, 2)}
    else:
        facts["note"] = "CPU run: checks that the script works; its figures say nothing of a GPU"
    return facts


def bandwidth_report(model: Any, config: Any, dtype: torch.dtype, bandwidth: float) -> dict:
    """Bytes read per decoded token, from the built model's tensors, and the ceilings."""
    experts = sum(weight_bytes(layer.mlp.experts) for layer in model.model.layers)
    top_k = experts * config.num_experts_per_tok / config.num_local_experts
    per_token = weight_bytes(model) - weight_bytes(model.model.embed_tokens) - experts + top_k
    return {
        "measured_copy_gb_s": round(bandwidth / 1e9, 1),
        "nominal_tb_s": NOMINAL_TB_S,
        "weight_bytes_per_token": round(per_token),
        "kv_bytes_per_position": kv_bytes_per_position(config, dtype.itemsize),
        "weights_only_ceiling_tok_s": {
            "measured": round(bandwidth / per_token, 1),
            **{f"{k}_nominal": round(v * 1e12 / per_token, 1) for k, v in NOMINAL_TB_S.items()},
        },
        "issue_estimates_tok_s": ISSUE_CEILING_TOK_S,
    }


def chat_tokenizer(config: Any) -> ChatTokenizer:
    """mixchat's tokenizer on the Mixtral v1 SentencePiece model that mistral-common ships."""
    with tempfile.TemporaryDirectory() as tmp:  # it reads config.json and tokenizer.model
        config.to_json_file(Path(tmp) / "config.json")
        shutil.copy(v1_tokenizer_path(), Path(tmp) / "tokenizer.model")
        return ChatTokenizer(Path(tmp))


def measure_label(
    model: Any,
    tokenizer: ChatTokenizer,
    ids: dict[int, list[int]],
    label: str,
    args: argparse.Namespace,
    ceiling: Callable[[int], float],
) -> dict[str, Any]:
    """Warm up, check which experts code runs (bf16), then measure every prompt length."""
    device = model.model.embed_tokens.weight.device
    if args.mode == "bf16":
        use_decode_experts(model, label)
    seen, hook = observing(model)
    first = next(iter(ids.values()))
    try:  # a prefill of each length, then both paths once
        for prompt in ids.values():
            raw_generate(model, torch.tensor([prompt], device=device), 1)
        raw_generate(model, torch.tensor([first], device=device), 8)
        mixchat_generate(model, tokenizer, first, 8)
    finally:
        hook.remove()
    entry: dict[str, Any] = {}
    if args.mode == "bf16":
        entry["observed"] = {phase: sorted(names) for phase, names in seen.items()}
        if entry["observed"]["decode"] != [label]:
            raise RuntimeError(f"decode ran {entry['observed']['decode']}, not {label}")
    entry["prompts"] = {
        str(p): measure_prompt(model, tokenizer, prompt, args, ceiling(p))
        for p, prompt in ids.items()
    }
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("bf16", "nf4"), help="default: nf4 under 100 GiB")
    parser.add_argument("--small", action="store_true", help="a toy Mixtral, to check on CPU")
    parser.add_argument("--prompts", default="512,4096", help="prompt lengths in tokens")
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--experts", default="eager,batched_mm,grouped_mm", help="bf16 decode")
    parser.add_argument("--prefill-experts", default="grouped_mm", help="bf16 prefill")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dry-run", action="store_true", help="print the memory plan and exit")
    args = parser.parse_args()
    if args.decode_tokens < 2:
        parser.error("--decode-tokens must be at least 2 (decode speed needs two tokens)")
    begun = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    cuda = device.type == "cuda"
    gpu_gib = torch.cuda.get_device_properties(device).total_memory / GIB if cuda else 0.0
    args.mode = args.mode or ("nf4" if gpu_gib < 100 else "bf16")
    prompts = [int(p) for p in args.prompts.split(",")]
    config = mixtral_config(args.small)
    import_bnb()  # before transformers imports it: keeps bitsandbytes' import chatter quiet
    planned = plan(config, max(prompts) + args.decode_tokens)
    if args.dry_run:
        print(
            json.dumps({"benchmark": "gpu_mixtral", "small": args.small, "plan": planned}, indent=2)
        )
        return
    check_fits(args.mode, planned, device)
    report: dict[str, Any] = {"benchmark": "gpu_mixtral", "mode": args.mode, "small": args.small}
    report["device"] = device_facts(device)
    bytes_per_s = measure_bandwidth(device)
    log(f"copy bandwidth {bytes_per_s / 1e9:.0f} GB/s; building the {args.mode} model")
    if args.mode == "bf16":
        dtype, model = torch.bfloat16, build_bf16(config, device)
        model.set_experts_implementation(args.prefill_experts)
        report["prefill_experts"], labels = args.prefill_experts, args.experts.split(",")
    else:
        dtype = getattr(torch, choose_dtype("auto", cuda))  # as `mixchat --4bit` picks it
        model = build_nf4(config, dtype, device)
        labels = ["QuantizedMixtralExperts"]  # --experts: bf16 only
    report["model"] = {
        "config": {k: getattr(config, k) for k in CONFIG_KEYS},
        "parameters": planned["parameters"],
        "compute_dtype": str(dtype).removeprefix("torch."),
        "weight_gib": round(weight_bytes(model) / GIB, 2),
    }
    if cuda:
        report["device"]["peak_allocated_gib_after_load"] = round(
            torch.cuda.max_memory_allocated(device) / GIB, 2
        )
        report["device"]["free_gib_after_load"] = round(torch.cuda.mem_get_info(device)[0] / GIB, 2)
    report["bandwidth"] = reads = bandwidth_report(model, config, dtype, bytes_per_s)

    def ceiling(prompt: int) -> float:  # tok/s if every byte a token reads came at copy speed
        context = prompt + args.decode_tokens / 2
        per_token = reads["weight_bytes_per_token"] + reads["kv_bytes_per_position"] * context
        return bytes_per_s / per_token

    tokenizer = chat_tokenizer(config)
    ids = {p: torch.randint(3, 32000, (p,), generator=torch.Generator().manual_seed(p)).tolist()
           for p in prompts}  # fmt: skip
    runs: dict[str, Any] = {}
    for label in labels:
        log(f"measuring {label}")
        try:
            runs[label] = measure_label(model, tokenizer, ids, label, args, ceiling)
        except Exception as exc:  # an implementation this build or device lacks, or OOM
            runs[label] = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
            if cuda:
                torch.cuda.empty_cache()
    report |= {"prompts": prompts, "decode_tokens": args.decode_tokens, "repeats": args.repeats}
    report["runs"] = runs
    if not cuda:
        report["device"]["peak_rss_gib"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2
        )
    report["elapsed_s"] = round(time.perf_counter() - begun, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
