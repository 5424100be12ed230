"""``mixchat doctor``: what this machine has, and whether the chosen model fits."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mixchat.config import Settings, load_settings

GB = 10**9
# Mixtral-8x7B: 46.7B parameters; KV cache per token = 32 layers x 8 KV heads x 128 dims x
# (K and V) x 2 bytes = 128 KiB in bf16.
MIXTRAL_PARAMS = 46_702_792_704
MIXTRAL_KV_BYTES_PER_TOKEN = 32 * 8 * 128 * 2 * 2
# Bytes per parameter as stored by mixchat (measured: NF4 with double quant incl. its
# statistics and the unquantized embeddings/norms/router; int8 with row scales).
BYTES_PER_PARAM = {"none": 2.0, "8bit": 1.006, "4bit": 0.525}
OVERHEAD_BYTES = int(1.5 * GB)  # CUDA context, activations, allocator slack
# Mixtral-8x7B-Instruct-v0.1's config.json, the parts placement needs.
MIXTRAL_CONFIG: dict[str, Any] = {
    "model_type": "mixtral",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "vocab_size": 32000,
    "max_position_embeddings": 32768,
}


@dataclass
class Gpu:
    """One CUDA device."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int
    capability: str


@dataclass
class Report:
    """Everything doctor found."""

    python: str
    torch: str | None
    cuda: str | None
    gpus: list[Gpu] = field(default_factory=list)
    bitsandbytes: str | None = None
    bitsandbytes_works: bool = False
    flash_attn: str | None = None
    model: str = ""
    quantization: str = "none"
    parameters: int | None = None
    weight_bytes: int | None = None
    kv_bytes_per_token: int | None = None
    context_tokens: int = 32768
    needed_bytes: int | None = None
    fits: bool | None = None
    placement: str | None = None  # a quantized Mixtral split over GPUs: which layers where
    notes: list[str] = field(default_factory=list)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def safetensors_parameters(model_dir: Path) -> int | None:
    """Count parameters from the safetensors headers (no weights are read)."""
    total = 0
    shards = sorted(model_dir.glob("*.safetensors"))
    if not shards:
        return None
    for shard in shards:
        with shard.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
        for name, meta in header.items():
            if name != "__metadata__":
                count = 1
                for dim in meta["shape"]:
                    count *= dim
                total += count
    return total


def _kv_bytes_per_token(config: dict[str, Any]) -> int | None:
    try:
        layers = int(config["num_hidden_layers"])
        heads = int(config.get("num_key_value_heads") or config["num_attention_heads"])
        head_dim = int(
            config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        )
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return layers * heads * head_dim * 2 * 2


def _model_facts(settings: Settings, report: Report) -> dict[str, Any] | None:
    """Fill in the model's size; returns its config when known."""
    config: dict[str, Any] | None = None
    path = Path(settings.model).expanduser()
    if path.is_dir():
        try:
            config = json.loads((path / "config.json").read_text())
            report.kv_bytes_per_token = _kv_bytes_per_token(config)
            report.context_tokens = int(config.get("max_position_embeddings") or 32768)
        except (OSError, ValueError):
            report.notes.append(f"{path}: no readable config.json")
        try:
            report.parameters = safetensors_parameters(path)
        except (OSError, ValueError, struct.error):
            report.notes.append(f"{path}: unreadable safetensors header")
    elif "mixtral-8x7b" in settings.model.lower():
        report.parameters = MIXTRAL_PARAMS
        report.kv_bytes_per_token = MIXTRAL_KV_BYTES_PER_TOKEN
        config = MIXTRAL_CONFIG
    else:
        report.notes.append(f"{settings.model}: size unknown until it is downloaded")
    return config if isinstance(config, dict) else None


def quantized_split(
    config: dict[str, Any], quantization: str, gpus: list[Gpu], double_quant: bool = True
) -> tuple[bool, str | None]:
    """Whether a quantized Mixtral fits ``gpus`` as the loader would place it, and where
    its layers go when it takes more than one (``placement.plan_placement``)."""
    from types import SimpleNamespace

    from mixchat.engine.base import EngineError
    from mixchat.engine.placement import budgets_from_free_memory, mixtral_sizes, plan_placement

    shape = SimpleNamespace(**{**MIXTRAL_CONFIG, **config})
    sizes = mixtral_sizes(shape, quantization, 2, double_quant)
    budgets = budgets_from_free_memory({f"cuda:{g.index}": g.free_bytes for g in gpus})
    try:
        placement = plan_placement(sizes, int(shape.num_hidden_layers), budgets)
    except EngineError:
        return False, None
    return True, placement.describe() if len(placement.devices) > 1 else None


def diagnose(settings: Settings) -> Report:
    """Inspect the machine and estimate the memory the chosen model needs."""
    report = Report(python=platform.python_version(), torch=_version("torch"), cuda=None)
    report.model = settings.model
    report.quantization = settings.quantization
    if report.torch is not None:
        import torch

        if torch.cuda.is_available():
            report.cuda = torch.version.cuda
            for index in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(index)
                major, minor = torch.cuda.get_device_capability(index)
                report.gpus.append(
                    Gpu(index, torch.cuda.get_device_name(index), total, free, f"{major}.{minor}")
                )
    report.bitsandbytes = _version("bitsandbytes")
    if report.bitsandbytes is not None:
        report.bitsandbytes_works = _bitsandbytes_works(
            bool(report.gpus), "8bit" if settings.quantization == "8bit" else "4bit"
        )
    report.flash_attn = _version("flash-attn") or _version("flash_attn")
    config = _model_facts(settings, report)
    if report.parameters is not None:
        report.weight_bytes = int(report.parameters * BYTES_PER_PARAM[settings.quantization])
        kv = (report.kv_bytes_per_token or 0) * report.context_tokens
        report.needed_bytes = report.weight_bytes + kv + OVERHEAD_BYTES
        if report.gpus:
            report.fits = report.needed_bytes <= sum(g.free_bytes for g in report.gpus)
    split = settings.quantization != "none" and len(report.gpus) > 1
    if split and config is not None and config.get("model_type") == "mixtral":
        report.fits, report.placement = quantized_split(config, settings.quantization, report.gpus)
    return report


def _bitsandbytes_works(cuda: bool, quantization: str) -> bool:
    """The loader's own probe: quantize and multiply with the ops the model will use."""
    import torch

    from mixchat.engine.base import EngineError
    from mixchat.engine.quant import check_device_support

    try:
        check_device_support(quantization, torch.device("cuda" if cuda else "cpu"))
    except EngineError:
        return False
    return True


def _gb(value: int | None) -> str:
    return "?" if value is None else f"{value / GB:.1f} GB"


def _verdict(report: Report) -> str | None:
    """Whether the model fits, in a few words (None when there is nothing to say)."""
    if report.fits is True and report.placement:
        return f"fits split over {report.placement}"
    if report.fits is True:
        return "fits in the free GPU memory"
    if report.fits is False:
        return "does not fit in the free GPU memory: try --4bit or more GPUs"
    if not report.gpus:
        return "no GPU: the full model on CPU is impractically slow"
    return None


def summary(report: Report) -> list[str]:
    """The report in three or four short lines (the app's no-model screen shows them)."""
    if report.gpus:
        gpus = ", ".join(
            f"{g.name} ({_gb(g.free_bytes)} free of {_gb(g.total_bytes)})" for g in report.gpus
        )
        machine = f"CUDA {report.cuda}: {gpus}"
    else:
        machine = "no CUDA GPU (CPU only)"
    lines = [f"Python {report.python}, torch {report.torch or 'not installed'}, {machine}"]
    model = f"{report.model} ({report.quantization})"
    if report.needed_bytes is not None:
        model += f" needs ~{_gb(report.needed_bytes)}"
    verdict = _verdict(report)
    lines.append(f"{model}: {verdict}" if verdict else model)
    if report.quantization != "none" and report.bitsandbytes is None:
        lines.append(f"bitsandbytes is not installed (--{report.quantization} needs it)")
    elif report.quantization != "none" and not report.bitsandbytes_works:
        lines.append(f"bitsandbytes cannot run --{report.quantization} here")
    return lines


def render(report: Report) -> str:
    """Human-readable report."""
    ok, bad = "ok ", "-- "
    lines = [
        f"python        {report.python}",
        f"torch         {report.torch or 'not installed'}",
        f"CUDA          {report.cuda or 'not available (CPU only)'}",
    ]
    for gpu in report.gpus:
        lines.append(
            f"GPU {gpu.index}         {gpu.name} (sm {gpu.capability}): "
            f"{_gb(gpu.free_bytes)} free of {_gb(gpu.total_bytes)}"
        )
    bnb = report.bitsandbytes or "not installed"
    works = (
        ("works" if report.bitsandbytes_works else "cannot run here") if report.bitsandbytes else ""
    )
    lines.append(f"bitsandbytes  {bnb} {works}".rstrip())
    flash = report.flash_attn or "not installed (pip install 'mixchat[flash]'); SDPA is used"
    lines.append(f"flash-attn    {flash}")
    lines.append("")
    lines.append(f"model         {report.model} ({report.quantization})")
    if report.parameters is not None:
        kv = report.kv_bytes_per_token
        lines.append(f"parameters    {report.parameters / 1e9:.1f}B")
        lines.append(f"weights       ~{_gb(report.weight_bytes)}")
        if kv:
            lines.append(
                f"KV cache      {kv // 1024} KiB per token; "
                f"{_gb(kv * report.context_tokens)} at {report.context_tokens:,} tokens"
            )
        lines.append(f"needs         ~{_gb(report.needed_bytes)} with overhead")
    verdict = _verdict(report)
    if verdict is not None:
        lines.append(f"{ok if report.fits else bad}{verdict}")
    lines += [f"note: {note}" for note in report.notes]
    lines.append("")
    lines.append(
        "Mixtral-8x7B: bf16 ~93 GB, --8bit ~49 GB, --4bit (NF4) ~26 GB, "
        "plus 128 KiB of KV cache per token"
    )
    return "\n".join(lines)


def run_doctor(flags: dict[str, Any], as_json: bool) -> None:
    """Print the report."""
    report = diagnose(load_settings(flags))
    if as_json:
        print(json.dumps(asdict(report)))
    else:
        print(render(report))
