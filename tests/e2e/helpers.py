"""Run the installed ``mixchat`` command in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def mixchat_exe() -> str:
    """The console script installed beside this Python (falls back to PATH)."""
    beside = Path(sys.executable).parent / "mixchat"
    found = str(beside) if beside.exists() else shutil.which("mixchat")
    assert found, "the mixchat command is not installed (pip install -e .)"
    return found


def run(
    *args: str,
    input: str | bytes | None = None,
    timeout: float = 180,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``mixchat args...`` with the test's environment; text mode."""
    data = input.decode("utf-8", "surrogateescape") if isinstance(input, bytes) else input
    return subprocess.run(
        [mixchat_exe(), *args],
        input=data if data is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def show_json(conversation_id: str, runner: Callable[..., Any] = run) -> dict[str, Any]:
    """``mixchat show ID --json`` parsed (``runner``: a subprocess, or the in-process cli)."""
    result = runner("show", conversation_id, "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def last_id(runner: Callable[..., Any] = run) -> str:
    """The id of the most recently updated conversation."""
    result = runner("list", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows, "no conversations saved"
    return str(rows[0]["id"])
