"""Branches in the app: a message with siblings shows "2/3", Alt+Left/Right step between
them (the store then shows that branch), and the next question goes under what is shown."""

from __future__ import annotations

import threading

from textual.widgets import Label

from mixchat.conversation import Message, Role
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from mixchat.tui.widgets.chat_view import AssistantBlock, UserBlock
from tests.tui.conftest import AppFactory
from tests.tui.helpers import only_conversation, ready, settle, type_and_send, wait_reply

SIZE = (110, 36)


def branch_labels(screen) -> list[str]:  # type: ignore[no-untyped-def]
    """The "n/m" label of each drawn message, in order ("" where there is none)."""
    out = []
    for block in screen.query(".message"):
        if isinstance(block, AssistantBlock):
            found = block.query(".branch")
            out.append(str(found.first(Label).render()) if found else "")
        elif isinstance(block, UserBlock):
            text = str(block.render())
            out.append(text.split("\n")[-1] if "/" in text.split("\n")[-1] else "")
    return out


async def test_regenerated_answers_show_their_place_and_keys_step_between_them(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    for answer in ("answer one", "answer two", "answer three", "under one"):
        engine.queue(answer)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "Question")
        await wait_reply(pilot)
        assert branch_labels(screen) == ["", ""]
        for _ in range(2):
            await pilot.press("ctrl+r")
            await wait_reply(pilot)
        assert [b.source for b in screen.query(AssistantBlock)] == ["answer three"]
        assert branch_labels(screen) == ["", "3/3 · Alt+Left/Alt+Right"]
        await pilot.press("alt+left")
        await settle(pilot)
        assert [b.source for b in screen.query(AssistantBlock)] == ["answer two"]
        assert branch_labels(screen) == ["", "2/3 · Alt+Left/Alt+Right"]
        await pilot.press("alt+left", "alt+left")  # the first is the end: no further
        await settle(pilot)
        assert [b.source for b in screen.query(AssistantBlock)] == ["answer one"]
        assert branch_labels(screen) == ["", "1/3 · Alt+Left/Alt+Right"]
        # the store shows what the app shows: `mixchat ask -c` goes on from here
        conv = only_conversation(store)
        assert [m.content for m in conv.messages] == ["Question", "answer one"]
        # the next question goes under the answer shown
        await type_and_send(pilot, "More?")
        await wait_reply(pilot)
        assert [m.content for m in engine.requests[-1][0]] == ["Question", "answer one", "More?"]
        assert [m.content for m in only_conversation(store).messages] == [
            "Question",
            "answer one",
            "More?",
            "under one",
        ]
        assert branch_labels(screen) == ["", "1/3 · Alt+Left/Alt+Right", "", ""]
        # stepping right from the newest branch point: answer one's siblings
        await pilot.press("alt+right")
        await settle(pilot)
        assert [b.source for b in screen.query(AssistantBlock)] == ["answer two"]


async def test_an_edited_question_shows_its_versions(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    conv = store.create_conversation(model="m", system_prompt=None, settings={})
    store.append_message(conv.id, Message(Role.USER, "Waht is 2+2"))
    store.append_message(conv.id, Message(Role.ASSISTANT, "old answer"))
    engine.queue("4")
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+l")
        prompt = screen.prompt
        prompt.text = "What is 2+2?"
        await pilot.press("enter")
        await wait_reply(pilot)
        assert [b.source for b in screen.query(UserBlock)] == ["What is 2+2?"]
        assert branch_labels(screen) == ["2/2 · Alt+Left/Alt+Right", ""]
        await pilot.press("alt+left")
        await settle(pilot)
        assert [b.source for b in screen.query(UserBlock)] == ["Waht is 2+2"]
        assert [b.source for b in screen.query(AssistantBlock)] == ["old answer"]
        assert branch_labels(screen) == ["1/2 · Alt+Left/Alt+Right", ""]


async def test_stepping_without_siblings_changes_nothing(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    engine.queue("only answer")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("alt+left")  # nothing open: nothing happens
        await type_and_send(pilot, "Question")
        await wait_reply(pilot)
        before = store.data_version()
        await pilot.press("alt+left", "alt+right")
        await settle(pilot)
        assert [b.source for b in screen.query(AssistantBlock)] == ["only answer"]
        assert branch_labels(screen) == ["", ""]
        assert store.data_version() == before
        assert screen.prompt.text == ""  # the keys typed nothing


async def test_versions_made_elsewhere_are_marked(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    """A regenerate by `mixchat ask` (another process) shows up with its "2/2"; the hint
    names the keys in effect ([keymap] older_version = "f7" would say F7)."""
    from mixchat.config import Settings as S
    from mixchat.config import SettingsSources
    from mixchat.turn import Turn

    engine.queue("first answer")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "Question")
        await wait_reply(pilot)
        # Elsewhere (another connection, as `mixchat ask` would be): answered again.
        with ConversationStore.open() as elsewhere:
            conv = only_conversation(elsewhere)
            other = ScriptedEngine()
            other.queue("second answer")
            turn = Turn(elsewhere, SettingsSources(S(model="m")), conv)
            turn.again(conv.messages[0])
            turn.start()
            turn.run(other, threading.Event(), lambda _e: None)
        await screen.store_sync.check()
        await settle(pilot)
        assert [b.source for b in screen.query(AssistantBlock)] == ["second answer"]
        assert branch_labels(screen) == ["", "2/2 · Alt+Left/Alt+Right"]
