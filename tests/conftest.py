"""Shared fixtures: an isolated MIXCHAT_HOME for every test, and the tiny Mixtral."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

# CI runs every example, the same ones every time (a failure there is reproducible); local
# runs try fewer, new ones each time (the fast loop). HYPOTHESIS_PROFILE=ci locally runs CI's.
# No timing checks in either (a shared machine is slow at times; speed is for benchmarks/).
_UNTIMED = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
hypothesis_settings.register_profile("ci", derandomize=True, max_examples=100, **_UNTIMED)
hypothesis_settings.register_profile("dev", max_examples=15, **_UNTIMED)
hypothesis_settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

pytest_plugins = ["tests.cli_harness"]

TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the slow ones for the fast lane (`pytest -m "not slow"`): besides those marked
    by hand, every test of the real model and every real-process reliability test."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "real_model" in fixtures or (TESTS / "reliability") in item.path.parents:
            item.add_marker(pytest.mark.slow)


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def mixchat_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every test at its own data, config and cache directories."""
    home = tmp_path / "mixchat-home"
    monkeypatch.setenv("MIXCHAT_HOME", str(home))
    for name in list(os.environ):
        if name.startswith("MIXCHAT_") and name != "MIXCHAT_HOME":
            monkeypatch.delenv(name)
    return home


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight MixtralForCausalLM with the real v1 tokenizer, built once."""
    from mixchat.testing.models import build_tiny_mixtral

    return build_tiny_mixtral(tmp_path_factory.mktemp("tiny-mixtral"))


@pytest.fixture(scope="session")
def real_model(request: pytest.FixtureRequest) -> Path:
    """SmolLM2-135M-Instruct as a plain safetensors Llama with its ChatML template: a real
    instruct model that writes real Markdown. Built once and kept in the pytest cache."""
    from mixchat.testing.models import build_smollm2, smollm2_gguf

    cache = Path(request.config.cache.mkdir("mixchat-smollm2-v1"))
    model_dir = cache / "model"
    if not model_dir.is_dir():
        # Built aside and renamed into place: two test runs sharing the cache never see
        # (or delete) each other's half-built model.
        building = Path(tempfile.mkdtemp(prefix="model.", dir=cache))
        try:
            build_smollm2(building / "model", smollm2_gguf(cache / "download"))
            try:
                (building / "model").rename(model_dir)
            except OSError:  # another run finished first: use its copy
                if not model_dir.is_dir():
                    raise
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return model_dir
