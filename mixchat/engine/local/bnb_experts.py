"""Quantized Mixtral experts: every expert in 4 or 8 bits (issue 4).

transformers 5 stores Mixtral's experts as fused 3-D parameters (``MixtralExperts.gate_up_proj``
and ``down_proj``), and ``BitsAndBytesConfig`` only swaps ``nn.Linear`` modules, so stock
``load_in_4bit`` leaves the experts, 45.1B of Mixtral's 46.7B parameters, in full precision
(bitsandbytes issue #1849). ``QuantizedMixtralExperts`` replaces a layer's experts; each weight
is quantized with bitsandbytes' own kernels (NF4 ``quantize_4bit``, LLM.int8
``int8_vectorwise_quant``) as it is set. ``quantized.py`` builds and loads the whole model.
Imported only on the load path (it imports torch).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from mixchat.engine.base import EngineError
from mixchat.engine.local.experts_base import QuantizedExpertsBase
from mixchat.engine.local.sizes import BLOCKSIZE  # one absmax per 64 weights

QUANT_TYPE = "nf4"
INT8_THRESHOLD = 6.0  # LLM.int8 outlier threshold; transformers' llm_int8_threshold default
PROJECTIONS = ("gate_up", "down")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


class _CastWarningFilter(logging.Filter):
    """Drops bitsandbytes' per-call note that int8 inputs are cast to fp16 (by design)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")


def import_bnb() -> Any:
    """Import bitsandbytes without its stderr chatter.

    Its CPU backend warns at import that an optional kernels package is missing, and int8
    matmuls warn on every call that inputs are cast to fp16; both would land in the CLI's
    stderr. Real errors still raise.
    """
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    functions = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _CastWarningFilter) for f in functions.filters):
        functions.addFilter(_CastWarningFilter())
    import bitsandbytes

    return bitsandbytes


def check_device_support(mode: str, device: torch.device) -> None:
    """Raise a one-line ``EngineError`` when bitsandbytes cannot run ``mode`` on ``device``.

    A tiny quantize-and-matmul probe with the very ops the model uses, so the answer is the
    installed build's, not a guess from version numbers.
    """
    try:
        bnb = import_bnb()
        weight = torch.randn(128, 64, device=device)
        x = torch.randn(2, 64, device=device)
        if mode == "4bit":
            packed, state = bnb.functional.quantize_4bit(
                weight, blocksize=BLOCKSIZE, compress_statistics=True, quant_type=QUANT_TYPE
            )
            bnb.matmul_4bit(x, packed, quant_state=state)
        else:
            cb, scb, _ = bnb.functional.int8_vectorwise_quant(weight.half())
            bnb.matmul(x, cb, state=_int8_state(bnb, cb, scb))
    except Exception as exc:  # ImportError, RuntimeError, NotImplementedError from a backend
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineError(
            f"--{mode} needs bitsandbytes with support for {device.type} "
            f"(a CUDA GPU, or a CPU build); it failed here: {reason}"
        ) from None


def _int8_state(bnb: Any, cb: torch.Tensor, scb: torch.Tensor) -> Any:
    """The inference-only matmul state ``Linear8bitLt`` builds for int8 weights."""
    state = bnb.MatmulLtState()
    state.CB, state.SCB = cb, scb
    state.threshold = INT8_THRESHOLD
    state.has_fp16_weights = False
    state.is_training = False
    return state


class QuantizedMixtralExperts(QuantizedExpertsBase):
    """Drop-in for ``MixtralExperts`` whose expert weights are NF4 or int8.

    Per expert ``e``: ``gate_up`` is ``[w1; w3]`` (``[2*intermediate, hidden]``, gate rows first,
    as transformers fuses them) and ``down`` is ``w2`` (``[hidden, intermediate]``). Storage is
    one buffer per piece stacked over experts, so ``.to()`` moves it and memory accounting sees
    it. 4-bit: packed NF4 bytes, per-block absmax (itself 8-bit quantized with double quant:
    nested absmax and offset), the NF4 and nested code books. 8-bit: row-wise int8 weights and
    their float32 row scales. Forward runs only the experts that received tokens, through
    ``bnb.matmul_4bit`` / ``bnb.matmul`` on that expert's slice.
    """

    def __init__(
        self,
        config: Any,
        mode: str,
        compute_dtype: torch.dtype,
        device: torch.device | str,
        double_quant: bool = True,
    ) -> None:
        super().__init__(config, mode)
        self.compute_dtype = compute_dtype
        self.double_quant = double_quant
        self.storage_device = torch.device(device)
        self.nested_blocksize = 256
        self._filled: set[tuple[str, int]] = set()
        self._bnb = import_bnb()

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}, mode={self.mode}, compute_dtype={self.compute_dtype}"

    # -- filling ----------------------------------------------------------

    def set_expert(self, proj: str, index: int, weight: torch.Tensor) -> None:
        """Quantize one expert's full-precision ``[out, in]`` weight and store it."""
        if tuple(weight.shape) != self.shapes[proj]:
            raise ValueError(f"{proj}[{index}]: shape {tuple(weight.shape)} != {self.shapes[proj]}")
        # Cast first, as stock loading does: the quant state then dequantizes to compute_dtype.
        w = weight.to(device=self.storage_device, dtype=self.compute_dtype).contiguous()
        functional = self._bnb.functional
        if self.mode == "4bit":
            packed, state = functional.quantize_4bit(
                w,
                blocksize=BLOCKSIZE,
                compress_statistics=self.double_quant,
                quant_type=QUANT_TYPE,
            )
            self._put(f"{proj}_weight", index, packed.reshape(-1))
            self._put(f"{proj}_absmax", index, state.absmax)
            self._constant("quant_map", state.code)
            if state.nested:
                self._put(f"{proj}_nested_absmax", index, state.state2.absmax)
                self._put(f"{proj}_offset", index, state.offset.reshape(()))
                self._constant("nested_quant_map", state.state2.code)
                self.nested_blocksize = int(state.state2.blocksize)
        else:
            cb, scb, _ = functional.int8_vectorwise_quant(w.to(torch.float16))
            self._put(f"{proj}_weight", index, cb)
            self._put(f"{proj}_scale", index, scb)
        self._filled.add((proj, index))

    def _put(self, name: str, index: int, value: torch.Tensor) -> None:
        # Buffers are allocated on first use, from the shapes bitsandbytes actually returns.
        buffer = self._buffers.get(name)
        if buffer is None:
            shape = (self.num_experts, *value.shape)
            buffer = torch.zeros(shape, dtype=value.dtype, device=self.storage_device)
            self.register_buffer(name, buffer)
        buffer[index].copy_(value)

    def _constant(self, name: str, value: torch.Tensor) -> None:
        if name not in self._buffers:
            self.register_buffer(name, value.detach().to(self.storage_device).clone())

    def packed_names(self) -> set[str]:
        """The buffers a complete module holds (what ``load_packed`` takes)."""
        if self.mode == "8bit":
            return {f"{p}_{part}" for p in PROJECTIONS for part in ("weight", "scale")}
        names = {f"{p}_{part}" for p in PROJECTIONS for part in ("weight", "absmax")}
        if self.double_quant:
            names |= {f"{p}_{part}" for p in PROJECTIONS for part in ("nested_absmax", "offset")}
            names.add("nested_quant_map")
        return names | {"quant_map"}

    def load_packed(self, buffers: dict[str, torch.Tensor]) -> None:
        """Take already quantized buffers (as ``state_dict`` gave them) instead of
        quantizing: every expert counts as set. Raises ``ValueError`` when a buffer is
        missing, unknown, or not one per expert."""
        if set(buffers) != self.packed_names():
            raise ValueError(f"experts buffers {sorted(buffers)} != {sorted(self.packed_names())}")
        for name, value in buffers.items():
            per_expert = "quant_map" not in name
            if per_expert and (value.dim() == 0 or value.shape[0] != self.num_experts):
                raise ValueError(f"{name}: shape {tuple(value.shape)} is not per expert")
            self.register_buffer(name, value.to(self.storage_device))
        self._filled = {(p, e) for p in PROJECTIONS for e in range(self.num_experts)}

    def missing(self) -> list[str]:
        """Expert weights not set yet, e.g. ``['gate_up[3]']``; empty once complete."""
        return [
            f"{proj}[{e}]"
            for proj in PROJECTIONS
            for e in range(self.num_experts)
            if (proj, e) not in self._filled
        ]

    # -- computing --------------------------------------------------------

    def _buf(self, name: str) -> torch.Tensor:
        buffer = self._buffers[name]
        assert buffer is not None, name
        return buffer

    def _quant_state(self, proj: str, e: int) -> Any:
        functional = self._bnb.functional
        nested = None
        if f"{proj}_nested_absmax" in self._buffers:
            nested = functional.QuantState(
                absmax=self._buf(f"{proj}_nested_absmax")[e],
                code=self._buf("nested_quant_map"),
                blocksize=self.nested_blocksize,
                dtype=torch.float32,
            )
        return functional.QuantState(
            absmax=self._buf(f"{proj}_absmax")[e],
            shape=torch.Size(self.shapes[proj]),
            code=self._buf("quant_map"),
            blocksize=BLOCKSIZE,
            quant_type=QUANT_TYPE,
            dtype=self.compute_dtype,
            offset=self._buf(f"{proj}_offset")[e] if nested is not None else None,
            state2=nested,
        )

    def _linear(self, proj: str, e: int, x: torch.Tensor) -> torch.Tensor:
        """``x @ W_e.T`` with expert ``e``'s quantized ``proj`` weight."""
        weight = self._buf(f"{proj}_weight")
        if self.mode == "4bit":
            return self._bnb.matmul_4bit(x, weight[e], quant_state=self._quant_state(proj, e))
        scale = self._buf(f"{proj}_scale")
        result: torch.Tensor = self._bnb.matmul(
            x, weight[e], state=_int8_state(self._bnb, weight[e], scale[e])
        )
        return result

    def dequantized(self, proj: str, e: int) -> torch.Tensor:
        """Expert ``e``'s ``proj`` weight back in full precision (for checks and tests)."""
        functional = self._bnb.functional
        weight = self._buf(f"{proj}_weight")
        if self.mode == "4bit":
            out: torch.Tensor = functional.dequantize_4bit(weight[e], self._quant_state(proj, e))
            return out
        scale = self._buf(f"{proj}_scale")
        return functional.int8_vectorwise_dequant(weight[e], scale[e]).to(self.compute_dtype)

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """Same contract and maths as ``MixtralExperts.forward`` (eager), quantized weights."""
        final = torch.zeros_like(hidden_states)
        with torch.no_grad():
            # One extra class, as upstream: an index == num_experts marks a dropped slot.
            mask = nn.functional.one_hot(top_k_index, num_classes=self.num_experts + 1)
            mask = mask.permute(2, 1, 0)  # [expert, top_k slot, token]
            hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero().flatten().tolist()
        for e in hit:
            if e == self.num_experts:
                continue
            top_k_pos, token_idx = torch.where(mask[e])
            x = hidden_states[token_idx].to(self.compute_dtype)
            gate, up = self._linear("gate_up", e, x).chunk(2, dim=-1)
            out = self._linear("down", e, self.act_fn(gate) * up)
            out = out * top_k_weights[token_idx, top_k_pos, None]
            final.index_add_(0, token_idx, out.to(final.dtype))
        return final
