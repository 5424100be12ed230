"""``mixchat ask --extract [N]``: only a code block on stdout, the whole reply saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixchat.commands.flags import optional_values
from mixchat.engine import factory
from mixchat.engine.scripted import ScriptedEngine
from tests.cli_harness import Cli

REPLY = [
    "Here is one:\n\n```python\nprint(1)\n```\n\nand ",
    "another:\n\n~~~sh\necho two\n~~~\n\nand a third\n````md\n```\nthree\n```\n````\nDone.",
]


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture
def ask(engine: ScriptedEngine, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setattr(factory, "make_engine", lambda settings: engine)
    return Cli()


def saved_reply(runner: Cli) -> str:
    rows = json.loads(runner("list", "--json").stdout)
    conv = json.loads(runner("show", rows[0]["id"], "--json").stdout)
    return str(conv["messages"][-1]["content"])


@pytest.mark.parametrize(
    ("args", "printed"),
    [
        (["--extract"], "```\nthree\n```\n"),
        (["--extract", "1"], "print(1)\n"),
        (["--extract=2"], "echo two\n"),
        (["--extract", "-1"], "```\nthree\n```\n"),
        (["--extract", "-3"], "print(1)\n"),
    ],
)
def test_only_the_chosen_block_reaches_stdout_and_the_reply_is_saved(
    ask: Cli, engine: ScriptedEngine, args: list[str], printed: str
) -> None:
    engine.queue(*REPLY)
    result = ask("ask", *args, "show me code")
    assert result.returncode == 0, result.stderr
    assert result.stdout == printed
    assert result.stderr == ""
    assert saved_reply(ask) == "".join(REPLY)
    assert engine.requests[-1][0][-1].content == "show me code"


def test_a_prompt_after_a_bare_extract_stays_the_prompt(ask: Cli, engine: ScriptedEngine) -> None:
    engine.queue(*REPLY)
    result = ask("ask", "--extract", "write a script", "--max-tokens", "50")
    assert result.returncode == 0, result.stderr
    assert engine.requests[-1][0][-1].content == "write a script"
    assert engine.requests[-1][2].max_new_tokens == 50
    assert result.stdout == "```\nthree\n```\n"


def test_optional_values_rewrites_only_numbers_and_stops_at_double_dash() -> None:
    table = {"--extract": "-1"}
    assert optional_values(["--extract"], table) == ["--extract=-1"]
    assert optional_values(["--extract", "3", "q"], table) == ["--extract=3", "q"]
    assert optional_values(["--extract", "-2"], table) == ["--extract=-2"]
    assert optional_values(["--extract", "q"], table) == ["--extract=-1", "q"]
    assert optional_values(["--extract=4", "q"], table) == ["--extract=4", "q"]
    assert optional_values(["--", "--extract"], table) == ["--", "--extract"]


@pytest.mark.parametrize(
    ("reply", "n", "says"),
    [
        (["No code here, sorry."], "1", "--extract 1: the reply has no code block"),
        (["```\na\n```\n```\nb\n```"], "3", "--extract 3: the reply has 2 code blocks, so no 3rd"),
        (["```\na\n```"], "-2", "has 1 code block, so no 2nd from the end"),
    ],
)
def test_no_such_block_is_one_line_exit_1_and_the_reply_is_kept(
    ask: Cli, engine: ScriptedEngine, reply: list[str], n: str, says: str
) -> None:
    engine.queue(*reply)
    result = ask("ask", "--extract", n, "code please")
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("mixchat: error: ") and says in line
    assert "the whole reply is saved (mixchat show " in line
    assert saved_reply(ask) == "".join(reply)


def test_a_block_cut_off_is_printed_with_a_warning(ask: Cli, engine: ScriptedEngine) -> None:
    engine.queue("Sure:\n```python\ndef f():\n    return")
    result = ask("ask", "--extract", "q")
    assert result.returncode == 0
    assert result.stdout == "def f():\n    return\n"
    assert "no closing fence" in result.stderr


def test_nothing_reaches_stdout_when_the_reply_fails_after_a_block(
    ask: Cli, engine: ScriptedEngine
) -> None:
    # The text streamed before the failure holds a whole block: in --extract mode none of
    # it was written while it streamed.
    engine.queue("```\nx\n```\n", "more", fail_with="the server went away")
    result = ask("ask", "--extract", "q")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "the server went away" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--extract", "0", "q"],
        ["--extract=abc", "q"],
        ["--extract=", "q"],
        ["--extract=١", "q"],  # not ASCII digits
        ["--extract", "--json", "q"],
        ["--extract", "--show-prompt", "q"],
    ],
)
def test_bad_extract_use_is_exit_2_before_anything_is_asked(
    ask: Cli, engine: ScriptedEngine, args: list[str]
) -> None:
    result = ask("ask", *args)
    assert result.returncode == 2, result.stderr
    assert "--extract" in result.stderr
    assert engine.requests == []
    assert json.loads(ask("list", "--json").stdout) == []


def test_no_save_still_extracts(ask: Cli, engine: ScriptedEngine) -> None:
    engine.queue("```\nonly\n```")
    result = ask("ask", "--no-save", "--extract", "q")
    assert (result.returncode, result.stdout) == (0, "only\n")
    engine.queue("none")
    result = ask("ask", "--no-save", "--extract", "q")
    assert result.returncode == 1 and "saved" not in result.stderr


@pytest.mark.e2e
def test_the_real_model_path_prints_nothing_but_keeps_the_reply(cli: Cli, tiny_model: Path) -> None:
    # A random-weight model writes no code block: one line, exit 1, the reply saved.
    args = ("ask", "--model", str(tiny_model), "--max-tokens", "6", "--temperature", "0")
    result = cli(*args, "--extract", "write code")
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert "--extract: the reply has no code block" in result.stderr
    reply = saved_reply(cli)
    plain = cli(*args, "write code")
    assert plain.stdout == reply  # the same greedy reply, streamed in full without --extract
