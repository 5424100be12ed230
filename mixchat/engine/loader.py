"""Load a causal LM with the user's dtype, quantization, attention and placement."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixchat.config import Settings
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


def _quantization_config(setting: str, dtype: str, cuda: bool) -> Any:
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
            bnb_4bit_use_double_quant=True,
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
    shards = check_weights(model_dir)
    cuda = _cuda_available()
    dtype = choose_dtype(settings.dtype, cuda)
    attention = choose_attention(settings.attention, cuda, emit_notice)
    device_map = _device_map(settings.device_map, cuda)
    quant = _quantization_config(settings.quantization, dtype, cuda)

    def hook(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        iterable = args[0] if args else kwargs.get("iterable")
        return _LoadProgress(progress, iterable, kwargs.get("total"))

    progress("weights", 0, len(shards))
    previous = hf_logging.set_tqdm_hook(hook)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir,
            dtype=getattr(torch, dtype),
            device_map=device_map,
            attn_implementation=attention,
            quantization_config=quant,
            use_safetensors=True,
            trust_remote_code=settings.trust_remote_code,
        )
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
    finally:
        hf_logging.set_tqdm_hook(previous)
    model.eval()
    weight_bytes = int(model.get_memory_footprint())
    device = str(next(model.parameters()).device)
    return LoadedModel(
        model=model,
        dtype=dtype,
        quantization=settings.quantization,
        attention=attention,
        device=device,
        weight_bytes=weight_bytes,
    )
