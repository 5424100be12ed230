"""Every place the CLI prints model, user, file, path or argv text: nothing is interpreted.

On a terminal, escape sequences (OSC 52 clipboard writes, colours, the window title), C1
controls and bidi overrides are shown as visible escapes; markup is printed as typed (the
CLI never parses rich markup). JSON output stays exact data but writes those characters as
``\\uXXXX`` escapes, so it is safe on a terminal too.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from mixchat.conversation import Message, Role, Status
from mixchat.store import ConversationStore
from tests.e2e.helpers import mixchat_exe
from tests.reliability.helpers import run_on_pty

# OSC 52 (clipboard), OSC 0 (title), a colour, an 8-bit CSI, BEL, DEL, bidi override and
# isolate, and markup, around a word to search for.
HOSTILE = (
    "zebra \x1b]52;c;aGk=\x07 \x1b]0;owned\x1b\\ \x1b[31mred \x9b2J \x7f "
    "\u202eexe.txt \u2066iso\u2069 [bold]markup[/bold] [/INST]"
)
# Bytes that must never reach a terminal from untrusted text.
RAW = [
    b"\x1b]",
    b"\x1b[31m",
    b"\x07",
    "\x9b".encode(),
    b"\x7f",
    "\u202e".encode(),
    "\u2066".encode(),
    "\u2069".encode(),
]
SHOWN = ["\\x1b]52;c;aGk=\\x07", "\\x9b2J", "\\u202eexe.txt", "[bold]markup[/bold]"]


@pytest.fixture
def hostile_conversation() -> str:
    with ConversationStore.open() as store:
        conv = store.create_conversation(
            model="model" + HOSTILE,
            system_prompt="system " + HOSTILE,
            settings={"note": HOSTILE},
            first_message=Message(Role.USER, "question " + HOSTILE),
        )
        store.rename(conv.id, "title " + HOSTILE)
        reply = store.start_reply(conv.id)
        assert reply.id is not None
        store.finish_reply(reply.id, "answer " + HOSTILE, Status.COMPLETE)
    return conv.id


def assert_safe(screen: bytes, *, shown: bool = True) -> None:
    for raw in RAW:
        assert raw not in screen, (raw, screen[:3000])
    if shown:
        text = screen.decode()
        for visible in SHOWN:
            assert visible in text, (visible, text[:3000])


def on_terminal(*args: str, env: dict[str, str] | None = None) -> tuple[int, bytes]:
    return run_on_pty(*args, env=env, timeout=120)


def piped(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [mixchat_exe(), *args],
        capture_output=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    "command", [["list"], ["show", "{id}"], ["search", "zebra"], ["search", "zebra", "-n", "1"]]
)
def test_history_on_a_terminal(hostile_conversation: str, command: list[str]) -> None:
    args = [a.format(id=hostile_conversation) for a in command]
    code, screen = on_terminal(*args)
    assert code == 0, screen
    assert_safe(screen, shown=command != ["list"])  # list cuts titles at 70 characters
    assert b"\\x1b]52;c;aGk=\\x07" in screen


def test_config_on_a_terminal(mixchat_home: Path) -> None:
    env = {"MIXCHAT_SYSTEM_PROMPT": HOSTILE, "MIXCHAT_MODEL": HOSTILE}
    code, screen = on_terminal("config", env=env)
    assert code == 0, screen
    assert_safe(screen)


@pytest.mark.parametrize(
    "command",
    [
        ["show", HOSTILE],  # an id that matches nothing, quoted in the error
        ["rm", HOSTILE],
        ["ask", "--model", "/nonexistent/" + HOSTILE, "hi"],
        ["ask", "--device-map", HOSTILE, "hi"],  # a bad setting, quoted back
        ["import", "/nonexistent/" + HOSTILE + ".json"],
        ["list", HOSTILE],  # click's own usage error quotes the extra argument
        ["ask", "--" + HOSTILE.replace(" ", "_"), "hi"],  # an unknown option
    ],
)
def test_error_lines_on_a_terminal(command: list[str], mixchat_home: Path) -> None:
    code, screen = on_terminal(*command)
    assert code in (1, 2), screen
    assert_safe(screen, shown=False)
    assert b"Traceback" not in screen
    assert b"\\u202e" in screen or b"\\x1b" in screen  # the text is shown, defused


def test_a_bad_setting_from_the_environment(mixchat_home: Path) -> None:
    code, screen = on_terminal("ask", "hi", env={"MIXCHAT_TEMPERATURE": HOSTILE})
    assert code == 2
    assert_safe(screen, shown=False)
    assert b"MIXCHAT_TEMPERATURE" in screen


def test_export_to_a_hostile_path_on_a_terminal(hostile_conversation: str, tmp_path: Path) -> None:
    target = tmp_path / ("out \u202eexe.md")
    code, screen = on_terminal("export", hostile_conversation, "-o", str(target))
    assert code == 0, screen
    assert_safe(screen, shown=False)
    assert b"\\u202eexe.md" in screen


def test_show_prompt_on_a_terminal(tiny_model: Path) -> None:
    code, screen = on_terminal("ask", "--model", str(tiny_model), "--show-prompt", HOSTILE)
    assert code == 0, screen
    assert_safe(screen)


def json_strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in json_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in json_strings(v)]
    return []


@pytest.mark.parametrize(
    "command",
    [
        ["list", "--json"],
        ["show", "{id}", "--json"],
        ["search", "zebra", "--json"],
        ["config", "--json"],
    ],
)
def test_json_output_is_exact_and_inert(hostile_conversation: str, command: list[str]) -> None:
    args = [a.format(id=hostile_conversation) for a in command]
    done = piped(*args, env={"MIXCHAT_SYSTEM_PROMPT": HOSTILE})
    assert done.returncode == 0, done.stderr
    assert_safe(done.stdout, shown=False)
    data = json.loads(done.stdout)
    strings = json_strings(data)
    # Same data as stored: the hostile text comes back exactly (C1, bidi and all).
    assert any(HOSTILE in s for s in strings), strings


def test_show_prompt_json_is_exact_and_inert(tiny_model: Path) -> None:
    done = piped("ask", "--model", str(tiny_model), "--show-prompt", "--json", HOSTILE)
    assert done.returncode == 0, done.stderr
    assert_safe(done.stdout, shown=False)
    assert HOSTILE in json.loads(done.stdout)["text"]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_answer_text_is_defused_on_a_terminal_and_exact_in_a_pipe() -> None:
    from mixchat.commands.ask import _Output

    screen = FakeTerminal()
    out = _Output(screen, enabled=True)
    out.write("answer " + HOSTILE)
    out.end_line()
    assert_safe(screen.getvalue().encode())
    assert screen.getvalue().endswith("[/INST]\n")
    pipe = io.StringIO()
    _Output(pipe, enabled=True).write(HOSTILE)
    assert pipe.getvalue() == HOSTILE  # stdout into a pipe is the model's text, unchanged
