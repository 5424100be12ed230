"""The one size estimator: bytes a model's parts occupy, as mixchat stores them (pure arithmetic).

Both the loader (to plan placement) and ``mixchat doctor`` (to say whether it fits) ask here.
A Mixtral is sized part by part in the format each part is stored in: bitsandbytes NF4 /
int8 on a GPU, PyTorch's int4 / int8 packs for experts computed on the CPU, the compute
dtype for embeddings, norms, router and head. Other models are sized from their parameter
count. The KV cache counts at a given context (the model's full context unless told).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 1024**3
BLOCKSIZE = 64  # bitsandbytes 4-bit block (one absmax per 64 weights)
NESTED_BLOCKSIZE = 256  # double quantization: one float32 absmax per 256 absmax bytes
INT4_GROUPS = (128, 64, 32)  # CPU int4 kernels: group sizes along the input, preferred first
INT4_ROWS = 16  # the CPU int4 packer needs output rows in multiples of 16
# Weight bytes per parameter of a model that is not a Mixtral (stock transformers loading;
# bitsandbytes quantizes its nn.Linear layers, nearly all of its parameters).
DENSE_BYTES_PER_PARAM = {"none": 2.0, "8bit": 1.006, "4bit": 0.525}

# Mixtral-8x7B-Instruct-v0.1's config.json, the parts sizing needs (doctor uses it before
# the model is downloaded).
MIXTRAL_8X7B: dict[str, Any] = {
    "model_type": "mixtral",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "vocab_size": 32000,
    "max_position_embeddings": 32768,
}
MIXTRAL_8X7B_PARAMETERS = 46_702_792_704


@dataclass(frozen=True)
class Shape:
    """The dimensions of a decoder-only transformer that sizing needs."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    context: int
    experts: int = 0  # 0: a dense model
    experts_per_token: int = 2

    @classmethod
    def of(cls, config: Any) -> Shape:
        """From a ``config.json`` dict or a transformers config object."""

        def get(name: str, default: Any = None) -> Any:
            if isinstance(config, dict):
                return config.get(name, default)
            return getattr(config, name, default)

        hidden, heads = int(get("hidden_size")), int(get("num_attention_heads"))
        return cls(
            hidden=hidden,
            intermediate=int(get("intermediate_size") or 4 * hidden),
            layers=int(get("num_hidden_layers")),
            heads=heads,
            kv_heads=int(get("num_key_value_heads") or heads),
            head_dim=int(get("head_dim") or hidden // heads),
            vocab=int(get("vocab_size")),
            context=int(get("max_position_embeddings") or 32768),
            experts=int(get("num_local_experts") or 0),
            experts_per_token=int(get("num_experts_per_tok") or 2),
        )


def kv_bytes_per_token(shape: Shape, compute_bytes: int = 2) -> int:
    """KV cache per token over all layers (K and V)."""
    return shape.layers * 2 * shape.kv_heads * shape.head_dim * compute_bytes


def quantized_bytes(parameters: int, rows: int, mode: str, double_quant: bool) -> int:
    """Storage of one ``rows`` x ``parameters / rows`` weight as bitsandbytes keeps it."""
    if mode == "8bit":
        return parameters + 4 * rows  # int8 weights, a float32 scale per row
    blocks = -(-parameters // BLOCKSIZE)
    # double quant: a uint8 per block plus a float32 per 256 blocks; else a float32 per block
    absmax = blocks + 4 * -(-blocks // NESTED_BLOCKSIZE) if double_quant else 4 * blocks
    return -(-parameters // 2) + absmax


def int4_group(out_features: int, in_features: int) -> int | None:
    """The CPU int4 group size for an ``[out, in]`` weight, or ``None`` when int4 cannot pack
    it (it is then stored as int8)."""
    if out_features % INT4_ROWS:
        return None
    return next((g for g in INT4_GROUPS if in_features % g == 0), None)


def cpu_packed_bytes(mode: str, out_features: int, in_features: int) -> int:
    """Bytes of one ``[out, in]`` weight packed for the CPU kernels (weights and scales)."""
    group = int4_group(out_features, in_features) if mode == "4bit" else None
    if group:  # 4 bits a weight, a bf16 scale and zero per group
        return out_features * in_features // 2 + (in_features // group) * out_features * 4
    return out_features * in_features + out_features * 2  # int8, a bf16 scale per row


@dataclass(frozen=True)
class Sizes:
    """Bytes a Mixtral needs, by part. ``layer`` is one decoder layer on a GPU with its
    experts there too; a layer whose experts are computed on the CPU leaves ``experts`` on
    the GPU side and needs ``cpu_experts`` of system RAM instead."""

    embedding: int
    layer: int  # quantized weights of one layer and its KV cache at the context
    head: int  # final norm and LM head
    experts: int = 0  # of ``layer``: the experts' share, in the GPU format
    cpu_experts: int = 0  # the same experts packed for the CPU kernels
    kv_layer: int = 0  # of ``layer``: the KV cache at the context
    active_experts: int = 0  # experts a token runs through per layer (top-k)
    num_experts: int = 1
    context: int = 0  # tokens the KV cache share (``kv_layer``) was sized for

    @property
    def layer_without_experts(self) -> int:
        """A layer's GPU share when its experts sit in system RAM."""
        return self.layer - self.experts

    def total(self, num_layers: int) -> int:
        """The whole model on GPUs, with its KV cache."""
        return self.embedding + num_layers * self.layer + self.head


def mixtral_sizes(
    config: Any, mode: str, compute_bytes: int, double_quant: bool, context: int | None = None
) -> Sizes:
    """What a Mixtral (``config``: a ``MixtralConfig`` or its dict) occupies in ``mode``
    (``none``, ``4bit``, ``8bit``), with the KV cache at ``context`` tokens (default: the
    model's full context)."""
    s = Shape.of(config)
    tokens = s.context if context is None else context

    def q(out_features: int, in_features: int) -> int:
        if mode == "none":
            return out_features * in_features * compute_bytes
        return quantized_bytes(out_features * in_features, out_features, mode, double_quant)

    attention = 2 * q(s.heads * s.head_dim, s.hidden) + 2 * q(s.kv_heads * s.head_dim, s.hidden)
    experts = s.experts * (q(2 * s.intermediate, s.hidden) + q(s.hidden, s.intermediate))
    cpu = experts  # unquantized experts are not computed on the CPU; kept for symmetry
    if mode != "none":
        cpu = s.experts * (
            cpu_packed_bytes(mode, 2 * s.intermediate, s.hidden)
            + cpu_packed_bytes(mode, s.hidden, s.intermediate)
        )
    plain = (s.experts * s.hidden + 2 * s.hidden) * compute_bytes  # router and the two norms
    kv = 2 * s.kv_heads * s.head_dim * compute_bytes * tokens
    return Sizes(
        embedding=s.vocab * s.hidden * compute_bytes,
        layer=attention + experts + plain + kv,
        head=(s.vocab * s.hidden + s.hidden) * compute_bytes,
        experts=experts,
        cpu_experts=cpu,
        kv_layer=kv,
        active_experts=min(s.experts_per_token, s.experts),
        num_experts=max(1, s.experts),
        context=tokens,
    )


def dense_weight_bytes(parameters: int, mode: str) -> int:
    """Weight bytes of a non-Mixtral model loaded the stock way (bf16, or bitsandbytes)."""
    return int(parameters * DENSE_BYTES_PER_PARAM[mode])
