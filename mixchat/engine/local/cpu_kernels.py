"""Quantized weights computed on the CPU with PyTorch's weight-only kernels (issue 14).

bitsandbytes' CPU 4-bit path is slow: one Mixtral-sized expert projection (14336 x 4096, one
token) takes 13-16x as long in NF4 as in bf16 (benchmarks/cpu_experts.py). PyTorch ships fused
weight-only kernels for the CPU that read the small integers directly
(``aten._weight_int8pack_mm``: int8, one scale per output row;
``aten._weight_int4pack_mm_for_cpu``: unsigned 4-bit in groups along the input, a bf16 scale
and zero per group). They run on
torch's intra-op thread pool, so all cores work on one matrix. Activations go in and come
out as bf16: these kernels are fastest there (fp32 or fp16 activations are 5-10x slower).

``--4bit`` here is int4 with groups of up to 128 weights, asymmetric (min/max), not NF4;
``--8bit`` is int8 per output channel, weight-only (activations are not rounded to int8,
unlike LLM.int8). ``CpuQuantizedExperts`` replaces a layer's ``MixtralExperts`` and computes
only the experts each token was routed to; ``CpuQuantizedLinear`` replaces an ``nn.Linear``.
Inputs on another device (a layer whose attention runs on a GPU) are copied in and the
result copied back: only the hidden states cross. Imported only on the load path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mixchat.engine.base import EngineError
from mixchat.engine.local.experts_base import QuantizedExpertsBase
from mixchat.engine.local.sizes import int4_group  # the group sizes, shared with the estimator

KERNEL_DTYPE = torch.bfloat16  # activations and scales as the kernels take them
PROJECTIONS = ("gate_up", "down")


def check_kernels() -> None:
    """Raise a one-line ``EngineError`` when this torch lacks the CPU weight-only kernels."""
    missing = [
        name
        for name in (
            "_weight_int8pack_mm",
            "_weight_int4pack_mm_for_cpu",
            "_convert_weight_to_int4pack_for_cpu",
        )
        if not hasattr(torch.ops.aten, name)
    ]
    if missing:
        raise EngineError(
            f"quantized CPU compute needs torch >= 2.6 (this torch {torch.__version__} "
            f"lacks {missing[0]})"
        )


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[out, in]`` -> int8 weights and one bf16 scale per output row (symmetric)."""
    w = weight.to(torch.float32)
    scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).to(KERNEL_DTYPE)
    q = torch.round(w / scale.to(torch.float32)[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def quantize_int4(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[out, in]`` -> packed uint8 ``[out, in/2]`` and bf16 scales-and-zeros
    ``[in/group, out, 2]``, the layout ``_weight_int4pack_mm_for_cpu`` reads.

    Each group of ``group`` inputs maps its [min, max] onto 0..15; the kernel computes
    ``(q - 8) * scale + zero``, so ``zero = min + 8 * scale``. Scale and zero are rounded
    to bf16 first and the integers chosen against the rounded values.
    """
    out_features, in_features = weight.shape
    w = weight.to(torch.float32).reshape(out_features, in_features // group, group)
    low, high = w.amin(dim=-1), w.amax(dim=-1)
    scale = ((high - low) / 15).clamp(min=1e-12).to(KERNEL_DTYPE)
    zero = (low + 8 * scale.to(torch.float32)).to(KERNEL_DTYPE)
    s, z = scale.to(torch.float32)[..., None], zero.to(torch.float32)[..., None]
    q = torch.round((w - z) / s + 8).clamp_(0, 15).to(torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
        q.reshape(out_features, in_features), 2
    )
    scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()
    return packed, scales_and_zeros


def unpack_int4(packed: torch.Tensor, scales_and_zeros: torch.Tensor) -> torch.Tensor:
    """The fp32 weight an int4 pack stands for. The pack's layout is the kernel's own, so
    the 4-bit integers are read back through the kernel (scale 1, zero 8 gives ``q``
    exactly), a block of inputs at a time, then scaled in fp32 as the kernel does."""
    groups, out_features, _ = scales_and_zeros.shape
    in_features = 2 * packed.shape[1]
    group = in_features // groups
    unit = torch.empty((groups, out_features, 2), dtype=KERNEL_DTYPE)
    unit[..., 0], unit[..., 1] = 1, 8
    q = torch.empty((out_features, in_features), dtype=torch.float32)
    for start in range(0, in_features, 1024):
        stop = min(in_features, start + 1024)
        eye = torch.zeros((stop - start, in_features), dtype=KERNEL_DTYPE)
        eye[:, start:stop] = torch.eye(stop - start, dtype=KERNEL_DTYPE)
        q[:, start:stop] = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, packed, group, unit).T
    s = scales_and_zeros[..., 0].to(torch.float32).T.repeat_interleave(group, dim=1)
    z = scales_and_zeros[..., 1].to(torch.float32).T.repeat_interleave(group, dim=1)
    return (q - 8) * s + z


def packed_matmul(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``x @ W.T`` (bf16 in, bf16 out) for an int8 (2-D scales) or int4 (3-D) pack."""
    if x.shape[0] == 0:
        return x.new_zeros((0, scales.shape[-2] if scales.dim() == 3 else scales.shape[0]))
    if scales.dim() == 3:
        group = 2 * packed.shape[1] // scales.shape[0]
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group, scales)
    return torch.ops.aten._weight_int8pack_mm(x, packed, scales)


def pack_weight(mode: str, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    group = int4_group(*weight.shape) if mode == "4bit" else None
    return quantize_int4(weight, group) if group else quantize_int8(weight)


def packed_shapes(
    mode: str, out_features: int, in_features: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The shapes ``pack_weight`` gives an ``[out, in]`` weight: (pack, scales)."""
    group = int4_group(out_features, in_features) if mode == "4bit" else None
    if group:
        return (out_features, in_features // 2), (in_features // group, out_features, 2)
    return (out_features, in_features), (out_features,)


def unpack_weight(packed: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    if scales.dim() == 3:
        return unpack_int4(packed, scales)
    return packed.to(torch.float32) * scales.to(torch.float32)[:, None]


class CpuQuantizedLinear(nn.Module):
    """``nn.Linear`` (no bias) with int8 or int4 weights computed by the CPU kernels."""

    def __init__(self, in_features: int, out_features: int, mode: str) -> None:
        super().__init__()
        self.in_features, self.out_features, self.mode = in_features, out_features, mode
        self.register_buffer("weight_packed", None)
        self.register_buffer("weight_scales", None)

    def set_weight(self, weight: torch.Tensor) -> None:
        """Quantize the full-precision ``[out, in]`` ``weight`` and keep it."""
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(
                f"shape {tuple(weight.shape)} != {self.out_features, self.in_features}"
            )
        packed, scales = pack_weight(self.mode, weight.to("cpu"))
        self.weight_packed, self.weight_scales = packed, scales

    def load_packed(self, packed: torch.Tensor, scales: torch.Tensor) -> None:
        """Take an already packed weight (``ValueError`` when its shapes do not fit)."""
        expected = packed_shapes(self.mode, self.out_features, self.in_features)
        if (tuple(packed.shape), tuple(scales.shape)) != expected:
            raise ValueError(f"packed shapes {packed.shape}, {scales.shape} != {expected}")
        self.weight_packed, self.weight_scales = packed.to("cpu"), scales.to("cpu")

    def dequantized(self) -> torch.Tensor:
        """The weight back in fp32 (for checks and tests)."""
        assert self.weight_packed is not None and self.weight_scales is not None
        return unpack_weight(self.weight_packed, self.weight_scales)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, mode={self.mode} (CPU kernels)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T`` in ``x``'s dtype and device."""
        assert self.weight_packed is not None and self.weight_scales is not None
        flat = x.reshape(-1, self.in_features).to("cpu", KERNEL_DTYPE)
        out = packed_matmul(flat, self.weight_packed, self.weight_scales)
        return out.to(x.device, x.dtype).reshape(*x.shape[:-1], self.out_features)


class CpuQuantizedExperts(QuantizedExpertsBase):
    """Drop-in for ``MixtralExperts`` whose experts live in system RAM, int8 or int4.

    Per expert ``e``: ``gate_up`` is ``[w1; w3]`` (``[2*intermediate, hidden]``) and ``down``
    is ``w2`` (``[hidden, intermediate]``), stacked over experts in one buffer per piece
    (``<proj>_packed`` and ``<proj>_scales``), always on the CPU. Forward takes the hidden
    states from wherever the layer runs, computes each routed expert once for all the tokens
    sent to it, and returns the weighted sum on the input's device and dtype.
    """

    def __init__(self, config: Any, mode: str) -> None:
        super().__init__(config, mode)
        self._filled: set[tuple[str, int]] = set()

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}, mode={self.mode} (CPU kernels)"

    def set_expert(self, proj: str, index: int, weight: torch.Tensor) -> None:
        """Quantize expert ``index``'s full-precision ``[out, in]`` ``proj`` weight."""
        if tuple(weight.shape) != self.shapes[proj]:
            raise ValueError(f"{proj}[{index}]: shape {tuple(weight.shape)} != {self.shapes[proj]}")
        packed, scales = pack_weight(self.mode, weight.to("cpu"))
        for name, value in ((f"{proj}_packed", packed), (f"{proj}_scales", scales)):
            buffer = self._buffers.get(name)
            if buffer is None:
                buffer = torch.zeros((self.num_experts, *value.shape), dtype=value.dtype)
                self.register_buffer(name, buffer)
            buffer[index].copy_(value)
        self._filled.add((proj, index))

    def load_packed(self, buffers: dict[str, torch.Tensor]) -> None:
        """Take already packed buffers (as ``state_dict`` gave them) instead of packing:
        every expert counts as set. Raises ``ValueError`` when one is missing or unknown,
        or its shape is not the pack of this module's weights."""
        wanted = {f"{p}_{part}" for p in PROJECTIONS for part in ("packed", "scales")}
        if set(buffers) != wanted:
            raise ValueError(f"experts buffers {sorted(buffers)} != {sorted(wanted)}")
        for proj in PROJECTIONS:
            packed, scales = buffers[f"{proj}_packed"], buffers[f"{proj}_scales"]
            expected = packed_shapes(self.mode, *self.shapes[proj])
            got = (tuple(packed.shape[1:]), tuple(scales.shape[1:]))
            if packed.shape[0] != self.num_experts or scales.shape[0] != self.num_experts:
                raise ValueError(f"{proj}: not one pack per expert")
            if got != expected:
                raise ValueError(f"{proj}: packed shapes {got} != {expected}")
            self.register_buffer(f"{proj}_packed", packed.to("cpu"))
            self.register_buffer(f"{proj}_scales", scales.to("cpu"))
        self._filled = {(p, e) for p in PROJECTIONS for e in range(self.num_experts)}

    def missing(self) -> list[str]:
        """Expert weights not set yet, e.g. ``['gate_up[3]']``; empty once complete."""
        return [
            f"{proj}[{e}]"
            for proj in PROJECTIONS
            for e in range(self.num_experts)
            if (proj, e) not in self._filled
        ]

    def _pieces(self, proj: str, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        packed, scales = self._buffers[f"{proj}_packed"], self._buffers[f"{proj}_scales"]
        assert packed is not None and scales is not None, proj
        return packed[e], scales[e]

    def dequantized(self, proj: str, e: int) -> torch.Tensor:
        """Expert ``e``'s ``proj`` weight back in fp32 (for checks and tests)."""
        return unpack_weight(*self._pieces(proj, e))

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """Same contract and maths as ``MixtralExperts.forward``; an index equal to
        ``num_experts`` marks a dropped slot, as upstream."""
        x = hidden_states.to("cpu", KERNEL_DTYPE)
        index = top_k_index.to("cpu")
        weights = top_k_weights.to("cpu", torch.float32)
        final = torch.zeros(x.shape, dtype=torch.float32)
        top_k = index.shape[1]
        flat = index.reshape(-1)
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=self.num_experts + 1).tolist()
        tokens, slots = order // top_k, order % top_k
        start = 0
        for e, count in enumerate(counts[: self.num_experts]):
            if count:
                token, slot = tokens[start : start + count], slots[start : start + count]
                gate, up = packed_matmul(x[token], *self._pieces("gate_up", e)).chunk(2, dim=-1)
                hidden = (self.act_fn(gate.float()) * up.float()).to(KERNEL_DTYPE)
                out = packed_matmul(hidden, *self._pieces("down", e)).float()
                final.index_add_(0, token, out * weights[token, slot, None])
            start += count
        return final.to(hidden_states.device, hidden_states.dtype)
