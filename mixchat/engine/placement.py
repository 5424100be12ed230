"""Where a quantized Mixtral's parts go when one GPU is not enough (pure arithmetic).

mixchat's quantized loader builds the model itself (``quant_load.py``), so transformers'
``device_map`` planning, which sizes modules before they are quantized, does not apply.
The plan here keeps each decoder layer whole on one device and fills devices in order:
the embedding goes with the first layer, the final norm and the LM head with the last.
A device's budget covers its layers' quantized weights plus their KV cache at the model's
full context, so a conversation that grows to the context limit still fits. Two 24 GB
cards hold NF4 Mixtral (about 23 GiB of weights and 4 GiB of KV cache at 32k tokens)
that neither holds alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mixchat.engine.base import EngineError

GIB = 1024**3
# Left free on each GPU when budgets come from its free memory: the CUDA context,
# activations of a long prefill, allocator fragmentation.
GPU_RESERVE = 1 * GIB
BLOCKSIZE = 64  # bitsandbytes 4-bit block (one absmax per 64 weights), as quant.py uses
NESTED_BLOCKSIZE = 256  # double quantization: one float32 absmax per 256 absmax bytes

_LAYER = re.compile(r"^model\.layers\.(\d+)(?:\.|$)")
_UNITS = {"gib": GIB, "gb": 10**9, "mib": 1024**2, "mb": 10**6}
_AMOUNT = re.compile(r"^(\d+(?:\.\d+)?)\s*(GiB|GB|MiB|MB)$", re.IGNORECASE)


@dataclass(frozen=True)
class Placement:
    """The device of each decoder layer, and of the final norm and LM head."""

    layers: tuple[str, ...]
    head: str

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
        """The devices used, in the order the model runs through them."""
        return list(dict.fromkeys((*self.layers, self.head)))

    def device_of(self, name: str) -> str:
        """The device of parameter or module ``name`` (``model.layers.3.mlp...``)."""
        if match := _LAYER.match(name):
            return self.layers[int(match[1])]
        if name.startswith(("model.norm", "lm_head")):
            return self.head
        return self.first

    def device_map(self) -> dict[str, str]:
        """The plan as accelerate's ``device_map`` (module name -> device)."""
        mapping = {"model.embed_tokens": self.first, "model.rotary_emb": self.first}
        mapping.update({f"model.layers.{i}": d for i, d in enumerate(self.layers)})
        mapping.update({"model.norm": self.head, "lm_head": self.head})
        return mapping

    def describe(self) -> str:
        """``cuda:0 (layers 0-17), cuda:1 (layers 18-31 and the head)``."""
        parts = []
        for device in self.devices:
            index = [i for i, d in enumerate(self.layers) if d == device]
            what = f"layers {index[0]}-{index[-1]}" if index else ""
            if device == self.head:
                what = f"{what} and the head" if what else "the head"
            parts.append(f"{device} ({what})")
        return ", ".join(parts)


@dataclass(frozen=True)
class Sizes:
    """Bytes a Mixtral needs on a device, by part."""

    embedding: int
    layer: int  # one decoder layer: quantized weights and its KV cache at the full context
    head: int  # final norm and LM head

    def total(self, num_layers: int) -> int:
        """The whole model."""
        return self.embedding + num_layers * self.layer + self.head


def quantized_bytes(parameters: int, rows: int, mode: str, double_quant: bool) -> int:
    """Storage of one ``rows`` x ``parameters / rows`` weight as bitsandbytes keeps it."""
    if mode == "8bit":
        return parameters + 4 * rows  # int8 weights, a float32 scale per row
    blocks = -(-parameters // BLOCKSIZE)
    # double quant: a uint8 per block plus a float32 per 256 blocks; else a float32 per block
    absmax = blocks + 4 * -(-blocks // NESTED_BLOCKSIZE) if double_quant else 4 * blocks
    return -(-parameters // 2) + absmax


def mixtral_sizes(config: Any, mode: str, compute_bytes: int, double_quant: bool) -> Sizes:
    """What a ``mode`` Mixtral (``config``: a ``MixtralConfig``) occupies, by part."""
    hidden = int(config.hidden_size)
    inter = int(config.intermediate_size)
    experts = int(config.num_local_experts)
    heads = int(config.num_attention_heads)
    kv_heads = int(config.num_key_value_heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    vocab = int(config.vocab_size)

    def q(out_features: int, in_features: int) -> int:
        return quantized_bytes(out_features * in_features, out_features, mode, double_quant)

    attention = 2 * q(heads * head_dim, hidden) + 2 * q(kv_heads * head_dim, hidden)
    expert_weights = experts * (q(2 * inter, hidden) + q(hidden, inter))
    plain = (experts * hidden + 2 * hidden) * compute_bytes  # router and the two norms
    kv = 2 * kv_heads * head_dim * compute_bytes * int(config.max_position_embeddings)
    return Sizes(
        embedding=vocab * hidden * compute_bytes,
        layer=attention + expert_weights + plain + kv,
        head=(vocab * hidden + hidden) * compute_bytes,
    )


def plan_placement(sizes: Sizes, num_layers: int, budgets: dict[str, int]) -> Placement:
    """Fill the devices of ``budgets`` (in its order) layer by layer; the embedding rides
    with the first layer, the head with the last where it fits, else on the next device.
    Raises ``EngineError`` when the model does not fit in all of them together."""
    devices = list(budgets)
    if not devices:
        raise EngineError("no device to place the model on")
    used = dict.fromkeys(devices, 0)
    current = 0
    used[devices[0]] = sizes.embedding
    layers: list[str] = []
    for _ in range(num_layers):
        while used[devices[current]] + sizes.layer > budgets[devices[current]]:
            current += 1
            if current == len(devices):
                raise _too_big(sizes, num_layers, budgets)
        used[devices[current]] += sizes.layer
        layers.append(devices[current])
    for index in range(current, len(devices)):
        if used[devices[index]] + sizes.head <= budgets[devices[index]]:
            return Placement(tuple(layers), devices[index])
    raise _too_big(sizes, num_layers, budgets)


def _too_big(sizes: Sizes, num_layers: int, budgets: dict[str, int]) -> EngineError:
    have = ", ".join(f"{d} {b / GIB:.1f}" for d, b in budgets.items())
    return EngineError(
        f"the model needs about {sizes.total(num_layers) / GIB:.1f} GiB with its KV cache, "
        f"more than the memory available ({have} GiB)"
    )


def budgets_from_free_memory(free: dict[str, int]) -> dict[str, int]:
    """Bytes by GPU from their free memory, less GPU_RESERVE on each."""
    return {device: max(0, amount - GPU_RESERVE) for device, amount in free.items()}


def budgets_from_max_memory(limits: dict[int | str, str]) -> dict[str, int]:
    """``{0: "20GiB", "cpu": "64GB"}`` (``config.parse_max_memory``) -> bytes by device,
    GPUs in index order, then the CPU."""
    budgets: dict[str, int] = {}
    for key in sorted((k for k in limits if isinstance(k, int)), key=int):
        budgets[f"cuda:{key}"] = _bytes(limits[key])
    if "cpu" in limits:
        budgets["cpu"] = _bytes(limits["cpu"])
    return budgets


def _bytes(amount: str) -> int:
    match = _AMOUNT.match(amount.strip())
    if match is None:
        raise EngineError(f"--max-memory: cannot read {amount!r}")
    return int(float(match[1]) * _UNITS[match[2].lower()])
