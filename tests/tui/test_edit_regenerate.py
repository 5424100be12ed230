"""Ctrl+L (edit the last message) and Ctrl+R (regenerate): nothing is lost on the way; the
edited question and the old answers stay in the conversation as branches."""

from __future__ import annotations

import threading
import time

import pytest
from textual.widgets import OptionList

from mixchat.conversation import Conversation, Message, Role, Status
from mixchat.engine.base import EngineError
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from mixchat.tui.edit import SUPERSEDED
from mixchat.tui.widgets.chat_view import AssistantBlock, UserBlock
from mixchat.tui.widgets.prompt_input import PromptInput
from tests.tui.conftest import AppFactory
from tests.tui.helpers import only_conversation, ready, settle, type_and_send

SIZE = (110, 36)


def two_turns(store: ConversationStore) -> Conversation:
    conv = store.create_conversation(model="m", system_prompt=None, settings={})
    for text in ("first question", "first answer", "second\nquestion", "second answer"):
        role = Role.USER if "question" in text else Role.ASSISTANT
        store.append_message(conv.id, Message(role, text))
    return store.get_conversation(conv.id)


def contents(store: ConversationStore, conv_id: str) -> list[str]:
    return [m.content for m in store.get_conversation(conv_id).messages]


def siblings_of_last(store: ConversationStore, conv_id: str, back: int = 0) -> list[str]:
    """The contents of the siblings of the shown path's message ``back`` from the end."""
    shown = store.get_conversation(conv_id).messages
    message_id = shown[-1 - back].id
    assert message_id is not None
    return [m.content for m in store.siblings(message_id)]


def notes(app) -> list[str]:  # type: ignore[no-untyped-def]
    return [n.message for n in app._notifications]


async def start_edit(pilot, draft: str = "half-typed draft") -> PromptInput:  # type: ignore[no-untyped-def]
    prompt = pilot.app.query_one(PromptInput)
    prompt.focus()
    prompt.text = draft
    await pilot.press("ctrl+l")
    await pilot.pause()
    return prompt


@pytest.mark.parametrize("leave", ["escape", "ctrl+n", "switch"])
async def test_leaving_an_edit_restores_the_conversation(
    make_app: AppFactory, store: ConversationStore, leave: str
) -> None:
    conv = two_turns(store)
    other = store.create_conversation(
        model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "other")
    )
    before = contents(store, conv.id)
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        prompt = await start_edit(pilot)
        # the edit is pending: the box holds the message, the view marks what it replaces
        assert prompt.text == "second\nquestion"
        assert prompt.cursor_location == prompt.document.end  # at the end, ready to type on
        assert prompt.border_title and "Esc" in str(prompt.border_title)
        marked = [b.source for b in screen.query(f".{SUPERSEDED}")]  # type: ignore[attr-defined]
        assert marked == ["second\nquestion", "second answer"]
        assert contents(store, conv.id) == before  # nothing deleted yet
        if leave == "switch":
            options = screen.query_one(OptionList)
            options.highlighted = options.get_option_index(other.id)
            options.focus()
            await pilot.press("enter")
        else:
            await pilot.press(leave)
        await settle(pilot)
        assert contents(store, conv.id) == before
        assert not screen.query(f".{SUPERSEDED}")
        assert not prompt.border_title
        assert prompt.text == "half-typed draft"  # the box gets back what it held
        if leave == "escape":
            assert [b.source for b in screen.query(UserBlock)] == [
                "first question",
                "second\nquestion",
            ]
            await type_and_send(pilot, "third question")  # an ordinary message again
            await settle(pilot)
            assert contents(store, conv.id) == [*before, "third question", "echo: third question"]


async def test_quitting_during_an_edit_deletes_nothing(
    make_app: AppFactory, store: ConversationStore
) -> None:
    conv = two_turns(store)
    before = contents(store, conv.id)
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await start_edit(pilot)
        await pilot.press("ctrl+q")
    assert contents(store, conv.id) == before


async def test_an_edit_sent_becomes_a_branch_beside_the_old_turn(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    conv = two_turns(store)
    engine.queue("the new answer")
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        prompt = await start_edit(pilot)
        await pilot.press(*" again")  # typed at the end of the recalled text
        assert prompt.text == "second\nquestion again"
        await pilot.press("enter")
        await settle(pilot)
        assert contents(store, conv.id) == [
            "first question",
            "first answer",
            "second\nquestion again",
            "the new answer",
        ]
        assert [m.content for m in engine.requests[-1][0]] == [
            "first question",
            "first answer",
            "second\nquestion again",
        ]
        assert [b.source for b in screen.query(UserBlock)] == [
            "first question",
            "second\nquestion again",
        ]
        assert [b.source for b in screen.query(AssistantBlock)] == [
            "first answer",
            "the new answer",
        ]
        assert not screen.query(f".{SUPERSEDED}") and not prompt.border_title
        assert prompt.text == "half-typed draft"  # what the box held before the edit
        # the edited question and its answer are kept, one step away
        assert siblings_of_last(store, conv.id, back=1) == [
            "second\nquestion",
            "second\nquestion again",
        ]
        old = store.siblings(store.get_conversation(conv.id).messages[-2].id)[0]  # type: ignore[arg-type]
        assert [m.content for m in store.switch_to(old.id).messages] == [  # type: ignore[arg-type]
            "first question",
            "first answer",
            "second\nquestion",
            "second answer",
        ]


async def test_editing_an_unanswered_message(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    first = Message(Role.USER, "typo'd qestion")
    conv = store.create_conversation(
        model="m", system_prompt=None, settings={}, first_message=first
    )
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        prompt = await start_edit(pilot, draft="")
        assert prompt.text == "typo'd qestion"
        prompt.text = "typo'd question"
        await pilot.press("enter")
        await settle(pilot)
        assert contents(store, conv.id) == ["typo'd question", "echo: typo'd question"]
        assert len(screen.query(UserBlock)) == 1
        # a first message edited: both versions are first messages of the conversation
        assert siblings_of_last(store, conv.id, back=1) == ["typo'd qestion", "typo'd question"]


async def test_edit_is_refused_while_generating_and_without_a_message(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    gate = threading.Event()
    engine.queue("partial ", "rest", gate=gate, gate_from=1)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+l")  # a new, empty conversation
        assert screen.edit.pending is None
        assert any("No message of yours" in n for n in notes(app))
        await type_and_send(pilot, "question")
        await pilot.pause()
        assert screen.generating
        await pilot.press("ctrl+l")
        assert screen.edit.pending is None and app.query_one(PromptInput).text == ""
        assert any("Esc stops it" in n for n in notes(app))
        gate.set()
        await settle(pilot)
        assert [m.content for m in only_conversation(store).messages] == [
            "question",
            "partial rest",
        ]


# -- regenerate -----------------------------------------------------------------


def imported(store: ConversationStore, *messages: Message) -> str:
    conv = Conversation(id="", title="imported", created_at=time.time(), updated_at=time.time())
    conv.messages = list(messages)
    return store.import_conversation(conv).id


@pytest.mark.parametrize(
    "messages",
    [
        [Message(Role.ASSISTANT, "Hello! I only answer.")],
        [Message(Role.ASSISTANT, "one"), Message(Role.ASSISTANT, "two", Status.ERROR)],
        [Message(Role.USER, "failed to save", Status.ERROR), Message(Role.ASSISTANT, "x")],
    ],
    ids=["assistant-only", "assistants-and-an-error", "user-message-marked-error"],
)
async def test_regenerate_without_a_user_message_is_refused(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore, messages: list[Message]
) -> None:
    conv_id = imported(store, *messages)
    before = [(m.role, m.content, m.status) for m in store.get_conversation(conv_id).messages]
    app = make_app(resume_id=conv_id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+r")
        await settle(pilot)
        after = [(m.role, m.content, m.status) for m in store.get_conversation(conv_id).messages]
        assert after == before
        assert engine.requests == []
        assert any("Nothing to regenerate" in n for n in notes(app))
        assert len(screen.query(".message")) == len(before)


async def test_regenerate_in_a_new_conversation_creates_nothing(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert store.list_conversations() == [] and engine.requests == []
        assert any("Nothing to regenerate" in n for n in notes(app))


@pytest.mark.parametrize(
    "after",
    [
        [Message(Role.ASSISTANT, "", Status.ERROR)],
        [Message(Role.ASSISTANT, "half", Status.ERROR)],
        [Message(Role.ASSISTANT, "an answer"), Message(Role.ASSISTANT, "", Status.ERROR)],
    ],
    ids=["empty-error-reply", "partial-error-reply", "answer-then-error"],
)
async def test_regenerate_answers_the_last_question_beside_what_followed_it(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore, after: list[Message]
) -> None:
    conv_id = imported(store, Message(Role.USER, "the question"), *after)
    engine.queue("a fresh answer")
    app = make_app(resume_id=conv_id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert contents(store, conv_id) == ["the question", "a fresh answer"]
        assert [m.content for m in engine.requests[0][0]] == ["the question"]
        assert [b.source for b in screen.query(".message")] == [  # type: ignore[attr-defined]
            "the question",
            "a fresh answer",
        ]
        # what followed the question stays, as the other branch
        assert siblings_of_last(store, conv_id) == [after[0].content, "a fresh answer"]
        tree = store.get_tree(conv_id)
        assert [(m.content, m.status) for m in tree.branches] == [
            (m.content, m.status) for m in after
        ]


async def test_regenerate_while_generating_changes_nothing(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    gate = threading.Event()
    engine.queue("slow ", "answer", gate=gate, gate_from=1)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "question")
        await pilot.pause()
        await pilot.press("ctrl+r")
        assert any("Esc stops it" in n for n in notes(app))
        gate.set()
        await settle(pilot)
        assert len(engine.requests) == 1
        assert [m.content for m in only_conversation(store).messages] == [
            "question",
            "slow answer",
        ]
        assert not screen.generating


async def test_regenerate_without_a_model_deletes_nothing(
    make_app: AppFactory, store: ConversationStore
) -> None:
    conv = two_turns(store)
    before = contents(store, conv.id)

    class Missing(ScriptedEngine):
        def load(self):  # type: ignore[no-untyped-def]
            raise EngineError("no model here")
            yield

    app = make_app(resume_id=conv.id, engine_factory=lambda _s: Missing())
    async with app.run_test(size=SIZE) as pilot:
        await app.wait_for_model()
        await pilot.press("escape")  # past the no-model screen
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert contents(store, conv.id) == before
        assert any("No model is loaded" in n for n in notes(app))
