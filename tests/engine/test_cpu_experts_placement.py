"""Experts in system RAM when the GPUs are too small (issue 14): the plan (pure arithmetic,
made-up GPUs), the loader's choice from the settings, and the offloaded model itself, run on
one CPU standing in for both devices, as the GPU split is tested."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mixchat.config import ConfigError, Settings, load_settings
from mixchat.engine.base import EngineError
from mixchat.engine.local.bnb_experts import QuantizedMixtralExperts
from mixchat.engine.local.cpu_kernels import CpuQuantizedExperts
from mixchat.engine.local.placement import (
    Placement,
    parse_cpu_experts,
    plan_cpu_experts,
    plan_placement,
)
from mixchat.engine.local.policy import quantized_placement
from mixchat.engine.local.quantized import dispatch, load_quantized_mixtral
from mixchat.engine.local.sizes import GIB, MIXTRAL_8X7B, mixtral_sizes
from tests.cli_harness import Cli
from tests.engine.test_quant import build_mixtral_checkpoint

SHAPE = {"vocab": 512, "hidden": 128, "intermediate": 256, "layers": 4, "experts": 4}
NF4 = mixtral_sizes(MIXTRAL_8X7B, "4bit", 2, double_quant=True)


def test_the_setting_names_the_last_layers_or_a_chosen_set() -> None:
    assert parse_cpu_experts("", 32) == () and parse_cpu_experts("0", 32) == ()
    assert parse_cpu_experts("auto", 32) == "auto"
    assert parse_cpu_experts("3", 32) == (29, 30, 31)
    assert parse_cpu_experts("24-26", 32) == (24, 25, 26)
    assert parse_cpu_experts("0, 2,5-6", 32) == (0, 2, 5, 6)
    for bad in ("33", "30-32", "5-3"):
        with pytest.raises(EngineError) as caught:
            parse_cpu_experts(bad, 32)
        assert "\n" not in str(caught.value)
    assert load_settings({"cpu_experts": "auto"}).cpu_experts == "auto"
    assert load_settings({"cpu_experts": 4}).cpu_experts == "4"
    for bad in ("some", "-1", "1-", "auto,3"):
        with pytest.raises(ConfigError, match="--cpu-experts"):
            load_settings({"cpu_experts": bad})


def test_auto_offloads_the_fewest_last_layers_that_make_it_fit() -> None:
    budgets = {"cuda:0": 23 * GIB}  # a 24 GiB card less its reserve
    with pytest.raises(EngineError):
        plan_placement(NF4, 32, budgets)
    placement = plan_cpu_experts(NF4, 32, budgets, 60 * GIB, "auto")
    count = len(placement.cpu_experts)
    assert placement.cpu_experts == tuple(range(32 - count, 32)) and count > 0
    with pytest.raises(EngineError):  # one layer fewer does not fit
        plan_placement(NF4, 32, budgets, tuple(range(33 - count, 32)))
    assert placement.layers == ("cuda:0",) * 32 and placement.head == "cuda:0"
    # the GPU keeps attention, router, norms and the KV cache of every layer
    gpu = NF4.total(32) - count * NF4.experts
    assert gpu <= budgets["cuda:0"] < gpu + NF4.experts
    assert placement.device_of("model.layers.31.mlp.experts") == "cpu"
    assert placement.device_of("model.layers.31.mlp.experts.gate_up_packed") == "cpu"
    assert placement.device_of("model.layers.31.self_attn.q_proj") == "cuda:0"
    assert placement.device_of("model.layers.3.mlp.experts") == "cuda:0"
    assert "model.layers.31.mlp.experts" not in placement.device_map()
    assert placement.describe() == (
        f"cuda:0 (layers 0-31 and the head); experts of layers {32 - count}-31 in system RAM"
    )
    # A model that fits needs none; a chosen set is taken as given.
    assert plan_cpu_experts(NF4, 32, {"cuda:0": 79 * GIB}, 60 * GIB, "auto").cpu_experts == ()
    chosen = plan_cpu_experts(NF4, 32, budgets, 60 * GIB, tuple(range(0, 16)))
    assert chosen.cpu_experts == tuple(range(16))


def test_too_little_ram_or_gpu_is_a_one_line_error() -> None:
    with pytest.raises(EngineError) as caught:  # the RAM cannot take what the GPU cannot
        plan_cpu_experts(NF4, 32, {"cuda:0": 11 * GIB}, 2 * GIB, "auto")
    assert "\n" not in str(caught.value) and "system RAM" in str(caught.value)
    with pytest.raises(EngineError, match=r"need .* GiB of system RAM"):
        plan_cpu_experts(NF4, 32, {"cuda:0": 23 * GIB}, 1 * GIB, tuple(range(24, 32)))
    with pytest.raises(EngineError):  # even attention and KV alone overflow a 4 GiB card
        plan_cpu_experts(NF4, 32, {"cuda:0": 4 * GIB}, 200 * GIB, "auto")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mixtral_checkpoint(tmp_path_factory.mktemp("offload"), **SHAPE)


def test_the_loader_plans_experts_in_ram_from_the_settings(checkpoint: Path) -> None:
    # --max-memory gives the GPU budgets (no GPU is touched); the RAM is reported as 64 GiB.
    notices: list[str] = []

    def place(cpu_experts: str, max_memory: str) -> Any:
        settings = Settings(
            model=str(checkpoint),
            quantization="4bit",
            cpu_experts=cpu_experts,
            max_memory=max_memory,
        )
        return quantized_placement(
            checkpoint, settings, "bfloat16", "auto", notices.append, lambda: 64 * GIB
        )

    assert place("2", "0=1GiB") == Placement(("cuda:0",) * 4, "cuda:0", (2, 3))
    assert place("1,3", "0=1GiB") == Placement(("cuda:0",) * 4, "cuda:0", (1, 3))
    # ~0.75 MiB a layer, mostly KV cache for 4,096 positions (which stays on the GPU): 3 MiB
    # hold the model only when some layers leave their experts (~0.2 MiB each) in RAM.
    auto = place("auto", "0=3MiB")
    assert auto.cpu_experts and auto.cpu_experts[-1] == 3 and auto.layers == ("cuda:0",) * 4
    with pytest.raises(EngineError):
        place("", "0=3MiB")
    with pytest.raises(EngineError):  # cpu= caps the RAM the experts may take
        place("4", "0=1GiB,cpu=0.001MiB")
    assert not notices
    # On the CPU the whole model runs there already.
    settings = Settings(model=str(checkpoint), quantization="4bit", cpu_experts="2")
    assert quantized_placement(checkpoint, settings, "float32", None, notices.append) == "cpu"
    assert any("--cpu-experts" in n for n in notices)


def test_without_max_memory_the_gpus_free_memory_comes_from_the_probe(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mixchat.engine.local import hardware

    def probe(measure: bool = False) -> hardware.Machine:  # one 3 MiB GPU, all free
        return hardware.assumed([3 * 2**20 + 1 * GIB], 64 * GIB)  # + the reserve

    monkeypatch.setattr(hardware, "probe", probe)
    monkeypatch.setattr(hardware, "available_ram", lambda: 64 * GIB)
    notices: list[str] = []
    for chosen_map in ("auto", {"": "cuda:0"}):
        settings = Settings(model=str(checkpoint), quantization="8bit", cpu_experts="auto")
        placement = quantized_placement(
            checkpoint, settings, "bfloat16", chosen_map, notices.append
        )
        assert placement.cpu_experts and placement.cpu_experts[-1] == 3
        assert placement.layers == ("cuda:0",) * 4
    settings = Settings(model=str(checkpoint), quantization="8bit")
    assert quantized_placement(checkpoint, settings, "bfloat16", "auto", notices.append) == "cuda:0"
    assert not notices


def _with_transformers_experts(model: Any, layers: tuple[int, ...]) -> Any:
    """``model`` with the CPU experts of ``layers`` replaced by transformers' own experts
    holding the same (dequantized) weights."""
    from transformers.models.mixtral.modeling_mixtral import MixtralExperts

    for index in layers:
        quant = model.model.layers[index].mlp.experts
        plain = MixtralExperts(model.config)
        with torch.no_grad():
            for proj in ("gate_up", "down"):
                weights = [quant.dequantized(proj, e) for e in range(SHAPE["experts"])]
                getattr(plain, f"{proj}_proj").copy_(torch.stack(weights))
        model.model.layers[index].mlp.experts = plain
    return model


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_experts_in_ram_give_the_same_logits_and_greedy_output(checkpoint: Path, mode: str) -> None:
    # "GPU" layers run bitsandbytes' kernels as on a GPU (cpu_kernels=False); layers 2 and 3
    # keep their experts in RAM with the CPU kernels. The reference is the same model with
    # those experts computed by transformers' MixtralExperts on the same quantized weights.
    offloaded_layers = (2, 3)
    placement = Placement(("cpu",) * 4, "cpu", offloaded_layers)
    ids = torch.randint(0, SHAPE["vocab"], (2, 24), generator=torch.Generator().manual_seed(7))

    def load() -> Any:
        return load_quantized_mixtral(checkpoint, mode, torch.float32, placement, cpu_kernels=False)

    offloaded = load()
    kinds = [type(layer.mlp.experts) for layer in offloaded.model.layers]
    assert kinds == [QuantizedMixtralExperts] * 2 + [CpuQuantizedExperts] * 2
    reference = _with_transformers_experts(load(), offloaded_layers)
    # The multi-device path: accelerate's hooks on every block, CPU experts held aside.
    hooked = load()
    dispatch(hooked, placement, force_hooks=True)
    assert hasattr(hooked.model.layers[3], "_hf_hook")
    assert isinstance(hooked.model.layers[3].mlp.experts, CpuQuantizedExperts)
    assert not hasattr(hooked.model.layers[3].mlp.experts, "_hf_hook")
    with torch.no_grad():
        got, want = offloaded(ids).logits, reference(ids).logits
        assert float((got - want).norm() / want.norm()) < 2e-2  # bf16 activations on the CPU
        assert torch.equal(hooked(ids).logits, got)
        runs = [
            m.generate(ids[:1], max_new_tokens=10, do_sample=False, pad_token_id=0)
            for m in (offloaded, reference, hooked)
        ]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])


@pytest.mark.e2e
def test_ask_takes_the_flag(tiny_model: Path, cli: Cli) -> None:
    run = cli  # in process, the engine factory the installed command uses

    # CPU only: the whole model is on the CPU already, said once on stderr.
    args = ["ask", "--model", str(tiny_model), "--max-tokens", "3", "--no-save"]
    result = run(*args, "--4bit", "--cpu-experts", "auto", "hi")
    assert result.returncode == 0, result.stderr
    assert "--cpu-experts: the whole model runs on the CPU already; ignored" in result.stderr
    # Without quantization there is nothing for the CPU kernels to compute.
    result = run(*args, "--cpu-experts", "1", "hi")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "mixchat: error: --cpu-experts needs --4bit or --8bit "
        "(the CPU kernels compute quantized experts)"
    )
    result = run(*args, "--4bit", "--cpu-experts", "lots", "hi")
    assert result.returncode == 2 and "--cpu-experts" in result.stderr
