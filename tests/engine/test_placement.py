"""Placing a quantized Mixtral over several devices: the plan (pure arithmetic, made-up GPUs),
its size estimates against what bitsandbytes really stores, and the hooks that carry
activations between devices (attached here on one CPU, where they must change nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mixchat.config import Settings
from mixchat.engine.base import EngineError
from mixchat.engine.local.loader import weight_bytes
from mixchat.engine.local.placement import (
    GIB,
    Placement,
    Sizes,
    budgets_from_max_memory,
    plan_placement,
)
from mixchat.engine.local.policy import quantized_placement as _quantized_placement
from mixchat.engine.local.quantized import dispatch, load_quantized_mixtral
from mixchat.engine.local.sizes import mixtral_sizes
from tests.engine.test_quant import build_mixtral_checkpoint

SHAPE = {"vocab": 512, "hidden": 128, "intermediate": 256, "layers": 3, "experts": 4}
MIXTRAL_NF4 = Sizes(embedding=250 * 2**20, layer=int(0.83 * GIB), head=250 * 2**20)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mixtral_checkpoint(tmp_path_factory.mktemp("placed"), **SHAPE)


def test_a_model_that_fits_the_first_gpu_stays_on_it() -> None:
    placement = plan_placement(MIXTRAL_NF4, 32, {"cuda:0": 80 * GIB, "cuda:1": 80 * GIB})
    assert placement == Placement.single("cuda:0", 32)
    assert placement.devices == ["cuda:0"]


def test_two_24gb_cards_split_what_neither_holds() -> None:
    budgets = {"cuda:0": 23 * GIB, "cuda:1": 23 * GIB}
    placement = plan_placement(MIXTRAL_NF4, 32, budgets)
    assert placement.devices == ["cuda:0", "cuda:1"]
    first = placement.layers.count("cuda:0")
    # layers in order, each device within its budget
    assert placement.layers == ("cuda:0",) * first + ("cuda:1",) * (32 - first)
    used = {
        "cuda:0": MIXTRAL_NF4.embedding + first * MIXTRAL_NF4.layer,
        "cuda:1": (32 - first) * MIXTRAL_NF4.layer + MIXTRAL_NF4.head,
    }
    assert all(used[d] <= budgets[d] for d in budgets)
    assert used["cuda:0"] + MIXTRAL_NF4.layer > budgets["cuda:0"]  # filled before moving on
    assert placement.head == "cuda:1"
    assert placement.device_of("model.embed_tokens.weight") == "cuda:0"
    assert placement.device_of(f"model.layers.{first}.mlp.experts") == "cuda:1"
    assert placement.device_of("model.layers.1") == "cuda:0"  # not layers.1x
    assert placement.device_of("lm_head.weight") == placement.device_of("model.norm") == "cuda:1"
    mapping = placement.device_map()
    assert mapping["model.layers.31"] == "cuda:1" and mapping["model.rotary_emb"] == "cuda:0"
    assert placement.describe() == (
        f"cuda:0 (layers 0-{first - 1}), cuda:1 (layers {first}-31 and the head)"
    )


def test_the_head_moves_on_when_the_last_layers_device_is_full() -> None:
    sizes = Sizes(embedding=1, layer=10, head=5)
    placement = plan_placement(sizes, 3, {"a": 31, "b": 5})
    assert placement.layers == ("a", "a", "a") and placement.head == "b"


def test_a_model_too_big_for_all_gpus_is_refused_in_one_line() -> None:
    with pytest.raises(EngineError) as caught:
        plan_placement(MIXTRAL_NF4, 32, {"cuda:0": 12 * GIB, "cuda:1": 12 * GIB})
    message = str(caught.value)
    assert "\n" not in message
    assert "27.0 GiB" in message and "cuda:0 12.0, cuda:1 12.0 GiB" in message
    with pytest.raises(EngineError):  # the head alone does not fit anywhere
        plan_placement(Sizes(embedding=0, layer=10, head=50), 2, {"a": 20, "b": 20})
    with pytest.raises(EngineError):
        plan_placement(MIXTRAL_NF4, 32, {})


def test_max_memory_budgets() -> None:
    from mixchat.config import parse_max_memory

    budgets = budgets_from_max_memory(parse_max_memory("cpu=64GB,1=20GiB,0=512MiB"))
    assert list(budgets) == ["cuda:0", "cuda:1", "cpu"]
    assert budgets == {"cuda:0": 512 * 2**20, "cuda:1": 20 * GIB, "cpu": 64 * 10**9}


def test_mixtral_8x7b_estimates() -> None:
    from transformers import MixtralConfig

    config = MixtralConfig(max_position_embeddings=32768)  # Mixtral-8x7B-Instruct-v0.1
    nf4 = mixtral_sizes(config, "4bit", 2, double_quant=True)
    int8 = mixtral_sizes(config, "8bit", 2, double_quant=True)
    kv = 2 * 8 * 128 * 2 * 32768  # per layer at the full 32k context: 128 KiB per token / 32
    assert nf4.layer - kv == pytest.approx(0.70 * GIB, rel=0.05)
    assert nf4.total(32) == pytest.approx(27.0 * GIB, rel=0.05)  # 22.8 GiB weights + 4 KV
    assert int8.total(32) == pytest.approx(48.4 * GIB, rel=0.05)


@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_layer_estimate_matches_what_bitsandbytes_stores(checkpoint: Path, mode: str) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(checkpoint)
    model = load_quantized_mixtral(checkpoint, mode, torch.float32, "cpu", cpu_kernels=False)
    sizes = mixtral_sizes(config, mode, 4, double_quant=True)
    kv = 2 * config.num_key_value_heads * 16 * 4 * config.max_position_embeddings
    stored = weight_bytes(model.model.layers[0])
    # The estimate leaves out the code books (1 KiB per quantized module in 4-bit).
    assert stored - 6 * 1024 <= sizes.layer - kv <= stored
    assert sizes.embedding == weight_bytes(model.model.embed_tokens)


def test_hooks_carry_activations_without_changing_them(checkpoint: Path) -> None:
    ids = torch.randint(0, SHAPE["vocab"], (1, 24), generator=torch.Generator().manual_seed(3))
    plain = load_quantized_mixtral(checkpoint, "4bit", torch.float32, "cpu")
    # The multi-GPU path: accelerate's hooks on every block (one device here). Hooked before
    # any forward: bitsandbytes' CPU kernels repack 4-bit weights on the first forward, and
    # its repacking does not survive a state_dict round trip exactly (CPU only).
    hooked = load_quantized_mixtral(checkpoint, "4bit", torch.float32, "cpu")
    dispatch(hooked, Placement.single("cpu", SHAPE["layers"]), force_hooks=True)
    assert hasattr(hooked.model.layers[0], "_hf_hook") and hasattr(hooked.lm_head, "_hf_hook")
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, hooked(ids).logits)
        want = plain.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        got = hooked.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(want, got)


def test_loader_plans_from_max_memory_without_touching_a_gpu(checkpoint: Path) -> None:
    notices: list[str] = []
    settings = Settings(model=str(checkpoint), quantization="4bit", max_memory="0=1GiB,1=1GiB")
    placement: Any = _quantized_placement(checkpoint, settings, "bfloat16", "auto", notices.append)
    assert placement == Placement.single("cuda:0", SHAPE["layers"])  # small: first GPU only
    # ~0.6 MiB a layer (most of it KV cache for 4,096 positions): 1 MiB holds one
    settings = Settings(
        model=str(checkpoint), quantization="4bit", max_memory="0=1MiB,1=4MiB,cpu=1GiB"
    )
    placement = _quantized_placement(checkpoint, settings, "bfloat16", "auto", notices.append)
    assert placement == Placement(("cuda:0", "cuda:1", "cuda:1"), "cuda:1")
    assert any("cpu" in n for n in notices)  # cpu= is ignored, and said so
    notices.clear()
    one = _quantized_placement(checkpoint, settings, "bfloat16", {"": "cuda:1"}, notices.append)
    assert one == "cuda:1" and any("ignored" in n for n in notices)
