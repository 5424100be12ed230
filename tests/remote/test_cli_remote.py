"""``mixchat ask --endpoint`` end to end: the installed command against ``transformers serve``."""

from __future__ import annotations

import json

import pytest

from tests.e2e.helpers import run
from tests.remote.conftest import Served, free_port

pytestmark = pytest.mark.e2e


def test_ask_streams_from_the_server_and_saves(served: Served) -> None:
    args = ("ask", "--endpoint", served.url, "--model", served.model, "--max-tokens", "6")
    result = run(*args, "--temperature", "0", "--json", "Hello")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["reply"] and payload["status"] == "complete"
    assert payload["model"]["device"] == served.url and payload["model"]["dtype"] == "remote"
    assert payload["usage"]["prompt_tokens"] > 0


def test_ask_with_no_server_fails_in_one_line_and_keeps_nothing() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    no_retries = {"MIXCHAT_SERVER_RETRIES": "0"}
    result = run("ask", "--endpoint", url, "--model", "m", "Hello", env=no_retries)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and f"cannot reach {url}" in result.stderr
    assert json.loads(run("list", "--json").stdout) == []


def test_a_bad_endpoint_value_is_a_usage_error() -> None:
    result = run("ask", "--endpoint", "gpu-box:8000", "Hello")
    assert result.returncode != 0 and "endpoint" in result.stderr
    assert "Traceback" not in result.stderr
