"""`mixchat ask` and the app run a turn through the same owner: a reply cut by the token
limit is marked the same way in both, and both continue it as the same message."""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from mixchat import cli
from mixchat.conversation import Role
from mixchat.engine import factory
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from mixchat.tui.widgets.chat_view import AssistantBlock
from tests.tui.conftest import AppFactory
from tests.tui.helpers import ready, type_and_send, wait_reply
from tests.tui.test_app import SIZE


def _ask(monkeypatch: pytest.MonkeyPatch, engine: ScriptedEngine, *args: str) -> Any:
    monkeypatch.setattr(factory, "make_engine", lambda settings: engine)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    return CliRunner().invoke(cli.app, ["ask", *args])


def _saved(store: ConversationStore, title: str) -> list[tuple[Role, str, str | None]]:
    row = next(r for r in store.list_conversations() if r.title == title)
    return [(m.role, m.content, m.finish_reason) for m in store.get_conversation(row.id).messages]


async def test_a_cut_reply_is_marked_and_continued_alike(
    monkeypatch: pytest.MonkeyPatch,
    make_app: AppFactory,
    engine: ScriptedEngine,
    store: ConversationStore,
) -> None:
    cli_engine = ScriptedEngine()
    cli_engine.queue("Once upon ", "a time", finish="length")
    result = _ask(monkeypatch, cli_engine, "--json", "from ask")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ending"] == "length"
    cli_engine.queue(", the end.")
    result = _ask(monkeypatch, cli_engine, "-c", "--continue-reply")
    assert result.exit_code == 0, result.output
    assert result.stdout == ", the end."  # only the continuation is printed

    engine.queue("Once upon ", "a time", finish="length")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "from the app")
        await wait_reply(pilot)
        assert screen.status.reply_state == "cut at the token limit"
        cut_note = "cut at the token limit: Ctrl+O continues it"
        assert cut_note in str(screen.query(AssistantBlock).last().query_one(".status").render())
        engine.queue(", the end.")
        await pilot.press("ctrl+o")
        await wait_reply(pilot)
        block = screen.query(AssistantBlock).last()
        assert block.source == "Once upon a time, the end."
        assert len(screen.query(AssistantBlock)) == 1
        assert screen.status.reply_state == ""

    expected = [(Role.ASSISTANT, "Once upon a time, the end.", "stop")]
    assert _saved(store, "from ask")[1:] == _saved(store, "from the app")[1:] == expected


async def test_continue_is_refused_when_there_is_nothing_to_continue(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    engine.queue("A whole answer.")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+o")  # nothing open
        await type_and_send(pilot, "hi")
        await wait_reply(pilot)
        requests = len(engine.requests)
        await pilot.press("ctrl+o")  # complete: nothing to continue
        await wait_reply(pilot)
        assert len(engine.requests) == requests
        assert len(screen.query(AssistantBlock)) == 1
    conv = store.get_conversation(store.list_conversations()[0].id)
    assert [m.content for m in conv.messages] == ["hi", "A whole answer."]


def test_continue_reply_flags_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    for args, needle in [
        (("--continue-reply",), "needs -c"),
        (("-c", "--continue-reply", "and a question"), "give no question"),
    ]:
        result = _ask(monkeypatch, ScriptedEngine(), *args)
        assert result.exit_code == 2 and needle in result.output
