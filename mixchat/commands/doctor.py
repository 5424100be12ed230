"""``mixchat doctor``: renders what the engine's hardware probe, size estimator and placement
plan report (``mixchat.engine.local.report``). No torch here: the engine imports it."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

from mixchat.config import load_settings
from mixchat.engine.local.report import Report
from mixchat.textsafe import for_terminal

GB = 10**9


def _gb(value: int | float | None) -> str:
    return "?" if value is None else f"{value / GB:.1f} GB"


def _verdict(report: Report) -> tuple[bool, str] | None:
    """Whether the model fits, in a few words, and whether that is good news (None when
    there is nothing to say)."""
    if report.fits is True and report.placement and not report.cpu_expert_layers:
        return True, f"fits split over {report.placement}"
    if report.fits is True and report.cpu_expert_layers:
        count = len(report.cpu_expert_layers)
        return True, f"fits with the experts of {count} layer{'s' if count != 1 else ''} in RAM"
    if report.fits is True and report.gpus:
        return True, "fits in the free GPU memory"
    if report.fits is False:
        return False, "does not fit in the free GPU memory: try --4bit or more GPUs"
    if report.fits_in_ram is True and report.quantization == "none":
        return True, "no GPU: fits in RAM, in full precision on the CPU (slow)"
    if report.fits_in_ram is True:
        return True, "no GPU: fits in RAM, everything runs on the CPU kernels"
    if report.fits_in_ram is False:
        return False, "no GPU, and it does not fit in the available RAM"
    if not report.gpus:
        return False, "no GPU: the full model on CPU is impractically slow"
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
    lines.append(f"{model}: {verdict[1]}" if verdict else model)
    if report.suggestion:
        lines.append(f"try: {report.suggestion}")
    # On a GPU, --4bit/--8bit run on bitsandbytes; on the CPU, on torch's own kernels.
    quantized_on_gpu = report.quantization != "none" and bool(report.gpus)
    if quantized_on_gpu and report.bitsandbytes is None:
        lines.append(f"bitsandbytes is not installed (--{report.quantization} needs it)")
    elif quantized_on_gpu and not report.bitsandbytes_works:
        lines.append(f"bitsandbytes cannot run --{report.quantization} here")
    return lines


def render(report: Report) -> str:
    """Human-readable report."""
    ok, bad = "ok ", "-- "
    cuda = report.cuda or "not available (CPU only)"
    if report.assumed_machine:
        cuda = "assumed GPUs" if report.gpus else "not available (CPU only, assumed)"
    lines = [
        f"python        {report.python}",
        f"torch         {report.torch or 'not installed'}",
        f"CUDA          {cuda}",
    ]
    for gpu in report.gpus:
        sm = f" (sm {gpu.capability})" if gpu.capability else ""
        lines.append(
            f"GPU {gpu.index}         {gpu.name}{sm}: "
            f"{_gb(gpu.free_bytes)} free of {_gb(gpu.total_bytes)}"
        )
    if report.ram_total is not None:
        lines.append(
            f"RAM           {_gb(report.ram_available)} available of {_gb(report.ram_total)}"
        )
    if not report.assumed_machine:
        bnb = report.bitsandbytes or "not installed"
        works = report.bitsandbytes_works
        state = ("works" if works else "cannot run here") if report.bitsandbytes else ""
        lines.append(f"bitsandbytes  {bnb} {state}".rstrip())
        kernels = "available" if report.cpu_kernels else "missing (needs torch >= 2.6)"
        lines.append(f"CPU kernels   int4/int8 weight-only (torch) {kernels}")
        flash = report.flash_attn or "not installed (pip install 'mixchat[flash]'); SDPA is used"
        lines.append(f"flash-attn    {flash}")
    lines.append("")
    lines.append(f"model         {report.model} ({report.quantization})")
    if report.parameters is not None:
        lines.append(f"parameters    {report.parameters / 1e9:.1f}B")
    if report.weight_bytes is not None:
        lines.append(f"weights       ~{_gb(report.weight_bytes)}")
        kv = report.kv_bytes_per_token
        if kv:
            lines.append(
                f"KV cache      {kv // 1024} KiB per token; "
                f"{_gb(kv * report.context_tokens)} at {report.context_tokens:,} tokens"
            )
        if report.needed_bytes is not None:
            lines.append(f"needs         ~{_gb(report.needed_bytes)} with the KV cache")
    lines += _plan_lines(report)
    verdict = _verdict(report)
    if verdict is not None:
        lines.append(f"{ok if verdict[0] else bad}{verdict[1]}")
    if report.suggestion:
        lines.append(f"try           {report.suggestion}")
    lines += [f"note: {note}" for note in report.notes]
    if report.quant_cache_dir:
        count = report.quant_cache_entries
        lines.append(
            f"quant cache   {report.quant_cache_dir} ({count} entr{'y' if count == 1 else 'ies'}, "
            f"{_gb(report.quant_cache_bytes)}; delete it to clear, quant_cache = false to stop)"
        )
    lines.append("")
    lines.append(
        "Mixtral-8x7B: bf16 ~93 GB, --8bit ~47 GB, --4bit (NF4) ~24.5 GB, "
        "plus 128 KiB of KV cache per token"
    )
    return "\n".join(lines)


def _plan_lines(report: Report) -> list[str]:
    lines = []
    if report.placement:
        lines.append(f"plan          {report.placement}")
    if report.gpu_needed_bytes is not None:
        lines.append(f"GPU side      ~{_gb(report.gpu_needed_bytes)} (weights and KV cache)")
    if report.ram_needed_bytes:
        what = "experts in RAM" if report.gpus else "the whole model in RAM"
        lines.append(f"RAM side      ~{_gb(report.ram_needed_bytes)} ({what})")
    if report.tokens_per_s is not None:
        rates = []
        if report.gpus and report.gpu_bandwidth:
            rates.append(f"GPU {report.gpu_bandwidth / GB:.0f} GB/s {report.gpu_bandwidth_source}")
        if (report.cpu_expert_layers or not report.gpus) and report.cpu_bandwidth:
            rates.append(
                f"CPU experts {report.cpu_bandwidth / GB:.0f} GB/s {report.cpu_bandwidth_source}"
            )
        lines.append(
            f"speed         ~{report.tokens_per_s:.1f} tokens/s at most "
            f"(weights read per token; {', '.join(rates)})"
        )
    return lines


def run_doctor(
    flags: dict[str, Any],
    as_json: bool,
    assume_gpu: list[str] | None = None,
    assume_ram: str | None = None,
    measure: bool = False,
    assume_bandwidth: tuple[str | None, str | None] = (None, None),
) -> None:
    """Print the report for this machine, or for the one ``--assume-gpu`` / ``--assume-ram``
    describe."""
    from mixchat.config import ConfigError
    from mixchat.engine.base import EngineError
    from mixchat.engine.local import hardware
    from mixchat.engine.local.report import diagnose

    settings = load_settings(flags)
    gpu_rate, cpu_rate = (
        parse_rate(text, flag) if text else None
        for text, flag in zip(
            assume_bandwidth, ("--assume-gpu-bandwidth", "--assume-cpu-bandwidth"), strict=True
        )
    )
    if assume_gpu or assume_ram or gpu_rate or cpu_rate:
        machine = hardware.assumed(
            [parse_amount(a, "--assume-gpu") for a in assume_gpu or []],
            parse_amount(assume_ram, "--assume-ram") if assume_ram else None,
            gpu_rate,
            cpu_rate,
        )
    else:
        machine = hardware.probe(measure=measure)
    try:
        report = diagnose(settings, machine)
    except EngineError as exc:  # e.g. --cpu-experts naming a layer the model lacks
        raise ConfigError(str(exc)) from None
    if as_json:
        print(json.dumps(asdict(report)))
    else:
        text = render(report)  # the model id and notes may hold any text
        print(for_terminal(text) if sys.stdout.isatty() else text)


def parse_amount(text: str, flag: str) -> int:
    """``24GiB`` / ``64GB`` / ``512MiB`` -> bytes; a ``BadInput`` naming ``flag`` otherwise."""
    from mixchat.config import ConfigError, parse_max_memory

    try:
        return int(parse_max_memory(f"0={text.strip()}")[0])
    except ValueError:
        raise ConfigError(f"{flag}: cannot read {text!r}; use e.g. 24GiB or 64GB") from None


def parse_rate(text: str, flag: str) -> float:
    """``936GB/s`` or ``936`` (GB/s) -> bytes/s; a ``ConfigError`` naming ``flag`` otherwise."""
    from mixchat.config import ConfigError

    value = text.strip().lower().removesuffix("/s").removesuffix("gb").strip()
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if not rate > 0 or rate != rate or rate == float("inf"):
        raise ConfigError(f"{flag}: cannot read {text!r}; use e.g. 936GB/s")
    return rate * GB
