"""Quantized Mixtral: every expert and every attention projection in 4 or 8 bits (issue 4).

transformers 5 stores Mixtral's experts as fused 3-D parameters (``MixtralExperts.gate_up_proj``
and ``down_proj``), and ``BitsAndBytesConfig`` only swaps ``nn.Linear`` modules, so stock
``load_in_4bit`` leaves the experts, 45.1B of Mixtral's 46.7B parameters, in full precision
(bitsandbytes issue #1849). Here the model is built on the meta device, each layer's experts are
replaced by ``QuantizedMixtralExperts`` and its attention projections by bitsandbytes'
``Linear4bit`` / ``Linear8bitLt``, and the checkpoint is streamed one tensor at a time from its
safetensors shards; each weight is quantized (bitsandbytes' own kernels: NF4 ``quantize_4bit``,
LLM.int8 ``int8_vectorwise_quant``) as soon as it is read, so peak memory stays near the
quantized size. Embeddings, norms, the router and ``lm_head`` stay in ``compute_dtype``, as
with stock bitsandbytes. Imported only on the load path (it imports torch).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixchat.engine.base import EngineError

ProgressCallback = Callable[[str, int, int], None]

BLOCKSIZE = 64  # bitsandbytes' default 4-bit block: one absmax per 64 weights
QUANT_TYPE = "nf4"
INT8_THRESHOLD = 6.0  # LLM.int8 outlier threshold; transformers' llm_int8_threshold default
PROJECTIONS = ("gate_up", "down")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")

_EXPERT_KEY = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(w[123])\.weight$")
_FUSED_KEY = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$")
_ATTENTION_KEY = re.compile(r"^model\.layers\.(\d+)\.self_attn\.([qkvo]_proj)\.weight$")


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


class QuantizedMixtralExperts(nn.Module):
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
        super().__init__()
        from transformers.activations import ACT2FN

        if mode not in ("4bit", "8bit"):
            raise ValueError(f"mode must be '4bit' or '8bit', not {mode!r}")
        self.num_experts = int(config.num_local_experts)
        self.hidden_dim = int(config.hidden_size)
        self.intermediate_dim = int(config.intermediate_size)
        self.act_fn = ACT2FN[config.hidden_act]
        self.mode = mode
        self.compute_dtype = compute_dtype
        self.double_quant = double_quant
        self.storage_device = torch.device(device)
        self.shapes = {
            "gate_up": (2 * self.intermediate_dim, self.hidden_dim),
            "down": (self.hidden_dim, self.intermediate_dim),
        }
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


def _shard_files(model_dir: Path) -> list[Path]:
    """The checkpoint's shards: those the index names, else every ``*.safetensors``."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [model_dir / name for name in sorted(set(weight_map.values()))]
    return sorted(model_dir.glob("*.safetensors"))


def _build_skeleton(
    config: Any,
    mode: str,
    compute_dtype: torch.dtype,
    device: torch.device,
    double_quant: bool,
    attention: str,
) -> Any:
    """A Mixtral with no weights yet: parameters on meta, quantized modules swapped in."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    bnb = import_bnb()
    # Buffers stay real: the rotary inverse frequencies are computed, not loaded.
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(
            config, dtype=compute_dtype, attn_implementation=attention
        )
    for layer in model.model.layers:
        layer.mlp.experts = QuantizedMixtralExperts(
            config, mode, compute_dtype, device, double_quant
        )
        for name in ATTENTION:
            old = getattr(layer.self_attn, name)
            shape = (old.in_features, old.out_features, old.bias is not None)
            new: nn.Module
            if mode == "4bit":
                new = bnb.nn.Linear4bit(
                    *shape,
                    compute_dtype=compute_dtype,
                    compress_statistics=double_quant,
                    quant_type=QUANT_TYPE,
                    device="meta",
                )
            else:
                new = bnb.nn.Linear8bitLt(
                    *shape, has_fp16_weights=False, threshold=INT8_THRESHOLD, device="meta"
                )
            setattr(layer.self_attn, name, new)
    return model


def _set_linear(
    module: Any, weight: torch.Tensor, mode: str, dtype: torch.dtype, device: torch.device
) -> None:
    """Quantize an attention projection into its bitsandbytes module, bitsandbytes' own way.

    ``Params4bit`` / ``Int8Params`` quantize when moved to the module's device.
    """
    bnb = import_bnb()
    if mode == "4bit":
        old = module.weight
        module.weight = bnb.nn.Params4bit(
            weight.to(dtype),
            requires_grad=False,
            blocksize=BLOCKSIZE,
            compress_statistics=old.compress_statistics,
            quant_type=old.quant_type,
            module=module,
        ).to(device)
    else:
        module.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False).to(
            device
        )


def _set_plain(
    model: Any, name: str, tensor: torch.Tensor, dtype: torch.dtype, device: torch.device
) -> None:
    """Put an unquantized parameter (embedding, norm, router, lm_head) in place."""
    module_name, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        return  # not part of this model: ignored, as transformers does
    current = module._parameters.get(attr)
    if current is None:
        return
    if tuple(current.shape) != tuple(tensor.shape):
        raise EngineError(f"{name}: checkpoint shape {tuple(tensor.shape)} != {current.shape}")
    # copy=True: safetensors may hand out views of its memory map, which would keep every
    # page read from the shard resident for as long as the model lives.
    value = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None, copy=True)
    module._parameters[attr] = nn.Parameter(value, requires_grad=False)


class _Stream:
    """Routes each checkpoint tensor to where it goes, quantizing as it arrives."""

    def __init__(self, model: Any, mode: str, dtype: torch.dtype, device: torch.device) -> None:
        self.model, self.mode, self.dtype, self.device = model, mode, dtype, device
        # gate and up (w1, w3) are fused into one weight; hold a half until its pair arrives.
        self.pending: dict[tuple[int, int], dict[str, torch.Tensor]] = {}

    def experts(self, layer: str) -> QuantizedMixtralExperts:
        module: QuantizedMixtralExperts = self.model.model.layers[int(layer)].mlp.experts
        return module

    def feed(self, handle: Any, key: str) -> None:
        """Load checkpoint tensor ``key`` from the open shard ``handle``."""
        name = key.replace(".block_sparse_moe.", ".mlp.")  # the hub checkpoint's module name
        if match := _EXPERT_KEY.match(name):
            experts, e, which = self.experts(match[1]), int(match[2]), match[3]
            if which == "w2":
                experts.set_expert("down", e, handle.get_tensor(key))
                return
            halves = self.pending.setdefault((int(match[1]), e), {})
            halves[which] = handle.get_tensor(key)
            if len(halves) == 2:
                del self.pending[(int(match[1]), e)]
                experts.set_expert("gate_up", e, torch.cat([halves["w1"], halves["w3"]]))
        elif match := _FUSED_KEY.match(name):
            # A checkpoint saved fused: slice one expert at a time off the 3-D tensor.
            experts, whole = self.experts(match[1]), handle.get_slice(key)
            proj = "gate_up" if match[2] == "gate_up_proj" else "down"
            for e in range(experts.num_experts):
                experts.set_expert(proj, e, whole[e : e + 1][0])
        elif match := _ATTENTION_KEY.match(name):
            module = getattr(self.model.model.layers[int(match[1])].self_attn, match[2])
            _set_linear(module, handle.get_tensor(key), self.mode, self.dtype, self.device)
        else:
            _set_plain(self.model, name, handle.get_tensor(key), self.dtype, self.device)


def _iter_keys(shards: list[Path]) -> Iterator[tuple[Any, str]]:
    from safetensors import safe_open

    for shard in shards:
        with safe_open(str(shard), framework="pt", device="cpu") as handle:
            for key in handle.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                yield handle, key


def load_quantized_mixtral(
    model_dir: Path,
    mode: str,
    compute_dtype: torch.dtype,
    device: torch.device | str,
    double_quant: bool = True,
    progress: ProgressCallback | None = None,
    attention: str = "sdpa",
) -> Any:
    """Load a Mixtral checkpoint with every expert and attention projection quantized.

    ``mode`` is ``'4bit'`` (NF4, double quant unless ``double_quant=False``) or ``'8bit'``
    (LLM.int8). Weights stream shard by shard, one tensor at a time, onto ``device``;
    ``progress('weights', done, total)`` counts tensors. Raises ``EngineError`` when
    bitsandbytes cannot run on ``device`` or the checkpoint is incomplete.
    """
    from safetensors import safe_open
    from transformers import AutoConfig, GenerationConfig

    device = torch.device(device)
    config = AutoConfig.from_pretrained(model_dir)
    if config.model_type != "mixtral":
        raise EngineError(f"{model_dir}: not a Mixtral model ({config.model_type})")
    check_device_support(mode, device)
    shards = _shard_files(model_dir)
    if not shards:
        raise EngineError(f"{model_dir}: no model weights (*.safetensors) found")
    total = 0
    for shard in shards:
        with safe_open(str(shard), framework="pt", device="cpu") as handle:
            total += len(handle.keys())

    model = _build_skeleton(config, mode, compute_dtype, device, double_quant, attention)
    stream = _Stream(model, mode, compute_dtype, device)
    step, last = max(1, total // 100), 0
    if progress is not None:
        progress("weights", 0, total)
    for done, (handle, key) in enumerate(_iter_keys(shards), start=1):
        stream.feed(handle, key)
        if progress is not None and (done - last >= step or done == total):
            last = done
            progress("weights", done, total)

    if getattr(config, "tie_word_embeddings", False):
        model.lm_head.weight = model.model.embed_tokens.weight
    lacking = [f"layer {layer} expert {e} w1/w3" for (layer, e) in stream.pending]
    for i, layer in enumerate(model.model.layers):
        lacking += [f"layer {i} experts {m}" for m in layer.mlp.experts.missing()]
    lacking += [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if lacking:
        more = f" (and {len(lacking) - 1} more)" if len(lacking) > 1 else ""
        raise EngineError(f"{model_dir}: the checkpoint lacks {lacking[0]}{more}")
    for module in model.modules():  # computed buffers (rotary frequencies) join the weights
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.device != device:
                module._buffers[name] = buffer.to(device)
    if (model_dir / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(model_dir)
    model.requires_grad_(False)
    return model.eval()
