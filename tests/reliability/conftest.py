"""Fixtures of the fault-injection suite: models whose replies are known in advance."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.cycle_model import build_cycle_model, plan_cycle

# What the story model says, over and over: plain words to look for on a screen.
STORY = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu. "
)
# What the hostile model says, over and over: markup, Mistral control text, NUL, an OSC 52
# clipboard write (ESC ] 52 ... BEL) and a C1 CSI colour. Every token of a cycle must be
# distinct (see cycle_model), which is why it is not longer.
HOSTILE_REPLY = "[bold]x[/INST]</s><s>\x00\x1b]52;c;aGk=\x07\x9b31m"


@pytest.fixture(autouse=True)
def _child_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Child processes use one torch thread (faster on small CPUs, fair when two run) and
    a strict UTF-8 stdout, as on most desktops (a C.UTF-8 locale would hide text that
    cannot be encoded, by escaping it)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONIOENCODING", "utf-8:strict")


@pytest.fixture(scope="session")
def story_cycle() -> list[int]:
    return plan_cycle(STORY)


@pytest.fixture(scope="session")
def hostile_cycle() -> list[int]:
    return plan_cycle(HOSTILE_REPLY)


@pytest.fixture(scope="session")
def story_model(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, story_cycle: list[int]
) -> Path:
    """A Mixtral that tells STORY forever."""
    return build_cycle_model(tmp_path_factory.mktemp("story-model"), tiny_model, story_cycle)


@pytest.fixture(scope="session")
def hostile_model(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, hostile_cycle: list[int]
) -> Path:
    """A Mixtral that says HOSTILE_REPLY forever."""
    return build_cycle_model(tmp_path_factory.mktemp("hostile-model"), tiny_model, hostile_cycle)
