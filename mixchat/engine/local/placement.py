"""Where a quantized Mixtral's parts go: GPUs in order, and experts in system RAM when the
GPUs are too small (pure arithmetic; sizes come from ``sizes.py``).

mixchat's quantized loader builds the model itself (``quantized.py``), so transformers'
``device_map`` planning, which sizes modules before they are quantized, does not apply.
The plan keeps each decoder layer on one device and fills devices in order: the embedding
goes with the first layer, the final norm and the LM head with the last. A device's budget
covers its layers' quantized weights plus their KV cache at the context, so a conversation
that grows to the context limit still fits. Two 24 GB cards hold NF4 Mixtral (about 23 GiB
of weights and 4 GiB of KV cache at 32k tokens) that neither holds alone.

When even that is not enough, the experts of some layers (the last ones, or a chosen set)
stay in system RAM and are computed there by the CPU kernels; everything else of those
layers (attention, norms, router, KV cache) stays on its GPU and only the hidden states
cross. ``plan_cpu_experts`` with ``auto`` picks the fewest such layers that fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mixchat.engine.base import EngineError
from mixchat.engine.local.sizes import GIB, Sizes

# Left free on each GPU when budgets come from its free memory: the CUDA context,
# activations of a long prefill, allocator fragmentation.
GPU_RESERVE = 1 * GIB
# Left free in system RAM when experts go there: the OS, Python, torch, the tokenizer, the
# page cache a loading shard needs.
RAM_RESERVE = 4 * GIB

_LAYER = re.compile(r"^model\.layers\.(\d+)(?:\.|$)")
_EXPERTS = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts(?:\.|$)")


@dataclass(frozen=True)
class Placement:
    """The device of each decoder layer, of the final norm and LM head, and which layers'
    experts live in system RAM (computed on the CPU)."""

    layers: tuple[str, ...]
    head: str
    cpu_experts: tuple[int, ...] = ()

    @classmethod
    def single(cls, device: str, num_layers: int) -> Placement:
        """Everything on ``device``."""
        return cls((device,) * num_layers, device)

    @property
    def first(self) -> str:
        """Where inputs enter: the embedding's device."""
        return self.layers[0]

    @property
    def devices(self) -> list[str]:
        """The devices the layers run on, in the order the model runs through them."""
        return list(dict.fromkeys((*self.layers, self.head)))

    def device_of(self, name: str) -> str:
        """The device of parameter or module ``name`` (``model.layers.3.mlp...``)."""
        if (match := _EXPERTS.match(name)) and int(match[1]) in self.cpu_experts:
            return "cpu"
        if match := _LAYER.match(name):
            return self.layers[int(match[1])]
        if name.startswith(("model.norm", "lm_head")):
            return self.head
        return self.first

    def device_map(self) -> dict[str, str]:
        """The layers' devices as accelerate's ``device_map`` (module name -> device). CPU
        experts are not in it: they move their inputs and outputs themselves."""
        mapping = {"model.embed_tokens": self.first, "model.rotary_emb": self.first}
        mapping.update({f"model.layers.{i}": d for i, d in enumerate(self.layers)})
        mapping.update({"model.norm": self.head, "lm_head": self.head})
        return mapping

    def describe(self) -> str:
        """``cuda:0 (layers 0-17), cuda:1 (layers 18-31 and the head)``, then
        ``; experts of layers 24-31 in system RAM`` when some are."""
        parts = []
        for device in self.devices:
            index = [i for i, d in enumerate(self.layers) if d == device]
            what = f"layers {index[0]}-{index[-1]}" if index else ""
            if device == self.head:
                what = f"{what} and the head" if what else "the head"
            parts.append(f"{device} ({what})")
        text = ", ".join(parts)
        if self.cpu_experts:
            text += f"; experts of {layers_phrase(self.cpu_experts)} in system RAM"
        return text


def layer_ranges(layers: tuple[int, ...] | list[int]) -> str:
    """``(0, 1, 2, 5)`` -> ``0-2, 5``."""
    out: list[str] = []
    for i in sorted(layers):
        if out and out[-1].split("-")[-1] == str(i - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ", ".join(out)


def layers_phrase(layers: tuple[int, ...] | list[int]) -> str:
    """``layer 31`` or ``layers 24-31``."""
    text = layer_ranges(layers)
    return f"layer {text}" if len(layers) == 1 else f"layers {text}"


def plan_placement(
    sizes: Sizes, num_layers: int, budgets: dict[str, int], cpu_experts: tuple[int, ...] = ()
) -> Placement:
    """Fill the devices of ``budgets`` (in its order) layer by layer; the embedding rides
    with the first layer, the head with the last where it fits, else on the next device.
    Layers in ``cpu_experts`` take only their GPU share. Raises ``EngineError`` when the
    model does not fit in all of them together."""
    devices = list(budgets)
    if not devices:
        raise EngineError("no device to place the model on")
    used = dict.fromkeys(devices, 0)
    current = 0
    used[devices[0]] = sizes.embedding
    layers: list[str] = []
    for index in range(num_layers):
        need = sizes.layer_without_experts if index in cpu_experts else sizes.layer
        while used[devices[current]] + need > budgets[devices[current]]:
            current += 1
            if current == len(devices):
                raise _too_big(sizes, num_layers, budgets, cpu_experts)
        used[devices[current]] += need
        layers.append(devices[current])
    for index in range(current, len(devices)):
        if used[devices[index]] + sizes.head <= budgets[devices[index]]:
            return Placement(tuple(layers), devices[index], tuple(sorted(cpu_experts)))
    raise _too_big(sizes, num_layers, budgets, cpu_experts)


def gpu_bytes(sizes: Sizes, num_layers: int, cpu_experts: int) -> int:
    """What the GPUs hold when ``cpu_experts`` layers keep their experts in RAM."""
    return sizes.total(num_layers) - cpu_experts * sizes.experts


def _too_big(
    sizes: Sizes, num_layers: int, budgets: dict[str, int], cpu_experts: tuple[int, ...] = ()
) -> EngineError:
    have = ", ".join(f"{d} {b / GIB:.1f}" for d, b in budgets.items())
    need = gpu_bytes(sizes, num_layers, len(cpu_experts)) / GIB
    where = f" (experts of {layers_phrase(cpu_experts)} in RAM)" if cpu_experts else ""
    return EngineError(
        f"the model needs about {need:.1f} GiB with its KV cache{where}, "
        f"more than the memory available ({have} GiB)"
    )


def parse_cpu_experts(value: str, num_layers: int) -> str | tuple[int, ...]:
    """The ``cpu_experts`` setting for a model of ``num_layers``: ``"auto"``, or the layers
    whose experts go to RAM. ``N`` means the last N layers; ``24-31`` or ``0,2,5-7`` name
    them. Empty or ``0``: none. Raises ``EngineError`` for a layer the model lacks."""
    text = value.strip().lower()
    if text == "auto":
        return "auto"
    if not text or text == "0":
        return ()
    if text.isdigit():
        count = int(text)
        if count > num_layers:
            raise EngineError(f"--cpu-experts {value}: the model has only {num_layers} layers")
        return tuple(range(num_layers - count, num_layers))
    chosen: set[int] = set()
    for item in text.split(","):
        low, _, high = item.strip().partition("-")
        first, last = int(low), int(high or low)
        if last >= num_layers or first > last:
            raise EngineError(f"--cpu-experts {value}: layers run from 0 to {num_layers - 1}")
        chosen.update(range(first, last + 1))
    return tuple(sorted(chosen))


def plan_cpu_experts(
    sizes: Sizes,
    num_layers: int,
    budgets: dict[str, int],
    ram_budget: int | None,
    request: str | tuple[int, ...],
) -> Placement:
    """Plan with experts in RAM: ``request`` is ``"auto"`` (the fewest last layers that make
    the rest fit the GPUs, none if it fits as it is) or the layers chosen. ``ram_budget``
    (``None``: unknown, not checked) bounds what the CPU experts may take. Raises
    ``EngineError`` in one line when no choice fits."""
    if not isinstance(request, str):
        _check_ram(sizes, len(request), ram_budget)
        return plan_placement(sizes, num_layers, budgets, request)
    for count in range(num_layers + 1):
        chosen = tuple(range(num_layers - count, num_layers))
        if ram_budget is not None and count * sizes.cpu_experts > ram_budget:
            break
        try:
            return plan_placement(sizes, num_layers, budgets, chosen)
        except EngineError:
            continue
    gpus = ", ".join(f"{d} {b / GIB:.1f}" for d, b in budgets.items())
    ram = "unknown" if ram_budget is None else f"{ram_budget / GIB:.1f}"
    every = gpu_bytes(sizes, num_layers, num_layers) / GIB
    raise EngineError(
        f"the model does not fit even with experts in system RAM: with all {num_layers} "
        f"layers' experts there ({num_layers * sizes.cpu_experts / GIB:.1f} GiB of RAM) the "
        f"GPUs need {every:.1f} GiB (available: {gpus} GiB; RAM {ram} GiB)"
    )


def _check_ram(sizes: Sizes, count: int, ram_budget: int | None) -> None:
    need = count * sizes.cpu_experts
    if ram_budget is not None and need > ram_budget:
        raise EngineError(
            f"the experts of {count} layer{'s' if count != 1 else ''} need {need / GIB:.1f} GiB "
            "of system RAM; "
            f"{ram_budget / GIB:.1f} GiB is available"
        )


def budgets_from_free_memory(free: dict[str, int]) -> dict[str, int]:
    """Bytes by GPU from their free memory, less GPU_RESERVE on each."""
    return {device: max(0, amount - GPU_RESERVE) for device, amount in free.items()}


def ram_budget(available: int | None, limit: int | None = None) -> int | None:
    """Bytes of system RAM CPU experts may take: ``limit`` (``--max-memory cpu=...``) when
    given, else the available RAM less RAM_RESERVE; ``None`` when neither is known."""
    if limit is not None:
        return limit
    return None if available is None else max(0, available - RAM_RESERVE)


def budgets_from_max_memory(limits: dict[int | str, int]) -> dict[str, int]:
    """``{0: 20 GiB, "cpu": 64 GB}`` in bytes (``config.parse_max_memory``) -> bytes by
    device, GPUs in index order, then the CPU."""
    budgets: dict[str, int] = {}
    for key in sorted((k for k in limits if isinstance(k, int)), key=int):
        budgets[f"cuda:{key}"] = limits[key]
    if "cpu" in limits:
        budgets["cpu"] = limits["cpu"]
    return budgets
