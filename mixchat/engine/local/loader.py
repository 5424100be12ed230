"""Load a causal LM with the user's dtype, quantization, attention and placement.

The entry point of local loading: ``policy.py`` decides, ``stock.py`` (transformers'
``from_pretrained``) or ``quantized.py`` (mixchat's own quantized Mixtral) loads.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixchat.config import Settings
from mixchat.engine.base import EngineError
from mixchat.engine.local.policy import (
    check_generative,
    choose_attention,
    choose_dtype,
    cuda_available,
    device_map,
    quantized_placement,
)
from mixchat.engine.local.progress import ProgressCallback
from mixchat.engine.resolve import check_weights, read_config


@dataclass
class LoadedModel:
    """A model ready to generate, and how it was loaded."""

    model: Any
    dtype: str
    quantization: str
    attention: str
    device: str
    weight_bytes: int


def weight_bytes(model: Any) -> int:
    """Bytes the weights occupy: parameters, buffers and bitsandbytes' quantization state.

    ``get_memory_footprint`` counts parameters and buffers only, missing the absmax and code
    books a 4-bit weight keeps in its ``quant_state`` and an int8 layer's row scales. Shared
    tensors (tied embeddings, code books) count once.
    """
    import torch

    seen: set[tuple[str, int]] = set()
    total = 0

    def add(t: Any) -> None:
        nonlocal total
        if not isinstance(t, torch.Tensor) or t.device.type == "meta" or t.numel() == 0:
            return
        key = (str(t.device), t.data_ptr())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()

    def add_quant_state(state: Any) -> None:
        if state is not None:
            for name in ("absmax", "code", "offset"):
                add(getattr(state, name, None))
            add_quant_state(getattr(state, "state2", None))

    for module in model.modules():
        for param in module.parameters(recurse=False):
            add(param)
            add_quant_state(getattr(param, "quant_state", None))
            add(getattr(param, "SCB", None))
        for buffer in module.buffers(recurse=False):
            add(buffer)
        state = getattr(module, "state", None)  # Linear8bitLt keeps CB/SCB here after a forward
        add(getattr(state, "CB", None))
        add(getattr(state, "SCB", None))
    return total


def load_model(
    model_dir: Path,
    settings: Settings,
    progress: ProgressCallback,
    emit_notice: Callable[[str], None],
) -> LoadedModel:
    """Load the weights in ``model_dir`` (safetensors only) as ``settings`` ask, reporting
    ``LoadProgress`` events through ``progress``."""
    from mixchat.engine.local.checkpoint import summarize

    config = read_config(model_dir)
    if "auto_map" in config and not settings.trust_remote_code:
        raise EngineError(
            f"{model_dir}: the model needs code shipped with it; "
            "rerun with --trust-remote-code if you trust it"
        )
    check_generative(model_dir, config)
    check_weights(model_dir)
    cuda = cuda_available()
    dtype = choose_dtype(settings.dtype, cuda)
    attention = choose_attention(settings.attention, cuda, emit_notice)
    chosen_map = device_map(settings.device_map, cuda)
    mixtral = config.get("model_type") == "mixtral"
    if settings.cpu_experts not in ("", "0"):
        if not mixtral:
            emit_notice("--cpu-experts applies to Mixtral models only; ignored")
        elif settings.quantization == "none":
            raise EngineError(
                "--cpu-experts needs --4bit or --8bit (the CPU kernels compute quantized experts)"
            )
    if settings.quantization != "none" and mixtral:
        from mixchat.engine.local.quant_cache import QuantCache
        from mixchat.engine.local.quantized import load_quantized_mixtral

        cache = None
        if settings.quant_cache:
            cache = QuantCache(
                model_dir, settings.quantization, dtype, settings.double_quant, emit_notice
            )
        with _load_errors(model_dir):
            model = load_quantized_mixtral(
                model_dir,
                settings.quantization,
                compute_dtype=_torch_dtype(dtype),
                device=quantized_placement(model_dir, settings, dtype, chosen_map, emit_notice),
                double_quant=settings.double_quant,
                progress=progress,
                attention=attention,
                cache=cache,
            )
        return _loaded(model, dtype, settings.quantization, attention)
    from mixchat.engine.local.stock import load_stock

    try:
        size: int | None = summarize(model_dir).bytes
    except (OSError, ValueError, KeyError, struct.error):
        size = None  # a damaged header: from_pretrained says what is wrong
    with _load_errors(model_dir):
        model = load_stock(
            model_dir, settings, dtype, attention, chosen_map, cuda, size, progress, emit_notice
        )
    return _loaded(model, dtype, settings.quantization, attention)


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


@contextmanager
def _load_errors(model_dir: Path) -> Iterator[None]:
    """Turn the ways loading fails into one-line ``EngineError`` messages."""
    import torch

    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise EngineError(
            "out of GPU memory while loading; try --4bit (about 26 GB for Mixtral) or "
            "--max-memory to spread it over more GPUs"
        ) from None
    except ValueError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Unrecognized configuration class" in message or "AutoModelForCausalLM" in message:
            raise EngineError(f"{model_dir}: not a causal language model") from None
        raise EngineError(f"{model_dir}: cannot load the model: {message}") from None
    except (OSError, RuntimeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineError(f"{model_dir}: cannot load the model: {message}") from None


def _loaded(model: Any, dtype: str, quantization: str, attention: str) -> LoadedModel:
    model.eval()
    tensors = [*model.parameters(), *model.buffers()]
    return LoadedModel(
        model=model,
        dtype=dtype,
        quantization=quantization,
        attention=attention,
        device="+".join(dict.fromkeys(str(t.device) for t in tensors if t.device.type != "meta")),
        weight_bytes=weight_bytes(model),
    )
