"""Quantized experts and projections computed by PyTorch's CPU weight-only kernels (issue 14).

The exactness check is transformers' own ``MixtralExperts`` (eager) run on the weights the
packs stand for: same routing, weighting, activation and gate/up order. The kernels take
bf16 activations, so agreement is to bf16 rounding, not bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mixchat.engine.local import cpu_kernels
from mixchat.engine.local.cpu_kernels import (
    CpuQuantizedExperts,
    CpuQuantizedLinear,
    quantize_int4,
    unpack_int4,
)
from mixchat.engine.local.quantized import load_quantized_mixtral
from mixchat.engine.local.sizes import MIXTRAL_8X7B, cpu_packed_bytes, int4_group, mixtral_sizes
from tests.engine.test_quant import build_mixtral_checkpoint

SHAPE = {"vocab": 512, "hidden": 128, "intermediate": 256, "layers": 2, "experts": 4}


def rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).norm() / want.float().norm())


def test_int4_packs_groups_of_up_to_128_and_falls_back_to_int8_where_it_cannot_pack() -> None:
    assert int4_group(14336 * 2, 4096) == 128 and int4_group(4096, 14336) == 128
    assert int4_group(64, 96) == 32
    assert int4_group(8, 64) is None  # the packer needs output rows in 16s
    assert int4_group(64, 40) is None
    weight = torch.randn(8, 64)
    linear = CpuQuantizedLinear(64, 8, "4bit")
    linear.set_weight(weight)
    assert linear.weight_packed is not None and linear.weight_packed.dtype == torch.int8
    assert cpu_packed_bytes("4bit", 8, 64) == 8 * 64 + 8 * 2


def test_int4_round_trip_is_the_min_max_grid() -> None:
    torch.manual_seed(0)
    weight = torch.randn(32, 256) * 0.05
    packed, scales = quantize_int4(weight, 128)
    assert packed.dtype == torch.uint8 and tuple(packed.shape) == (32, 128)
    assert tuple(scales.shape) == (2, 32, 2) and scales.dtype == torch.bfloat16
    back = unpack_int4(packed, scales)
    step = scales[..., 0].float().T.repeat_interleave(128, dim=1)
    # every weight is within half a step (plus bf16 rounding of scale and zero) of its value
    assert bool(((back - weight).abs() <= 0.5 * step + 1e-3).all())
    assert 0.02 < rel(back, weight) < 0.12  # 4 bits: ~9% RMS, as NF4


@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_linear_equals_a_bf16_matmul_on_the_dequantized_weight(mode: str) -> None:
    torch.manual_seed(1)
    weight = torch.randn(64, 128) * 0.05
    linear = CpuQuantizedLinear(128, 64, mode)
    linear.set_weight(weight)
    x = torch.randn(3, 5, 128)
    got = linear(x)
    assert got.dtype == torch.float32 and tuple(got.shape) == (3, 5, 64)
    want = x.to(torch.bfloat16).float() @ linear.dequantized().T
    assert rel(got, want) < 5e-3  # the kernel's bf16 output
    assert rel(linear.dequantized(), weight) < (0.12 if mode == "4bit" else 0.01)


def _experts(mode: str, hidden: int = 64, intermediate: int = 96, experts: int = 4) -> Any:
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralExperts

    config = MixtralConfig(
        hidden_size=hidden, intermediate_size=intermediate, num_local_experts=experts
    )
    config._experts_implementation = "eager"
    torch.manual_seed(0)
    original = MixtralExperts(config)
    torch.nn.init.normal_(original.gate_up_proj, std=0.05)
    torch.nn.init.normal_(original.down_proj, std=0.05)
    quant = CpuQuantizedExperts(config, mode)
    for e in range(experts):
        quant.set_expert("gate_up", e, original.gate_up_proj[e].detach())
        quant.set_expert("down", e, original.down_proj[e].detach())
    reference = MixtralExperts(config)
    with torch.no_grad():
        reference.gate_up_proj.copy_(
            torch.stack([quant.dequantized("gate_up", e) for e in range(experts)])
        )
        reference.down_proj.copy_(
            torch.stack([quant.dequantized("down", e) for e in range(experts)])
        )
    return quant, reference


@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_experts_match_mixtral_experts_on_the_dequantized_weights(mode: str) -> None:
    quant, reference = _experts(mode)
    assert quant.missing() == []
    x = torch.randn(12, 64)
    top_k_index = torch.randint(0, 4, (12, 2))
    top_k_index[0] = torch.tensor([3, 3])  # an expert picked twice for one token
    top_k_index[1] = torch.tensor([1, 4])  # 4 == num_experts: a dropped slot, as upstream
    weights = torch.rand(12, 2)
    with torch.no_grad():
        got, want = quant(x, top_k_index, weights), reference(x, top_k_index, weights)
    assert got.dtype == x.dtype and got.shape == x.shape
    assert rel(got, want) < 1e-2  # bf16 activations in, fp32 sums out
    assert torch.equal(got[1] != 0, want[1] != 0)
    for dtype in (torch.bfloat16, torch.float16):  # the layer's dtype comes back
        assert quant(x.to(dtype), top_k_index, weights).dtype == dtype


def test_only_the_routed_experts_are_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    quant, _ = _experts("4bit")
    used: list[int] = []
    pieces = quant._pieces

    def spy(proj: str, e: int) -> Any:
        used.append(e)
        return pieces(proj, e)

    monkeypatch.setattr(quant, "_pieces", spy)
    calls: list[int] = []
    matmul = cpu_kernels.packed_matmul
    monkeypatch.setattr(
        cpu_kernels, "packed_matmul", lambda x, *a: calls.append(x.shape[0]) or matmul(x, *a)
    )
    index = torch.tensor([[1, 3], [3, 1], [1, 4]])  # expert 4 == dropped
    quant(torch.randn(3, 64), index, torch.rand(3, 2))
    assert sorted(set(used)) == [1, 3]
    # one gate_up and one down per routed expert, each over all of its tokens at once
    assert calls == [3, 3, 2, 2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mixtral_checkpoint(tmp_path_factory.mktemp("cpu-kernels"), **SHAPE)


@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_a_cpu_load_equals_transformers_experts_on_the_same_weights(
    checkpoint: Path, mode: str
) -> None:
    # The whole model: every expert and attention projection through the CPU kernels, against
    # the same model where transformers' own experts and nn.Linear hold the dequantized
    # weights. Logits agree to bf16 rounding and greedy decoding picks the same tokens.
    from transformers.models.mixtral.modeling_mixtral import MixtralExperts

    model = load_quantized_mixtral(checkpoint, mode, torch.float32, "cpu")
    reference = load_quantized_mixtral(checkpoint, mode, torch.float32, "cpu")
    for layer in reference.model.layers:
        quant = layer.mlp.experts
        assert isinstance(quant, CpuQuantizedExperts) and quant.missing() == []
        plain = MixtralExperts(reference.config)
        with torch.no_grad():
            for proj in ("gate_up", "down"):
                stacked = torch.stack([quant.dequantized(proj, e) for e in range(4)])
                getattr(plain, f"{proj}_proj").copy_(stacked)
        layer.mlp.experts = plain
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            module = getattr(layer.self_attn, name)
            assert isinstance(module, CpuQuantizedLinear)
            linear = torch.nn.Linear(module.in_features, module.out_features, bias=False)
            linear.weight.data = module.dequantized()
            setattr(layer.self_attn, name, linear)
    ids = torch.randint(0, SHAPE["vocab"], (2, 32), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        got, want = model(ids).logits, reference(ids).logits
        assert rel(got, want) < 2e-2
        a = model.generate(ids[:1], max_new_tokens=12, do_sample=False, pad_token_id=0)
        b = reference.generate(ids[:1], max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(a, b)


@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_the_size_estimate_is_what_the_experts_store(mode: str) -> None:
    from transformers import MixtralConfig

    config = MixtralConfig(hidden_size=128, intermediate_size=256, num_local_experts=4)
    quant, _ = _experts(mode, hidden=128, intermediate=256)
    stored = sum(b.numel() * b.element_size() for b in quant.buffers())
    assert stored == mixtral_sizes(config, mode, 2, True).cpu_experts
    # Mixtral-8x7B: 704 MB a layer in NF4 on a GPU, ~748 MB packed for the CPU (int4, a bf16
    # scale and zero per 128 weights); int8 1.41 GB.
    sizes = mixtral_sizes(MIXTRAL_8X7B, mode, 2, True)
    assert sizes.cpu_experts == (748_683_264 if mode == "4bit" else 1_409_810_432)


def test_a_missing_attention_weight_is_a_one_line_error(checkpoint: Path, tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from mixchat.engine.base import EngineError

    tensors: dict[str, torch.Tensor] = {}
    for shard in checkpoint.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as handle:
            tensors.update({k: handle.get_tensor(k) for k in handle.keys()})  # noqa: SIM118
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    (tmp_path / "config.json").write_text((checkpoint / "config.json").read_text())
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(EngineError, match=r"lacks model\.layers\.1\.self_attn\.k_proj\.weight"):
        load_quantized_mixtral(tmp_path, "4bit", torch.float32, "cpu")
