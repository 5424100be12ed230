"""Building and loading a quantized Mixtral, one tensor at a time (issue 4).

The model is built on the meta device; each layer's experts are replaced by
``QuantizedMixtralExperts`` and its attention projections by bitsandbytes' ``Linear4bit`` /
``Linear8bitLt`` (on a GPU), or by the CPU kernels' ``CpuQuantizedExperts`` /
``CpuQuantizedLinear`` for layers placed on the CPU; layers the ``Placement`` names in
``cpu_experts`` keep attention on their GPU and their experts in system RAM. The checkpoint
then streams from its safetensors shards one tensor at a time, each weight quantized as soon
as it is read and put straight onto the device its layer lives on (``Placement``), so peak
memory stays near the quantized size. Embeddings, norms, the router and ``lm_head`` stay in
``compute_dtype``, as with stock bitsandbytes. A model spread over several GPUs gets
accelerate's hooks, which move activations between them (transformers does the same for its
own multi-GPU bitsandbytes models); CPU experts move their own inputs and outputs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixchat.engine.base import EngineError
from mixchat.engine.local.bnb_experts import (
    ATTENTION,
    BLOCKSIZE,
    INT8_THRESHOLD,
    QUANT_TYPE,
    QuantizedMixtralExperts,
    check_device_support,
    import_bnb,
)
from mixchat.engine.local.checkpoint import iter_tensors, shard_files
from mixchat.engine.local.cpu_kernels import CpuQuantizedExperts, CpuQuantizedLinear, check_kernels
from mixchat.engine.local.placement import Placement
from mixchat.engine.local.progress import ProgressCallback
from mixchat.engine.local.quant_cache import QuantCache

_EXPERT_KEY = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(w[123])\.weight$")
_FUSED_KEY = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$")
_ATTENTION_KEY = re.compile(r"^model\.layers\.(\d+)\.self_attn\.([qkvo]_proj)\.weight$")


def quantized_skeleton(
    config: Any,
    mode: str,
    compute_dtype: torch.dtype,
    placement: Placement,
    double_quant: bool = True,
    attention: str = "sdpa",
    cpu_kernels: bool = True,
) -> Any:
    """A Mixtral with no weights yet: parameters on meta, quantized modules swapped in
    (their storage will live where ``placement`` puts each layer). Layers placed on the CPU
    get the CPU kernels' modules unless ``cpu_kernels`` is false (bitsandbytes everywhere,
    which is what a GPU runs: the tests exercise it on the CPU that way)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    bnb = import_bnb()
    # Buffers stay real: the rotary inverse frequencies are computed, not loaded.
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(
            config, dtype=compute_dtype, attn_implementation=attention
        )
    for index, layer in enumerate(model.model.layers):
        on_cpu = cpu_kernels and torch.device(placement.layers[index]).type == "cpu"
        if on_cpu or index in placement.cpu_experts:
            layer.mlp.experts = CpuQuantizedExperts(config, mode)
        else:
            layer.mlp.experts = QuantizedMixtralExperts(
                config, mode, compute_dtype, placement.layers[index], double_quant
            )
        for name in ATTENTION:
            old = getattr(layer.self_attn, name)
            shape = (old.in_features, old.out_features, old.bias is not None)
            new: nn.Module
            if on_cpu and old.bias is None:
                new = CpuQuantizedLinear(old.in_features, old.out_features, mode)
            elif mode == "4bit":
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


def set_quantized_linear(
    module: Any, weight: torch.Tensor, mode: str, dtype: torch.dtype, device: torch.device | str
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


def set_plain_parameter(
    model: Any, name: str, tensor: torch.Tensor, dtype: torch.dtype, device: torch.device | str
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

    def __init__(self, model: Any, mode: str, dtype: torch.dtype, placement: Placement) -> None:
        self.model, self.mode, self.dtype, self.placement = model, mode, dtype, placement
        # gate and up (w1, w3) are fused into one weight; hold a half until its pair arrives.
        self.pending: dict[tuple[int, int], dict[str, torch.Tensor]] = {}

    def experts(self, layer: str) -> QuantizedMixtralExperts | CpuQuantizedExperts:
        module: QuantizedMixtralExperts | CpuQuantizedExperts
        module = self.model.model.layers[int(layer)].mlp.experts
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
            if isinstance(module, CpuQuantizedLinear):
                module.set_weight(handle.get_tensor(key))
                return
            device = self.placement.device_of(name)
            set_quantized_linear(module, handle.get_tensor(key), self.mode, self.dtype, device)
        else:
            device = self.placement.device_of(name)
            set_plain_parameter(self.model, name, handle.get_tensor(key), self.dtype, device)


def load_quantized_mixtral(
    model_dir: Path,
    mode: str,
    compute_dtype: torch.dtype,
    device: torch.device | str | Placement,
    double_quant: bool = True,
    progress: ProgressCallback | None = None,
    attention: str = "sdpa",
    cpu_kernels: bool = True,
    cache: QuantCache | None = None,
) -> Any:
    """Load a Mixtral checkpoint with every expert and attention projection quantized.

    ``mode`` is ``'4bit'`` or ``'8bit'``. On a GPU: bitsandbytes NF4 (double quant unless
    ``double_quant=False``) or LLM.int8. On the CPU: PyTorch's weight-only int4 / int8
    kernels (``cpu_kernels.py``), or bitsandbytes there too with ``cpu_kernels=False``.
    Weights stream shard by shard, one tensor at a time, onto ``device`` (or the devices a
    ``Placement`` names); ``progress('weights', done, total)`` counts tensors.
    Raises ``EngineError`` when bitsandbytes cannot run on a device or the checkpoint is
    incomplete. With a ``cache``, the quantized weights come from it when it holds them for
    this checkpoint and these settings, and are written to it otherwise.
    """
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(model_dir)
    if config.model_type != "mixtral":
        raise EngineError(f"{model_dir}: not a Mixtral model ({config.model_type})")
    placement = (
        device
        if isinstance(device, Placement)
        else Placement.single(str(torch.device(device)), config.num_hidden_layers)
    )
    for name in placement.devices:
        if cpu_kernels and torch.device(name).type == "cpu":
            check_kernels()
        else:
            check_device_support(mode, torch.device(name))
    if placement.cpu_experts:
        check_kernels()
    shards = shard_files(model_dir)
    if not shards:
        raise EngineError(f"{model_dir}: no model weights (*.safetensors) found")

    def skeleton() -> Any:
        return quantized_skeleton(
            config, mode, compute_dtype, placement, double_quant, attention, cpu_kernels
        )

    cached = cache.load(skeleton, placement, cpu_kernels, progress) if cache else None
    if cached is not None:
        model = finish_quantized_mixtral(cached, placement, source="the quantized cache")
    else:
        model = skeleton()
        stream = _Stream(model, mode, compute_dtype, placement)
        for handle, key in iter_tensors(shards, progress):
            stream.feed(handle, key)
        lacking = [f"layer {layer} expert {e} w1/w3" for (layer, e) in stream.pending]
        model = finish_quantized_mixtral(model, placement, lacking, source=str(model_dir))
        if cache is not None:
            cache.save(model, placement, cpu_kernels, progress)
    if (model_dir / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(model_dir)
    return model


def finish_quantized_mixtral(
    model: Any, placement: Placement, lacking: list[str] | None = None, source: str = "model"
) -> Any:
    """Check that every weight was set, put computed buffers (rotary frequencies) where
    their layer runs, and spread the model over ``placement``'s devices. Returns it in
    eval mode; raises ``EngineError`` naming what is missing."""
    lacking = list(lacking or [])
    if getattr(model.config, "tie_word_embeddings", False):
        model.lm_head.weight = model.model.embed_tokens.weight
    for i, layer in enumerate(model.model.layers):
        lacking += [f"layer {i} experts {m}" for m in layer.mlp.experts.missing()]
    lacking += [n for n, p in model.named_parameters() if p.device.type == "meta"]
    lacking += [
        f"{n}.weight"
        for n, m in model.named_modules()
        if isinstance(m, CpuQuantizedLinear) and m.weight_packed is None
    ]
    if lacking:
        more = f" (and {len(lacking) - 1} more)" if len(lacking) > 1 else ""
        raise EngineError(f"{source}: the checkpoint lacks {lacking[0]}{more}")
    place_buffers(model, placement)
    model.requires_grad_(False)
    model.eval()
    if len(placement.devices) > 1:
        dispatch(model, placement)
    return model


def _hold_cpu_experts(model: Any, placement: Placement) -> dict[int, nn.Module]:
    """Take the CPU experts out of their layers (accelerate's hooks would move every tensor
    under a layer onto the layer's GPU); ``_put_back`` returns them after."""
    held = {}
    for index in placement.cpu_experts:
        mlp = model.model.layers[index].mlp
        held[index] = mlp.experts
        mlp.experts = nn.Module()
    return held


def _put_back(model: Any, held: dict[int, nn.Module]) -> None:
    for index, experts in held.items():
        model.model.layers[index].mlp.experts = experts


def place_buffers(model: Any, placement: Placement) -> None:
    """Move buffers built on the CPU (rotary frequencies are computed, not loaded) to the
    device their module runs on."""
    for module_name, module in model.named_modules():
        device = torch.device(placement.device_of(module_name))
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.device != device:
                module._buffers[name] = buffer.to(device)


def dispatch(model: Any, placement: Placement, force_hooks: bool = False) -> None:
    """Give a model whose layers already sit on ``placement``'s devices accelerate's hooks,
    which move each block's inputs to its device and the outputs back to the first
    (``force_hooks`` attaches them even when there is only one device)."""
    from accelerate import dispatch_model

    held = _hold_cpu_experts(model, placement)
    try:
        dispatch_model(
            model,
            device_map=placement.device_map(),
            main_device=placement.first,
            force_hooks=force_hooks,
        )
    finally:
        _put_back(model, held)
