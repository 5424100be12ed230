"""The one hardware probe: GPUs and their free memory, system RAM, CPU cores, and the
bandwidths that bound decoding (measured where asked, else assumed and said so).

``probe()`` looks at this machine (torch imported inside); ``assumed()`` describes a machine
the user names (``mixchat doctor --assume-gpu 24GiB --assume-ram 64GiB``) without torch.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

GB = 10**9
# Assumptions when nothing is measured or given (doctor says which it used). GPU: an RTX
# 3090/4090-class card's ~1 TB/s, of which decoding reaches ~80%. CPU: the int4 experts
# kernel reads ~2 GB/s of weights per core on AVX2 (measured on the 2-core machine that
# built this, benchmarks/cpu_experts.py); an 8-core desktop then reads ~16 GB/s, well below
# its RAM's bandwidth.
ASSUMED_GPU_BANDWIDTH = 800 * GB
ASSUMED_CPU_EXPERTS_BANDWIDTH = 16 * GB


@dataclass
class Gpu:
    """One CUDA device."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int
    capability: str = ""


@dataclass
class Machine:
    """What local loading and ``doctor`` need to know about a machine."""

    python: str
    torch: str | None
    cuda: str | None
    gpus: list[Gpu] = field(default_factory=list)
    ram_total: int | None = None
    ram_available: int | None = None
    cpu_cores: int | None = None
    # bytes/s of weights read while decoding; "measured" or "assumed" in the *_source fields
    gpu_bandwidth: float = ASSUMED_GPU_BANDWIDTH
    gpu_bandwidth_source: str = "assumed"
    cpu_bandwidth: float = ASSUMED_CPU_EXPERTS_BANDWIDTH
    cpu_bandwidth_source: str = "assumed"
    assumed_machine: bool = False  # described by the user, not probed


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    values[name] = int(parts[0]) * 1024
    except OSError:
        pass
    return values


def available_ram() -> int | None:
    """Bytes of RAM available to a new allocation (``MemAvailable``), if known."""
    info = _meminfo()
    if "MemAvailable" in info:
        return info["MemAvailable"]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def total_ram() -> int | None:
    """Bytes of RAM installed, if known."""
    info = _meminfo()
    if "MemTotal" in info:
        return info["MemTotal"]
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def free_disk(path: Path) -> int | None:
    """Bytes free for an unprivileged user on the file system that holds ``path`` (or its
    nearest existing parent: a cache directory may not exist yet); ``None`` if unknown."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def probe(measure: bool = False) -> Machine:
    """This machine. ``measure`` times the bandwidths (about a second): a device-to-device
    copy on GPU 0, and the CPU int4 experts kernel on one Mixtral-sized projection."""
    machine = Machine(
        python=platform.python_version(),
        torch=_version("torch"),
        cuda=None,
        ram_total=total_ram(),
        ram_available=available_ram(),
        cpu_cores=os.cpu_count(),
    )
    if machine.torch is None:
        return machine
    import torch

    machine.cpu_cores = torch.get_num_threads()
    if torch.cuda.is_available():
        machine.cuda = torch.version.cuda
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            major, minor = torch.cuda.get_device_capability(index)
            name = torch.cuda.get_device_name(index)
            machine.gpus.append(Gpu(index, name, total, free, f"{major}.{minor}"))
    if measure:
        if machine.gpus:
            machine.gpu_bandwidth = _gpu_copy_bandwidth()
            machine.gpu_bandwidth_source = "measured"
        rate = cpu_experts_bandwidth()
        if rate is not None:
            machine.cpu_bandwidth, machine.cpu_bandwidth_source = rate, "measured"
    return machine


def assumed(
    gpus: list[int],
    ram: int | None,
    gpu_bandwidth: float | None = None,
    cpu_bandwidth: float | None = None,
) -> Machine:
    """A machine the user describes: GPUs of ``gpus`` bytes each (all free), ``ram`` bytes
    of RAM (all available), bandwidths given or assumed."""
    machine = Machine(
        python=platform.python_version(),
        torch=_version("torch"),
        cuda="assumed" if gpus else None,
        gpus=[Gpu(i, "assumed GPU", size, size) for i, size in enumerate(gpus)],
        ram_total=ram,
        ram_available=ram,
        assumed_machine=True,
    )
    if gpu_bandwidth:
        machine.gpu_bandwidth, machine.gpu_bandwidth_source = gpu_bandwidth, "given"
    if cpu_bandwidth:
        machine.cpu_bandwidth, machine.cpu_bandwidth_source = cpu_bandwidth, "given"
    return machine


def _gpu_copy_bandwidth() -> float:
    """Bytes/s a 256 MiB device-to-device copy moves on GPU 0 (read plus write)."""
    import torch

    source = torch.empty(1 << 28, dtype=torch.uint8, device="cuda:0")
    target = torch.empty_like(source)
    target.copy_(source)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(5):
        target.copy_(source)
    torch.cuda.synchronize()
    return 2 * 5 * source.numel() / (time.perf_counter() - start)


def cpu_experts_bandwidth() -> float | None:
    """Bytes/s of int4 weights the CPU experts kernel gets through, one token through one
    Mixtral-sized projection (14336 x 4096): what a decoding step reads from RAM."""
    import torch

    from mixchat.engine.local.cpu_kernels import KERNEL_DTYPE, pack_weight, packed_matmul

    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        return None
    weight = torch.randn(14336, 4096) * 0.02
    packed, scales = pack_weight("4bit", weight)
    x = torch.randn(1, 4096, dtype=KERNEL_DTYPE)
    packed_matmul(x, packed, scales)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        packed_matmul(x, packed, scales)
        times.append(time.perf_counter() - start)
    size = packed.numel() + scales.numel() * scales.element_size()
    return size / sorted(times)[len(times) // 2]
