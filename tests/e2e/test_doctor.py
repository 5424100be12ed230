"""``mixchat doctor`` on a machine without a GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_harness import Cli
from tests.e2e.helpers import run

pytestmark = pytest.mark.e2e


@pytest.mark.slow
def test_doctor_without_gpu_reports_cpu_only_and_mixtral_sizes() -> None:
    result = run("doctor")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "CUDA          not available (CPU only)" in out
    assert "no GPU" in out
    assert "46.7B" in out and "128 KiB per token" in out
    assert "~93.4 GB" in out  # bf16 weights of Mixtral-8x7B


def test_doctor_json_estimates_quantized_sizes(tiny_model: Path, cli: Cli) -> None:
    # In process: the smoke test above runs the installed command.
    four = json.loads(cli("doctor", "--4bit", "--json").stdout)
    eight = json.loads(cli("doctor", "--8bit", "--json").stdout)
    assert four["gpus"] == [] and four["fits"] is None
    assert four["bitsandbytes_works"] is True
    assert round(eight["weight_bytes"] / 1e9) == 47
    assert 24 <= four["weight_bytes"] / 1e9 <= 26
    local = json.loads(cli("doctor", "--model", str(tiny_model), "--json").stdout)
    assert local["parameters"] > 1_000_000 and local["kv_bytes_per_token"] == 2 * 2 * 16 * 2 * 2
