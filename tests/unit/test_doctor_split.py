"""``mixchat doctor`` on several GPUs: whether a quantized Mixtral fits as the loader would
split it, and where its layers would go (made-up GPUs; the plan is pure arithmetic)."""

from __future__ import annotations

from mixchat.commands.doctor import render
from mixchat.engine.local.hardware import Gpu
from mixchat.engine.local.report import Report, quantized_split
from mixchat.engine.local.sizes import MIXTRAL_8X7B as MIXTRAL_CONFIG

GB = 10**9


def gpus(*free_gb: float) -> list[Gpu]:
    return [
        Gpu(i, "RTX 4090", int(24 * GB), int(free * GB), "8.9") for i, free in enumerate(free_gb)
    ]


def test_two_24gb_cards_hold_nf4_mixtral_split() -> None:
    fits, placement = quantized_split(MIXTRAL_CONFIG, "4bit", gpus(23.5, 23.5))
    assert fits
    assert placement is not None
    assert placement.startswith("cuda:0 (layers 0-") and placement.endswith("-31 and the head)")
    report = Report("3.11", "2.13", "12.8", gpus=gpus(23.5, 23.5), fits=fits, placement=placement)
    assert f"ok fits split over {placement}" in render(report)


def test_one_card_enough_means_no_split() -> None:
    assert quantized_split(MIXTRAL_CONFIG, "4bit", gpus(79, 79)) == (True, None)


def test_too_little_memory_does_not_fit() -> None:
    assert quantized_split(MIXTRAL_CONFIG, "4bit", gpus(12, 12)) == (False, None)
    assert quantized_split(MIXTRAL_CONFIG, "8bit", gpus(23.5, 23.5)) == (False, None)
    fits, placement = quantized_split(MIXTRAL_CONFIG, "8bit", gpus(23.5, 23.5, 23.5))
    assert fits and placement is not None and "cuda:2" in placement
