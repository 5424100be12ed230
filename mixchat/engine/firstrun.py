"""Checks before a model is downloaded: does it fit this machine in the mode chosen (the
same plan ``mixchat doctor`` shows), and does it fit the disk. Each refusal is one line
that says what would work, raised as ``DownloadRefused`` before a byte is downloaded.

Pure decisions over the hardware probe, the size estimator and the placement plan
(``engine.local``); torch is imported only by the probe, to look at the GPUs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from mixchat.config import OPTIONS, Settings
from mixchat.engine.base import DownloadRefused
from mixchat.engine.local import hardware
from mixchat.engine.local.hardware import Machine
from mixchat.engine.local.report import ModelFacts, Report, diagnose
from mixchat.engine.local.sizes import GIB

DISK_RESERVE = 1 * GIB  # left free on the disk after the download
NOTHING = "Nothing was downloaded."


def size_text(count: int | float) -> str:
    """``93.4 GB`` (or MB below a gigabyte)."""
    if count >= 10**9:
        return f"{count / 10**9:.1f} GB"
    return f"{count / 10**6:.1f} MB"


def as_flags(offer: dict[str, str]) -> str:
    """``{"quantization": "4bit", "cpu_experts": "auto"}`` -> ``--4bit --cpu-experts auto``."""
    words = []
    for name, value in offer.items():
        option = OPTIONS[name]
        switch = next((s.flag for s in option.switches if s.value == value), None)
        words.append(switch or f"{option.flag or '--' + name.replace('_', '-')} {value}")
    return " ".join(words)


def fits(report: Report) -> bool | None:
    """The plan's answer: in the GPUs when there are any, else in system RAM (None: the
    plan cannot tell, e.g. a model of unknown size). A plan that fits only with experts in
    system RAM that were not asked for (doctor's suggestion) does not fit as chosen."""
    if report.gpus:
        return False if report.fits and report.suggestion else report.fits
    return report.fits_in_ram


def _needs(report: Report) -> int | None:
    if report.gpus and report.gpu_needed_bytes is not None:
        return report.gpu_needed_bytes + (report.ram_needed_bytes or 0)
    if report.gpus:
        return report.needed_bytes
    return report.ram_needed_bytes


def _machine_text(machine: Machine) -> str:
    if machine.gpus:
        free = sum(g.free_bytes for g in machine.gpus)
        count = f"{len(machine.gpus)} GPUs" if len(machine.gpus) > 1 else "one GPU"
        ram = f", {size_text(machine.ram_available)} of RAM" if machine.ram_available else ""
        return f"{count} with {size_text(free)} free{ram}"
    if machine.ram_available is None:
        return "no GPU"
    return f"no GPU and {size_text(machine.ram_available)} of RAM available"


def _mode_text(settings: Settings) -> str:
    if settings.quantization == "none":
        return "in full precision"
    extra = (
        f" --cpu-experts {settings.cpu_experts}" if settings.cpu_experts not in ("", "0") else ""
    )
    return f"with --{settings.quantization}{extra}"


def candidates(settings: Settings, facts: ModelFacts, machine: Machine) -> list[dict[str, str]]:
    """Settings to try, in order, when the chosen ones do not fit: smaller weights first,
    then (a Mixtral with a GPU) experts in system RAM."""
    mixtral = facts.config.get("model_type") == "mixtral"
    offload = mixtral and bool(machine.gpus) and settings.cpu_experts in ("", "0")
    mode = settings.quantization
    tries: list[dict[str, str]] = []
    if offload and mode != "none":
        tries.append({"cpu_experts": "auto"})
    if mode in ("none", "8bit"):
        tries.append({"quantization": "4bit"})
    if offload and mode != "4bit":
        tries.append({"quantization": "4bit", "cpu_experts": "auto"})
    return tries


def check_fit(settings: Settings, facts: ModelFacts, machine: Machine, download_bytes: int) -> None:
    """Raise ``DownloadRefused`` when the model would not fit ``machine`` as ``settings``
    load it, offering the first settings that would (or, when none would, a server)."""
    report = diagnose(settings, machine, facts, libraries=False)
    if fits(report) is not False:
        return
    need = _needs(report)
    what = f"{settings.model} ({size_text(download_bytes)} to download) {_mode_text(settings)}"
    head = f"{what} needs ~{size_text(need)}" if need else what
    head += f", more than this machine has ({_machine_text(machine)})"
    for offer in candidates(settings, facts, machine):
        changed: dict[str, Any] = dict(offer)
        other = diagnose(replace(settings, **changed), machine, facts, libraries=False)
        if fits(other):
            flags = as_flags(offer)
            need_other = _needs(other)
            size = f" (~{size_text(need_other)})" if need_other else ""
            raise DownloadRefused(
                f"{head}; with {flags} it fits{size}: add {flags}. {NOTHING}", offer, flags
            )
    tried = " or ".join(as_flags(o) for o in candidates(settings, facts, machine))
    even = f" even with {tried}" if tried else ""
    raise DownloadRefused(
        f"{head}, and it does not fit{even}: use a server running it with --endpoint URL, "
        f"or see what would fit with mixchat doctor --assume-gpu 48GiB. {NOTHING}"
    )


def check_disk(
    repo_id: str,
    cache: Path,
    need: int,
    have: int,
    partial_files: int,
    partial_bytes: int,
) -> None:
    """Raise ``DownloadRefused`` when ``need`` more bytes (``have`` are in the cache
    already) do not fit the free space of the disk holding ``cache``, less a reserve."""
    free = hardware.free_disk(cache)
    if free is None or need + DISK_RESERVE <= free:
        return
    there = f" ({size_text(have)} of it is there already)" if have else ""
    message = (
        f"downloading {repo_id} needs {size_text(need)} more in {cache}{there}, "
        f"and only {size_text(free)} is free there"
    )
    if partial_files:
        message += (
            f"; {size_text(partial_bytes)} of that disk is held by {partial_files} partial "
            "download(s) an interrupted run left (blobs/*.incomplete), which are never "
            "reused and can be deleted"
        )
    raise DownloadRefused(
        f"{message}; free some space or set HF_HUB_CACHE (or HF_HOME) to a larger disk. {NOTHING}"
    )


def model_facts(config: dict[str, Any], parameters: int | None, weight_bytes: int) -> ModelFacts:
    """What the plan needs of a model on the hub: its config and parameter count (the
    hub's, else the weight bytes over the bytes of its declared dtype)."""
    if parameters is None:
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
        per_value = {"float32": 4, "float64": 8}.get(dtype, 2)
        parameters = weight_bytes // per_value
    return ModelFacts(config, parameters)
