"""The stock load: ``AutoModelForCausalLM.from_pretrained`` with the chosen dtype, attention,
device map and (for non-Mixtral models) bitsandbytes quantization, reporting progress."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from mixchat.config import Settings
from mixchat.engine.base import EngineError
from mixchat.engine.local.policy import Notice, stock_max_memory
from mixchat.engine.local.progress import ProgressCallback, ProgressReporter, amount


def quantization_config(setting: str, dtype: str, cuda: bool, double_quant: bool = True) -> Any:
    """bitsandbytes' ``BitsAndBytesConfig`` for ``--4bit`` / ``--8bit``; ``None`` for none."""
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


class _TqdmStandIn:
    """Stands in for the tqdm bars transformers opens while loading weights: each bar's
    steps feed one monotonic ``weights`` progress (bars after the first continue it)."""

    def __init__(
        self, reporter: ProgressReporter, suffix: str, iterable: Any = None, total: Any = None
    ) -> None:
        self._reporter, self._suffix = reporter, suffix
        self._iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = int(total or 0)
        self.n = 0
        if reporter.done == 0 and reporter.total < self.total:
            reporter.total = self.total  # the first bar sizes the stage
            reporter.start(f"tensor 0/{self.total}{suffix}")

    def __iter__(self) -> Any:
        for item in self._iterable:
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        r = self._reporter
        r.advance(n, f"tensor {min(r.done + n, r.total)}/{r.total}{self._suffix}")

    def __enter__(self) -> _TqdmStandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:  # set_postfix, close, refresh, ...
        return lambda *args, **kwargs: None


def load_stock(
    model_dir: Path,
    settings: Settings,
    dtype: str,
    attention: str,
    chosen_map: Any,
    cuda: bool,
    checkpoint_bytes: int | None,
    progress: ProgressCallback,
    notice: Notice,
) -> Any:
    """``from_pretrained`` as ``settings`` ask; progress counts the tensors it loads."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    quant = quantization_config(settings.quantization, dtype, cuda, settings.double_quant)
    reporter = ProgressReporter(progress, "weights", 0)
    suffix = f" of {amount(0, checkpoint_bytes).split('/')[1]}" if checkpoint_bytes else ""

    def hook(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        iterable = args[0] if args else kwargs.get("iterable")
        return _TqdmStandIn(reporter, suffix, iterable, kwargs.get("total"))

    previous = hf_logging.set_tqdm_hook(hook)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir,
            dtype=getattr(torch, dtype),
            device_map=chosen_map,
            max_memory=stock_max_memory(settings, chosen_map, notice),
            attn_implementation=attention,
            quantization_config=quant,
            use_safetensors=True,
            trust_remote_code=settings.trust_remote_code,
        )
    finally:
        hf_logging.set_tqdm_hook(previous)
    if reporter.total and reporter.done < reporter.total:  # a bar that stopped short
        last = f"tensor {reporter.total}/{reporter.total}{suffix}"
        reporter.advance(reporter.total - reporter.done, last)
    return model
