"""End to end: the history commands of the installed CLI over a real store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mixchat.conversation import Message, Role, Status
from mixchat.store import ConversationStore
from tests.e2e.helpers import run, show_json

pytestmark = pytest.mark.e2e

HOSTILE = (
    "[bold]x[/bold] [/INST] </s> <s> [link=file:///etc/passwd]y[/link] \x1b]0;pwned\x07 \x1b[31m"
)


@pytest.fixture
def saved() -> str:
    with ConversationStore.open() as store:
        conv = store.create_conversation(model="tiny", system_prompt="Be kind.", settings={})
        store.append_message(conv.id, Message(Role.USER, "How do zebras sleep? " + HOSTILE))
        reply = store.start_reply(conv.id)
        assert reply.id is not None
        store.finish_reply(reply.id, "Standing up, mostly. 🦓 中文", Status.INTERRUPTED)
        return conv.id


def test_list_show_search(saved: str) -> None:
    listed = json.loads(run("list", "--json").stdout)
    assert [row["id"] for row in listed] == [saved]
    assert listed[0]["message_count"] == 2
    table = run("list").stdout
    assert saved[:8] in table and "How do zebras sleep?" in table
    shown = run("show", saved[:5])
    assert shown.returncode == 0
    assert "Standing up, mostly." in shown.stdout and "interrupted" in shown.stdout
    data = show_json(saved)
    assert data["system_prompt"] == "Be kind."
    assert [m["status"] for m in data["messages"]] == ["complete", "interrupted"]
    hits = json.loads(run("search", "zebras", "--json").stdout)
    assert [h["conversation_id"] for h in hits] == [saved]
    assert run("search", 'AND OR " * (').returncode == 0  # query syntax is never FTS syntax


def test_export_import_round_trip_is_exact(saved: str, tmp_path: Path) -> None:
    out = tmp_path / "conv.json"
    result = run("export", saved, "--format", "json", "-o", str(out))
    assert result.returncode == 0, result.stderr
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert exported["messages"][0] == {"role": "system", "content": "Be kind."}
    imported = run("import", str(out))
    assert imported.returncode == 0, imported.stderr
    new_id = imported.stdout.strip()
    original, copy = show_json(saved), show_json(new_id)
    strip = ("id",)
    assert [{k: v for k, v in m.items() if k not in strip} for m in copy["messages"]] == [
        {k: v for k, v in m.items() if k not in strip} for m in original["messages"]
    ]
    assert copy["system_prompt"] == original["system_prompt"]
    assert copy["title"] == original["title"]
    md = run("export", saved, "--format", "md").stdout
    assert "## Assistant (interrupted)" in md and "Standing up" in md


def test_rename_and_rm(saved: str, mixchat_home: Path) -> None:
    assert run("rename", saved[:6], "Zebra facts").returncode == 0
    assert show_json(saved)["title"] == "Zebra facts"
    removed = run("rm", saved[:6])
    assert removed.returncode == 0, removed.stderr
    assert json.loads(run("list", "--json").stdout) == []
    assert json.loads(run("search", "zebras", "--json").stdout) == []
    db = mixchat_home / "data" / "conversations.db"
    for file in db.parent.iterdir():
        assert b"zebras" not in file.read_bytes(), file
    assert run("show", saved).returncode == 2


def test_import_rejects_bad_files_and_keeps_data(saved: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    for content in ("not json", '{"messages": 3}', '[{"role": "wizard", "content": "x"}]'):
        bad.write_text(content)
        result = run("import", str(bad))
        assert result.returncode == 2, result.stderr
        assert str(bad) in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert [row["id"] for row in json.loads(run("list", "--json").stdout)] == [saved]


def test_terminal_output_neutralises_escapes(saved: str) -> None:
    """On a terminal, `show` prints escape sequences as visible text."""
    import pty

    code = (
        f"import sys; sys.argv=['mixchat','show',{saved!r}]\nfrom mixchat.cli import main\nmain()\n"
    )
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=follower, stderr=follower)
    import os

    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    proc.wait(timeout=30)
    os.close(leader)
    assert b"\x1b]0;pwned" not in output and b"\x1b[31m" not in output
    assert b"\\x1b]0;pwned\\x07" in output
    assert b"[bold]x[/bold] [/INST] </s>" in output


def test_python_dash_m_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mixchat", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "ask" in result.stdout
