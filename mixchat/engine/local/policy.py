"""Loading policy: dtype, attention, device map and where a quantized Mixtral's parts go.

Decisions only; the loaders carry them out. torch is imported inside functions.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mixchat.config import Settings, parse_max_memory
from mixchat.engine.base import EngineError

Notice = Callable[[str], None]
GENERATIVE_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU."""
    import torch

    return bool(torch.cuda.is_available())


def choose_dtype(setting: str, cuda: bool) -> str:
    """``auto`` is bf16 on CUDA and fp32 on CPU (CPU bf16 matmuls are slow)."""
    if setting != "auto":
        return setting
    return "bfloat16" if cuda else "float32"


def choose_attention(setting: str, cuda: bool, notice: Notice) -> str:
    """flash_attention_2 only where flash-attn and a capable GPU exist; else SDPA."""
    if setting in ("auto", "sdpa"):
        return "sdpa"
    if setting == "eager":
        return "eager"
    reason = None
    if importlib.util.find_spec("flash_attn") is None:
        reason = "the flash-attn package is not installed (pip install 'mixchat[flash]')"
    elif not cuda:
        reason = "flash-attention needs a CUDA GPU"
    else:
        import torch

        major, _ = torch.cuda.get_device_capability()
        if major < 8:
            reason = "flash-attention 2 needs an Ampere or newer GPU"
    if reason:
        notice(f"flash-attention unavailable: {reason}; using PyTorch SDPA instead")
        return "sdpa"
    return "flash_attention_2"


def device_map(setting: str, cuda: bool) -> Any:
    """``auto`` (accelerate places it over the GPUs), ``None`` (CPU) or ``{"": "cuda:N"}``."""
    if setting == "auto":
        return "auto" if cuda else None
    if setting == "cpu":
        return None
    if setting.startswith("cuda"):
        if not cuda:
            raise EngineError(f"--device-map {setting}: no CUDA GPU is available")
        return {"": setting}
    raise EngineError(f"--device-map {setting}: expected auto, cpu or cuda:N")


def stock_max_memory(
    settings: Settings, chosen_map: Any, notice: Notice
) -> dict[int | str, int] | None:
    """Per-device limits in bytes for accelerate's placement; only meaningful with ``auto``."""
    if not settings.max_memory:
        return None
    if chosen_map != "auto":
        notice("--max-memory applies only with --device-map auto on CUDA; ignored")
        return None
    return parse_max_memory(settings.max_memory)


def check_generative(model_dir: Path, config: dict[str, Any]) -> None:
    """Refuse checkpoints whose declared architectures are not text generators: transformers
    maps some encoders (BERT) to a causal head, which would chat in noise."""
    architectures = config.get("architectures") or []
    if architectures and not any(str(a).endswith(GENERATIVE_HEADS) for a in architectures):
        names = ", ".join(str(a) for a in architectures)
        raise EngineError(f"{model_dir}: not a causal language model ({names})")


def quantized_placement(
    model_dir: Path,
    settings: Settings,
    dtype: str,
    chosen_map: Any,
    notice: Notice,
    ram_available: Callable[[], int | None] | None = None,
) -> Any:
    """Where a quantized Mixtral goes: ``"cpu"``, one GPU, or a ``Placement`` over several
    GPUs (``--device-map auto`` when ``--max-memory`` limits them or it does not fit the
    first) and system RAM (``--cpu-experts``; ``--max-memory cpu=...`` caps that RAM).
    ``ram_available`` reports the free RAM (default: the hardware probe)."""
    from transformers import AutoConfig

    from mixchat.engine.local.placement import (
        budgets_from_free_memory,
        budgets_from_max_memory,
        parse_cpu_experts,
        plan_cpu_experts,
        plan_placement,
        ram_budget,
    )
    from mixchat.engine.local.sizes import mixtral_sizes

    config = AutoConfig.from_pretrained(model_dir)
    num_layers = int(config.num_hidden_layers)
    request = parse_cpu_experts(settings.cpu_experts, num_layers)
    if chosen_map is None:
        if settings.max_memory:
            notice("--max-memory applies only with --device-map auto on CUDA; ignored")
        if request:
            notice("--cpu-experts: the whole model runs on the CPU already; ignored")
        return "cpu"
    limits: dict[str, int] = {}
    if settings.max_memory and chosen_map == "auto":
        limits = budgets_from_max_memory(parse_max_memory(settings.max_memory))
    elif settings.max_memory:
        notice("--max-memory applies only with --device-map auto on CUDA; ignored")
    ram_limit = limits.pop("cpu", None)
    if ram_limit is not None and not request:
        notice("--max-memory cpu=...: limits the RAM of --cpu-experts only; ignored")
    if isinstance(chosen_map, dict) and not request:
        return str(chosen_map[""])
    if isinstance(chosen_map, dict):
        budgets = budgets_from_free_memory(_free_gpu_memory([str(chosen_map[""])]))
    elif limits:
        budgets = limits
    else:
        free = _free_gpu_memory(None)
        if len(free) <= 1 and not request:
            return "cuda:0"
        budgets = budgets_from_free_memory(free)
    bytes_per_value = {"float32": 4, "float64": 8}.get(dtype, 2)
    sizes = mixtral_sizes(config, settings.quantization, bytes_per_value, settings.double_quant)
    if not request:
        return plan_placement(sizes, num_layers, budgets)
    if ram_available is None:
        from mixchat.engine.local.hardware import available_ram

        ram_available = available_ram
    ram = ram_budget(ram_available(), ram_limit)
    return plan_cpu_experts(sizes, num_layers, budgets, ram, request)


def _free_gpu_memory(devices: list[str] | None) -> dict[str, int]:
    """Free bytes of ``devices`` (all GPUs when ``None``), from the hardware probe."""
    from mixchat.engine.local.hardware import probe

    free = {f"cuda:{g.index}": g.free_bytes for g in probe().gpus}
    if devices is None:
        return free
    named = {d: f"cuda:{d.partition(':')[2] or 0}" for d in devices}
    return {device: free.get(key, 0) for device, key in named.items()}
