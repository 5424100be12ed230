"""What ``mixchat doctor`` reports: the machine (the hardware probe), the model's size (the
size estimator) and the loader's own placement plan, with an estimate of decode speed.

The answer to "does it fit" is the loader's: the same ``mixtral_sizes`` and
``plan_placement`` / ``plan_cpu_experts`` the quantized loader uses. torch is imported only
inside functions (the probe, the bitsandbytes check), so the CLI imports this freely.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixchat.config import Settings
from mixchat.engine.base import EngineError
from mixchat.engine.local import quant_cache
from mixchat.engine.local.hardware import Gpu, Machine
from mixchat.engine.local.placement import (
    Placement,
    budgets_from_free_memory,
    gpu_bytes,
    layers_phrase,
    parse_cpu_experts,
    plan_cpu_experts,
    plan_placement,
    ram_budget,
)
from mixchat.engine.local.sizes import (
    MIXTRAL_8X7B,
    MIXTRAL_8X7B_PARAMETERS,
    Shape,
    Sizes,
    dense_weight_bytes,
    kv_bytes_per_token,
    mixtral_sizes,
)

OVERHEAD_BYTES = int(1.5 * 10**9)  # CUDA context, activations, allocator slack (dense models)
ESTIMATE_CONTEXT = 4096  # tokens of KV cache read per decoding step in the speed estimate


@dataclass(frozen=True)
class ModelFacts:
    """What is known of a model that is not on disk yet (from the hub's listing): its
    ``config.json`` and its parameter count."""

    config: dict[str, Any]
    parameters: int | None


@dataclass
class Report:
    """Everything doctor found. Sizes are bytes; ``tokens_per_s`` is an estimate."""

    python: str
    torch: str | None
    cuda: str | None
    gpus: list[Gpu] = field(default_factory=list)
    bitsandbytes: str | None = None
    bitsandbytes_works: bool = False
    cpu_kernels: bool = False  # torch has the CPU weight-only int4/int8 kernels
    flash_attn: str | None = None
    model: str = ""
    quantization: str = "none"
    parameters: int | None = None
    weight_bytes: int | None = None
    kv_bytes_per_token: int | None = None
    context_tokens: int = 32768
    needed_bytes: int | None = None
    fits: bool | None = None  # in the GPUs (with experts in RAM where planned); None: no GPU
    fits_in_ram: bool | None = None  # no GPU: the whole quantized model in system RAM
    placement: str | None = None  # where the parts go, when split or offloaded
    cpu_expert_layers: list[int] = field(default_factory=list)
    gpu_needed_bytes: int | None = None  # weights and KV cache on the GPUs, per the plan
    ram_needed_bytes: int | None = None  # what the plan keeps in system RAM
    ram_total: int | None = None
    ram_available: int | None = None
    tokens_per_s: float | None = None
    gpu_bandwidth: float | None = None
    gpu_bandwidth_source: str = ""
    cpu_bandwidth: float | None = None
    cpu_bandwidth_source: str = ""
    assumed_machine: bool = False
    suggestion: str | None = None
    notes: list[str] = field(default_factory=list)
    quant_cache_dir: str = ""  # quantized weights kept for faster starts
    quant_cache_entries: int = 0
    quant_cache_bytes: int = 0


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _model_facts(
    settings: Settings, report: Report, facts: ModelFacts | None = None
) -> dict[str, Any] | None:
    """Fill in the model's size; returns its config when known."""
    import json

    from mixchat.engine.local.checkpoint import summarize

    config: Any = None
    path = Path(settings.model).expanduser()
    if facts is not None:
        config, report.parameters = facts.config, facts.parameters
    elif path.is_dir():
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError):
            report.notes.append(f"{path}: no readable config.json")
        try:
            report.parameters = summarize(path, sorted(path.glob("*.safetensors"))).parameters
        except (OSError, ValueError, KeyError, struct.error):
            report.notes.append(f"{path}: unreadable safetensors header")
        if report.parameters == 0:
            report.parameters = None
    elif "mixtral-8x7b" in settings.model.lower():
        report.parameters = MIXTRAL_8X7B_PARAMETERS
        config = MIXTRAL_8X7B
    else:
        report.notes.append(f"{settings.model}: size unknown until it is downloaded")
    if not isinstance(config, dict):
        return None
    try:
        shape = Shape.of(config)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    report.kv_bytes_per_token = kv_bytes_per_token(shape)
    report.context_tokens = shape.context
    return config


def quantized_split(
    config: dict[str, Any], quantization: str, gpus: list[Gpu], double_quant: bool = True
) -> tuple[bool, str | None]:
    """Whether a quantized Mixtral fits ``gpus`` as the loader would place it, and where
    its layers go when it takes more than one (``placement.plan_placement``)."""
    sizes = mixtral_sizes({**MIXTRAL_8X7B, **config}, quantization, 2, double_quant)
    budgets = budgets_from_free_memory({f"cuda:{g.index}": g.free_bytes for g in gpus})
    try:
        placement = plan_placement(sizes, Shape.of({**MIXTRAL_8X7B, **config}).layers, budgets)
    except EngineError:
        return False, None
    return True, placement.describe() if len(placement.devices) > 1 else None


def decode_estimate(
    sizes: Sizes, placement: Placement | None, num_layers: int, machine: Machine, cpu_only: bool
) -> float:
    """Tokens/s if decoding is bound by reading weights (and a 4k-token KV cache): each
    step reads attention, router, norms, the top-k experts of every layer and the head,
    on the GPU at its bandwidth and, for experts in RAM, on the CPU at the kernels' rate.
    An upper bound: kernels, launches and transfers add time."""
    active = sizes.active_experts / sizes.num_experts
    kv = sizes.kv_layer * ESTIMATE_CONTEXT // max(1, sizes.context)
    rest = sizes.layer_without_experts - sizes.kv_layer + kv
    if cpu_only:
        per_layer = rest + active * sizes.cpu_experts
        return machine.cpu_bandwidth / (num_layers * per_layer + sizes.head)
    offloaded = len(placement.cpu_experts) if placement is not None else 0
    on_gpu = num_layers * rest + (num_layers - offloaded) * active * sizes.experts + sizes.head
    on_cpu = offloaded * active * sizes.cpu_experts
    seconds = on_gpu / machine.gpu_bandwidth + on_cpu / machine.cpu_bandwidth
    return 1 / seconds


def _mixtral_plan(
    report: Report, config: dict[str, Any], settings: Settings, machine: Machine
) -> None:
    """The quantized loader's plan for this machine, with the speed estimate."""
    merged = {**MIXTRAL_8X7B, **config}
    shape = Shape.of(merged)
    mode = settings.quantization
    sizes = mixtral_sizes(merged, mode, 2, settings.double_quant)
    weights = sizes.total(shape.layers) - shape.layers * sizes.kv_layer
    report.weight_bytes = weights
    report.needed_bytes = sizes.total(shape.layers)
    if not machine.gpus:
        # Everything on the CPU: experts and attention packed for the CPU kernels, the rest
        # in fp32 (the CPU's compute dtype).
        cpu = mixtral_sizes(merged, mode, 4, settings.double_quant)
        need = cpu.total(shape.layers) - shape.layers * (cpu.experts - cpu.cpu_experts)
        report.ram_needed_bytes = need
        report.fits_in_ram = (
            None if machine.ram_available is None else need <= machine.ram_available
        )
        report.tokens_per_s = decode_estimate(cpu, None, shape.layers, machine, cpu_only=True)
        return
    budgets = budgets_from_free_memory({f"cuda:{g.index}": g.free_bytes for g in machine.gpus})
    ram = ram_budget(machine.ram_available)
    request = parse_cpu_experts(settings.cpu_experts, shape.layers)
    try:
        if request:
            placement = plan_cpu_experts(sizes, shape.layers, budgets, ram, request)
        else:
            try:
                placement = plan_placement(sizes, shape.layers, budgets)
            except EngineError:
                placement = plan_cpu_experts(sizes, shape.layers, budgets, ram, "auto")
                count = len(placement.cpu_experts)
                report.suggestion = (
                    f"--cpu-experts {count} (or auto): the experts of "
                    f"{layers_phrase(placement.cpu_experts)} in system RAM"
                )
    except EngineError as exc:
        report.fits = False
        report.notes.append(str(exc))
        return
    report.fits = True
    report.cpu_expert_layers = list(placement.cpu_experts)
    report.gpu_needed_bytes = gpu_bytes(sizes, shape.layers, len(placement.cpu_experts))
    report.ram_needed_bytes = len(placement.cpu_experts) * sizes.cpu_experts
    if len(placement.devices) > 1 or placement.cpu_experts:
        report.placement = placement.describe()
    report.tokens_per_s = decode_estimate(sizes, placement, shape.layers, machine, cpu_only=False)


def diagnose(
    settings: Settings, machine: Machine, facts: ModelFacts | None = None, libraries: bool = True
) -> Report:
    """The report for ``settings`` on ``machine`` (``hardware.probe()`` or ``assumed()``).
    ``facts`` describe a model not downloaded yet; ``libraries=False`` skips checking that
    bitsandbytes and the CPU kernels run (which imports torch)."""
    report = Report(
        python=machine.python,
        torch=machine.torch,
        cuda=machine.cuda,
        gpus=list(machine.gpus),
        model=settings.model,
        quantization=settings.quantization,
        ram_total=machine.ram_total,
        ram_available=machine.ram_available,
        gpu_bandwidth=machine.gpu_bandwidth,
        gpu_bandwidth_source=machine.gpu_bandwidth_source,
        cpu_bandwidth=machine.cpu_bandwidth,
        cpu_bandwidth_source=machine.cpu_bandwidth_source,
        assumed_machine=machine.assumed_machine,
    )
    report.quant_cache_dir = str(quant_cache.directory())
    report.quant_cache_entries, report.quant_cache_bytes = quant_cache.usage()
    report.bitsandbytes = _version("bitsandbytes")
    probe_libraries = libraries and not machine.assumed_machine
    if report.bitsandbytes is not None and probe_libraries:
        mode = "8bit" if settings.quantization == "8bit" else "4bit"
        report.bitsandbytes_works = _bitsandbytes_works(bool(machine.gpus), mode)
    report.cpu_kernels = bool(report.torch) and probe_libraries and _cpu_kernels()
    report.flash_attn = _version("flash-attn") or _version("flash_attn")
    config = _model_facts(settings, report, facts)
    mixtral = config is not None and config.get("model_type") == "mixtral"
    if mixtral and settings.quantization != "none" and config is not None:
        _mixtral_plan(report, config, settings, machine)
        return report
    if report.parameters is not None:
        report.weight_bytes = dense_weight_bytes(report.parameters, settings.quantization)
        kv = (report.kv_bytes_per_token or 0) * report.context_tokens
        report.needed_bytes = report.weight_bytes + kv + OVERHEAD_BYTES
        if report.gpus:
            report.fits = report.needed_bytes <= sum(g.free_bytes for g in report.gpus)
            if not report.fits and mixtral:
                report.suggestion = "--4bit (with --cpu-experts auto if it still does not fit)"
        elif machine.ram_available is not None:
            # The stock loader on the CPU: full precision in the CPU's dtype (fp32 for auto).
            need = _cpu_dense_bytes(report.parameters, settings) + kv
            report.ram_needed_bytes = need
            report.fits_in_ram = need <= machine.ram_available
    return report


def _cpu_dense_bytes(parameters: int, settings: Settings) -> int:
    """Weight bytes of a model the stock loader puts on the CPU."""
    if settings.quantization != "none":
        return dense_weight_bytes(parameters, settings.quantization)
    per_value = {"bfloat16": 2, "float16": 2}.get(settings.dtype, 4)  # auto: fp32 on a CPU
    return parameters * per_value


def _bitsandbytes_works(cuda: bool, quantization: str) -> bool:
    """The loader's own probe: quantize and multiply with the ops the model will use."""
    import torch

    from mixchat.engine.local.bnb_experts import check_device_support

    try:
        check_device_support(quantization, torch.device("cuda" if cuda else "cpu"))
    except EngineError:
        return False
    return True


def _cpu_kernels() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    from mixchat.engine.local.cpu_kernels import check_kernels

    try:
        check_kernels()
    except EngineError:
        return False
    return True
