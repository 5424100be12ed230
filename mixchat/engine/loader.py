"""Load a causal LM with the user's dtype, quantization, attention and placement."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixchat.config import Settings, parse_max_memory
from mixchat.engine.base import EngineError
from mixchat.engine.resolve import check_weights, read_config

ProgressCallback = Callable[[str, int, int], None]


@dataclass
class LoadedModel:
    """A model ready to generate, and how it was loaded."""

    model: Any
    dtype: str
    quantization: str
    attention: str
    device: str
    weight_bytes: int


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def choose_dtype(setting: str, cuda: bool) -> str:
    """``auto`` is bf16 on CUDA and fp32 on CPU (CPU bf16 matmuls are slow)."""
    if setting != "auto":
        return setting
    return "bfloat16" if cuda else "float32"


def choose_attention(setting: str, cuda: bool, notice: Callable[[str], None]) -> str:
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


def _device_map(setting: str, cuda: bool) -> Any:
    if setting == "auto":
        return "auto" if cuda else None
    if setting == "cpu":
        return None
    if setting.startswith("cuda"):
        if not cuda:
            raise EngineError(f"--device-map {setting}: no CUDA GPU is available")
        return {"": setting}
    raise EngineError(f"--device-map {setting}: expected auto, cpu or cuda:N")


def _max_memory(
    settings: Settings, device_map: Any, notice: Callable[[str], None]
) -> dict[int | str, str] | None:
    """Per-device limits for accelerate's placement; only meaningful with ``auto``."""
    if not settings.max_memory:
        return None
    if device_map != "auto":
        notice("--max-memory applies only with --device-map auto on CUDA; ignored")
        return None
    return parse_max_memory(settings.max_memory)


def _quantization_config(setting: str, dtype: str, cuda: bool, double_quant: bool = True) -> Any:
    if setting == "none":
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise EngineError(f"--{setting} needs the bitsandbytes package")
    import torch
    from transformers import BitsAndBytesConfig

    if setting == "4bit":
        compute = torch.bfloat16 if cuda else torch.float32
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=double_quant,
            bnb_4bit_compute_dtype=compute,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


class _LoadProgress:
    """Stands in for the tqdm bar transformers uses while loading weights."""

    def __init__(self, report: ProgressCallback, iterable: Any = None, total: Any = None) -> None:
        self._report = report
        self._iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = int(total or 0)
        self.n = 0
        self._last = -1

    def __iter__(self) -> Any:
        for item in self._iterable:
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        step = max(1, self.total // 100)
        if self.n - self._last >= step or self.n == self.total:
            self._last = self.n
            self._report("weights", self.n, self.total)

    def __enter__(self) -> _LoadProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:  # set_postfix, close, refresh, ...
        return lambda *args, **kwargs: None


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


def _quantized_placement(
    model_dir: Path, settings: Settings, dtype: str, device_map: Any, notice: Callable[[str], None]
) -> Any:
    """Where a quantized Mixtral goes: one device, or with ``--device-map auto`` over several
    GPUs when ``--max-memory`` limits them or it does not fit the first (a ``Placement``)."""
    if device_map is None or isinstance(device_map, dict):
        if settings.max_memory:
            notice("--max-memory applies only with --device-map auto on CUDA; ignored")
        return "cpu" if device_map is None else str(device_map[""])
    import torch
    from transformers import AutoConfig

    from mixchat.engine.placement import (
        budgets_from_free_memory,
        budgets_from_max_memory,
        mixtral_sizes,
        plan_placement,
    )

    if settings.max_memory:
        budgets = budgets_from_max_memory(parse_max_memory(settings.max_memory))
        if budgets.pop("cpu", None) is not None:
            notice("--max-memory cpu=...: a quantized Mixtral stays on the GPUs; ignored")
        if not budgets:
            return "cuda:0"
    elif torch.cuda.device_count() > 1:
        count = torch.cuda.device_count()
        budgets = budgets_from_free_memory(
            {f"cuda:{i}": torch.cuda.mem_get_info(i)[0] for i in range(count)}
        )
    else:
        return "cuda:0"
    config = AutoConfig.from_pretrained(model_dir)
    bytes_per_value = torch.finfo(getattr(torch, dtype)).bits // 8
    sizes = mixtral_sizes(config, settings.quantization, bytes_per_value, settings.double_quant)
    return plan_placement(sizes, int(config.num_hidden_layers), budgets)


def _load_quantized_mixtral(
    model_dir: Path,
    settings: Settings,
    dtype: str,
    attention: str,
    device_map: Any,
    progress: ProgressCallback,
    emit_notice: Callable[[str], None],
) -> Any:
    """Every expert and attention projection quantized (stock bitsandbytes skips experts)."""
    import torch

    from mixchat.engine.quant_load import load_quantized_mixtral

    if importlib.util.find_spec("bitsandbytes") is None:
        raise EngineError(f"--{settings.quantization} needs the bitsandbytes package")
    return load_quantized_mixtral(
        model_dir,
        settings.quantization,
        compute_dtype=getattr(torch, dtype),
        device=_quantized_placement(model_dir, settings, dtype, device_map, emit_notice),
        double_quant=settings.double_quant,
        progress=progress,
        attention=attention,
    )


GENERATIVE_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def check_generative(model_dir: Path, config: dict[str, Any]) -> None:
    """Refuse checkpoints whose declared architectures are not text generators: transformers
    maps some encoders (BERT) to a causal head, which would chat in noise."""
    architectures = config.get("architectures") or []
    if architectures and not any(str(a).endswith(GENERATIVE_HEADS) for a in architectures):
        names = ", ".join(str(a) for a in architectures)
        raise EngineError(f"{model_dir}: not a causal language model ({names})")


def load_model(
    model_dir: Path,
    settings: Settings,
    progress: ProgressCallback,
    emit_notice: Callable[[str], None],
) -> LoadedModel:
    """Load the weights in ``model_dir`` (safetensors only) as ``settings`` ask."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    config = read_config(model_dir)
    if "auto_map" in config and not settings.trust_remote_code:
        raise EngineError(
            f"{model_dir}: the model needs code shipped with it; "
            "rerun with --trust-remote-code if you trust it"
        )
    check_generative(model_dir, config)
    shards = check_weights(model_dir)
    cuda = _cuda_available()
    dtype = choose_dtype(settings.dtype, cuda)
    attention = choose_attention(settings.attention, cuda, emit_notice)
    device_map = _device_map(settings.device_map, cuda)
    if settings.quantization != "none" and config.get("model_type") == "mixtral":
        with _load_errors(model_dir):
            model = _load_quantized_mixtral(
                model_dir, settings, dtype, attention, device_map, progress, emit_notice
            )
        return _loaded(model, dtype, settings.quantization, attention)
    quant = _quantization_config(settings.quantization, dtype, cuda, settings.double_quant)

    def hook(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        iterable = args[0] if args else kwargs.get("iterable")
        return _LoadProgress(progress, iterable, kwargs.get("total"))

    progress("weights", 0, len(shards))
    previous = hf_logging.set_tqdm_hook(hook)
    try:
        with _load_errors(model_dir):
            model = AutoModelForCausalLM.from_pretrained(
                model_dir,
                dtype=getattr(torch, dtype),
                device_map=device_map,
                max_memory=_max_memory(settings, device_map, emit_notice),
                attn_implementation=attention,
                quantization_config=quant,
                use_safetensors=True,
                trust_remote_code=settings.trust_remote_code,
            )
    finally:
        hf_logging.set_tqdm_hook(previous)
    return _loaded(model, dtype, settings.quantization, attention)


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
    return LoadedModel(
        model=model,
        dtype=dtype,
        quantization=quantization,
        attention=attention,
        device="+".join(
            dict.fromkeys(str(p.device) for p in model.parameters() if p.device.type != "meta")
        ),
        weight_bytes=weight_bytes(model),
    )
