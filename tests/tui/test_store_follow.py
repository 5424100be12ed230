"""The app follows the database: turns, conversations, renames and deletes made by another
process (here: a second store connection) show up without searching or reopening."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from textual.widgets import OptionList

from mixchat.conversation import Message, Role, Status
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from mixchat.tui.screens import chat_sync
from mixchat.tui.widgets.chat_view import AssistantBlock, UserBlock
from mixchat.tui.widgets.prompt_input import PromptInput
from tests.tui.conftest import AppFactory
from tests.tui.helpers import ready, settle, type_and_send, until

SIZE = (110, 36)


@pytest.fixture(autouse=True)
def no_poll_between_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The poll does not tick by itself here (a test that wants it sets it): these tests
    call ``store_sync.check()`` or act at chosen moments, and a tick on a slow machine
    between a write elsewhere and the next step would change what they test."""
    monkeypatch.setattr(chat_sync, "STORE_POLL_S", 3600)


@pytest.fixture
def other(store: ConversationStore) -> Iterator[ConversationStore]:
    """Another process's connection to the same database."""
    with ConversationStore.open(store.path) as connection:
        yield connection


def ask_elsewhere(other: ConversationStore, conv_id: str, question: str, answer: str) -> None:
    """What `mixchat ask -c` does to a conversation."""
    other.append_message(conv_id, Message(Role.USER, question))
    reply = other.start_reply(conv_id)
    other.checkpoint_reply(reply.id, answer[:3])  # type: ignore[arg-type]
    other.finish_reply(reply.id, answer, Status.COMPLETE)  # type: ignore[arg-type]


async def answered_then_added_elsewhere(pilot, other: ConversationStore):  # type: ignore[no-untyped-def]
    """The app answers "first"; then `ask -c` adds "hidden?" and its answer elsewhere."""
    screen = await ready(pilot)
    await type_and_send(pilot, "first")
    await settle(pilot)
    ask_elsewhere(other, screen.conversation.id, "hidden?", "not any more")
    return screen


def shown(screen) -> list[str]:  # type: ignore[no-untyped-def]
    return [b.source for b in screen.query(".message")]


def listed(screen) -> list[str | None]:  # type: ignore[no-untyped-def]
    options = screen.query_one(OptionList)
    return [options.get_option_at_index(i).id for i in range(options.option_count)]


async def test_a_turn_added_elsewhere_is_shown(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore, other: ConversationStore
) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "first")
        await settle(pilot)
        conv_id = screen.conversation.id  # type: ignore[union-attr]
        first_block = screen.query(UserBlock).first()
        # `ask -c` saves its question, then streams its answer: the view follows each step
        other.append_message(conv_id, Message(Role.USER, "from ask -c"))
        await screen.store_sync.check()
        assert shown(screen) == ["first", "echo: first", "from ask -c"]
        assert screen.status.state == "unanswered: Ctrl+R answers"
        reply = other.start_reply(conv_id)
        other.checkpoint_reply(reply.id, "its")  # type: ignore[arg-type]
        await screen.store_sync.check()
        assert shown(screen) == ["first", "echo: first", "from ask -c", "its"]
        assert screen.status.state == "ready"  # answered (still streaming) elsewhere
        other.finish_reply(reply.id, "its answer", Status.COMPLETE)  # type: ignore[arg-type]
        await screen.store_sync.check()
        await pilot.pause()
        assert shown(screen) == ["first", "echo: first", "from ask -c", "its answer"]
        assert screen.query(UserBlock).first() is first_block  # not drawn again
        await type_and_send(pilot, "next")
        await settle(pilot)
        assert [m.content for m in engine.requests[-1][0]] == shown(screen)[:-1]


async def test_the_list_follows_new_renamed_and_deleted_conversations(
    make_app: AppFactory, store: ConversationStore, other: ConversationStore
) -> None:
    kept = store.create_conversation(
        model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "kept")
    )
    app = make_app(resume_id=kept.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        made = other.create_conversation(
            model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "new")
        )
        await screen.store_sync.check()
        assert listed(screen) == [made.id, kept.id]
        other.rename(kept.id, "Renamed elsewhere")
        await screen.store_sync.check()
        options = screen.query_one(OptionList)
        label = str(options.get_option(kept.id).prompt)
        assert label == "Renamed elsewhere"
        assert screen.conversation is not None and screen.conversation.title == label
        other.delete(made.id)
        await screen.store_sync.check()
        assert listed(screen) == [kept.id]


async def test_the_open_conversation_deleted_elsewhere(
    make_app: AppFactory, store: ConversationStore, other: ConversationStore
) -> None:
    conv = store.create_conversation(
        model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "doomed")
    )
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        prompt = screen.query_one(PromptInput)
        prompt.text = "a draft"
        other.delete(conv.id)
        await screen.store_sync.check()
        await pilot.pause()
        assert screen.conversation is None and shown(screen) == []
        assert any("deleted elsewhere" in n.message for n in app._notifications)
        assert prompt.text == "a draft"
        assert listed(screen) == []


async def test_a_streaming_reply_is_not_disturbed(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore, other: ConversationStore
) -> None:
    gate = threading.Event()
    engine.queue("streamed ", "to the end", gate=gate, gate_from=1)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        try:
            await type_and_send(pilot, "long question")
            await until(pilot, lambda: screen.streaming_text == "streamed ", "the first piece")
            assert screen.generating
            block = screen.query(AssistantBlock).last()
            ask_elsewhere(other, screen.conversation.id, "meanwhile", "elsewhere")  # type: ignore[union-attr]
            await screen.store_sync.check()  # while the reply streams: the view waits
            assert shown(screen) == ["long question", "streamed "]
        finally:
            gate.set()
        await settle(pilot)
        assert screen.query(AssistantBlock).first() is block  # the streamed block stays
        assert shown(screen) == ["long question", "streamed to the end", "meanwhile", "elsewhere"]
        saved = store.get_conversation(screen.conversation.id)  # type: ignore[union-attr]
        assert [m.content for m in saved.messages] == shown(screen)


async def test_an_edit_is_cancelled_when_the_conversation_changes_under_it(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore, other: ConversationStore
) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "question")
        await settle(pilot)
        await pilot.press("ctrl+l")
        prompt = screen.query_one(PromptInput)
        prompt.text = "question, edited"
        ask_elsewhere(other, screen.conversation.id, "newer question", "newer answer")  # type: ignore[union-attr]
        await pilot.press("enter")  # the send looks at the store first
        await settle(pilot)
        assert screen.edit.pending is None
        assert prompt.text == "question, edited"  # kept, not sent over a changed history
        saved = store.get_conversation(screen.conversation.id)  # type: ignore[union-attr]
        assert [m.content for m in saved.messages] == [
            "question",
            "echo: question",
            "newer question",
            "newer answer",
        ]
        assert any("changed elsewhere" in n.message for n in app._notifications)


async def test_the_store_is_polled(
    make_app: AppFactory,
    store: ConversationStore,
    other: ConversationStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(chat_sync, "STORE_POLL_S", 0.01)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        made = other.create_conversation(
            model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "new")
        )
        await until(pilot, lambda: listed(screen) == [made.id], "the list shows it")


async def test_a_message_to_a_conversation_deleted_elsewhere_waits_in_the_box(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore, other: ConversationStore
) -> None:
    conv = store.create_conversation(
        model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "doomed")
    )
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        other.delete(conv.id)  # `mixchat rm`, before the next poll
        await type_and_send(pilot, "a follow-up")
        await settle(pilot)
        assert store.list_conversations() == [] and engine.requests == []
        assert screen.query_one(PromptInput).text == "a follow-up"
        assert any("deleted elsewhere" in n.message for n in app._notifications)


@pytest.mark.parametrize("poll_under_way", [False, True], ids=["no-poll", "poll-under-way"])
async def test_sending_first_catches_up_with_the_store(
    make_app: AppFactory,
    engine: ScriptedEngine,
    store: ConversationStore,
    other: ConversationStore,
    monkeypatch: pytest.MonkeyPatch,
    poll_under_way: bool,
) -> None:
    """Even before the next poll, the prompt never holds a turn the view does not show. The
    timer's poll runs beside the send: one still drawing the turn added elsewhere when
    Enter is pressed must not let the send draw it a second time."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await answered_then_added_elsewhere(pilot, other)
        release = asyncio.Event()
        tick = None
        if poll_under_way:
            follow = screen.shown.follow

            async def slow_follow(messages):  # type: ignore[no-untyped-def]
                await release.wait()
                return await follow(messages)

            monkeypatch.setattr(screen.shown, "follow", slow_follow)
            tick = asyncio.create_task(screen.store_sync.check())  # the timer's, held mid-way
            await pilot.pause()
        # Enter is pressed (while the tick draws); the press returns once the send is done.
        sending = asyncio.create_task(type_and_send(pilot, "second"))
        await asyncio.sleep(0.5)
        release.set()
        if tick is not None:
            await tick
        await sending
        await settle(pilot)
        expected = ["first", "echo: first", "hidden?", "not any more", "second"]
        assert [m.content for m in engine.requests[-1][0]] == expected
        assert shown(screen) == [*expected, "echo: second"]
        saved = store.get_conversation(screen.conversation.id)  # type: ignore[union-attr]
        assert [m.content for m in saved.messages] == shown(screen)


async def test_two_redraws_at_once_draw_a_new_turn_once(
    make_app: AppFactory, store: ConversationStore, other: ConversationStore
) -> None:
    """The poll, a reply's end and the user's actions redraw from separate tasks: two that
    overlap (both find the same turn missing) must not both draw it."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await answered_then_added_elsewhere(pilot, other)
        messages = store.get_conversation(screen.conversation.id).messages  # type: ignore[union-attr]
        changed = await asyncio.gather(*(screen.shown.follow(messages) for _ in range(3)))
        await settle(pilot)
        assert sorted(changed) == [False, False, True]
        assert shown(screen) == ["first", "echo: first", "hidden?", "not any more"]
