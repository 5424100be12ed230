"""Shell completion: enabled, completes conversation ids, creates nothing, emits no shell code."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mixchat import cli, paths
from mixchat.store import ConversationStore


def _complete(shell: str, words: str) -> str:
    env = {"_MIXCHAT_COMPLETE": f"complete_{shell}", "COMP_WORDS": words, "COMP_CWORD": "2"}
    env["_TYPER_COMPLETE_ARGS"] = words
    env["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    result = CliRunner().invoke(cli.app, [], env=env, prog_name="mixchat")
    return result.output


def test_install_and_show_completion_are_offered() -> None:
    result = CliRunner().invoke(cli.app, ["--help"])
    assert "--install-completion" in result.output and "--show-completion" in result.output


def test_ids_complete_without_creating_a_database(mixchat_home: Path) -> None:
    assert _complete("bash", "mixchat show ").strip() == ""
    assert not paths.database_file().exists() and not mixchat_home.exists()


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_ids_complete_and_titles_cannot_carry_shell_code(shell: str) -> None:
    hostile = "x\"))' ; touch /tmp/pwned ; '`id`$(id)\x1b]0;t\x07:"
    with ConversationStore.open() as store:
        conv = store.create_conversation(model="m", system_prompt=None, settings={}, title=hostile)
        other = store.create_conversation(model="m", system_prompt=None, settings={}, title="b")
    out = _complete(shell, f"mixchat show {conv.id[:6]}")
    assert conv.id in out
    assert other.id not in out or other.id.startswith(conv.id[:6])
    # The title arrives as plain words: no quote, backquote, $, ;, escape or control.
    if shell != "bash":  # bash completion shows ids alone
        assert "x touch tmp pwned id id 0 t" in out
    for bad in ("`", "$", "\x1b", "\x07", ";", "/tmp/pwned", "(id", "\\"):
        assert bad not in out
