"""``mixchat doctor --assume-gpu/--assume-ram``: the loader's plan for machines the user does
not have, for the cards people own (12, 16, 24, 48 and 80 GiB) with 64 GiB of RAM. Pure
arithmetic over ``sizes.py`` and ``placement.py``: no torch, no GPU."""

from __future__ import annotations

import pytest

from mixchat.commands.doctor import render
from mixchat.config import Settings
from mixchat.engine.base import EngineError
from mixchat.engine.local import hardware
from mixchat.engine.local.placement import GPU_RESERVE, plan_placement
from mixchat.engine.local.report import diagnose
from mixchat.engine.local.sizes import GIB, MIXTRAL_8X7B, mixtral_sizes
from tests.unit.test_import_hygiene import CLI, HEAVY, run_python

CARDS = (12, 16, 24, 48, 80)


def plan(card_gib: int, mode: str, ram_gib: int = 64, cpu_experts: str = "") -> object:
    machine = hardware.assumed([card_gib * GIB], ram_gib * GIB)
    return diagnose(Settings(quantization=mode, cpu_experts=cpu_experts), machine)


@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_each_card_gets_the_fewest_layers_in_ram_that_fit(mode: str) -> None:
    sizes = mixtral_sizes(MIXTRAL_8X7B, mode, 2, double_quant=True)
    offloaded = []
    speeds = []
    for card in CARDS:
        report = plan(card, mode)
        assert report.fits is True, (card, report.notes)
        n = len(report.cpu_expert_layers)
        assert report.cpu_expert_layers == list(range(32 - n, 32))
        budget = {"cuda:0": card * GIB - GPU_RESERVE}
        plan_placement(sizes, 32, budget, tuple(report.cpu_expert_layers))  # it fits
        if n:
            with pytest.raises(EngineError):  # and one layer fewer does not
                plan_placement(sizes, 32, budget, tuple(range(33 - n, 32)))
            assert report.suggestion is not None and f"--cpu-experts {n}" in report.suggestion
        assert report.ram_needed_bytes == n * sizes.cpu_experts
        assert report.gpu_needed_bytes == sizes.total(32) - n * sizes.experts
        offloaded.append(n)
        speeds.append(report.tokens_per_s)
    assert offloaded == sorted(offloaded, reverse=True)  # bigger cards offload less
    assert speeds == sorted(speeds)  # and decode faster
    assert offloaded[-1] == 0  # an 80 GiB card holds either mode whole
    if mode == "4bit":
        assert offloaded[2] > 0 and offloaded[3] == 0  # 24 GiB needs help, 48 GiB does not


def test_the_report_reads_as_a_plan() -> None:
    text = render(plan(24, "4bit"))
    assert "plan          cuda:0 (layers 0-31 and the head); experts of layers" in text
    assert "RAM side" in text and "GPU side" in text
    assert "tokens/s at most" in text and "assumed" in text
    assert "ok fits with the experts of" in text and "try           --cpu-experts" in text


def test_too_little_ram_says_so() -> None:
    report = plan(12, "8bit", ram_gib=16)
    assert report.fits is False
    assert report.notes and "system RAM" in report.notes[-1]
    assert "does not fit" in render(report)


def test_a_chosen_count_is_planned_as_given() -> None:
    report = plan(24, "4bit", cpu_experts="16")
    assert report.cpu_expert_layers == list(range(16, 32))


def test_assume_gpu_repeats_for_several_gpus_and_bad_sizes_are_one_line() -> None:
    argv = ["mixchat", "doctor", "--4bit", "--assume-gpu", "24GiB", "--assume-gpu", "24GiB"]
    imported, out = run_python(CLI.format(argv=argv), HEAVY)
    assert "GPU 1" in out and "ok fits split over cuda:0 (layers 0-" in out
    assert "torch" not in imported
    bad = ["mixchat", "doctor", "--assume-gpu", "lots"]
    code = CLI.replace("assert exc.code in (None, 0), exc.code", "print('EXIT', exc.code)")
    _, out = run_python(code.format(argv=bad), HEAVY)
    assert "EXIT 2" in out and "mixchat: error: --assume-gpu: cannot read 'lots'" in out
