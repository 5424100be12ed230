"""Importing the remote engine stays light: openai and its HTTP stack load on first use."""

from __future__ import annotations

import json
import subprocess
import sys

WATCH = ("openai", "httpx", "httpx2", "torch", "transformers", "textual", "rich", "typer")


def test_import_is_light() -> None:
    code = (
        "import json, sys\n"
        "import mixchat.engine.remote\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({WATCH!r}))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
