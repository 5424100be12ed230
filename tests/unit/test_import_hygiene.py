"""Light modules stay light: no UI or ML libraries imported where they are not needed.

Each check runs in a fresh interpreter, so modules imported by other tests do not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

LIGHT_MODULES = [
    "mixchat.conversation",
    "mixchat.prompt",
    "mixchat.store",
    "mixchat.config",
    "mixchat.paths",
    "mixchat.transcript",
    "mixchat.recorder",
    "mixchat.turn",
    "mixchat.engine.base",
    "mixchat.engine.transformers",
    "mixchat.engine.tokenizer",
]
UI = ("textual", "rich", "typer")
HEAVY = ("torch", "transformers", "textual", "rich", "typer")

REPORT = """
import json, sys
print("@@" + json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(WATCH))))
"""


def run_python(code: str, watch: tuple[str, ...]) -> tuple[list[str], str]:
    """Run ``code`` in a fresh interpreter.

    Returns the watched top-level packages it imported, and its stdout plus stderr.
    """
    script = textwrap.dedent(code) + REPORT.replace("WATCH", repr(watch))
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0][2:]), proc.stdout + proc.stderr


def test_the_watch_works() -> None:
    # Guard against a vacuous pass: importing the UI library must be detected.
    imported, _ = run_python("import typer", HEAVY)
    assert "typer" in imported


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_module_imports_no_ui_library(module: str) -> None:
    imported, _ = run_python(f"import {module}", UI)
    assert imported == [], f"importing {module} pulled in {imported}"


def test_light_modules_together_import_no_ui_or_ml_library() -> None:
    imports = "\n".join(f"import {m}" for m in LIGHT_MODULES)
    imported, _ = run_python(imports, HEAVY)
    assert imported == []


CLI = """
import sys
sys.argv = {argv!r}
from mixchat.cli import main
try:
    main()
except SystemExit as exc:
    assert exc.code in (None, 0), exc.code
"""


def test_importing_cli_is_light() -> None:
    imported, _ = run_python("import mixchat.cli", HEAVY)
    assert imported == ["typer"]


def test_help_imports_no_torch_transformers_textual_or_rich() -> None:
    imported, out = run_python(CLI.format(argv=["mixchat", "--help"]), HEAVY)
    assert "list" in out and "ask" in out  # the help really printed
    # typer itself is expected; with rich_markup_mode=None it does not pull in rich.
    assert imported == ["typer"]


def test_list_imports_no_torch_transformers_textual_or_rich(mixchat_home: Path) -> None:
    # MIXCHAT_HOME (set by conftest) is inherited, so this lists the test's empty store.
    imported, out = run_python(CLI.format(argv=["mixchat", "list"]), HEAVY)
    assert "no saved conversations" in out
    assert imported == ["typer"]
    assert not mixchat_home.exists()  # a read-only command creates nothing


def test_list_json_with_a_conversation_is_light(mixchat_home: Path) -> None:
    from mixchat.conversation import Message, Role
    from mixchat.store import ConversationStore

    with ConversationStore.open() as store:
        conv = store.create_conversation(model="m", system_prompt=None, settings={})
        store.append_message(conv.id, Message(Role.USER, "a saved question"))
    imported, out = run_python(CLI.format(argv=["mixchat", "list", "--json"]), HEAVY)
    assert conv.id in out
    assert imported == ["typer"]
