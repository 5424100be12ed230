"""``Turn`` makes branches, never deletions: regenerate answers beside the old answer, an
edit goes beside the edited question, the prompt is the path up to the turn, a question
taken back leaves the tree as it was, and the next turn continues the shown path."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from mixchat.config import SettingsSources, load_sources
from mixchat.conversation import Conversation, Message, Role
from mixchat.engine.base import Failed, FailureKind
from mixchat.engine.scripted import ScriptedEngine
from mixchat.prompt import PromptError
from mixchat.store import ConversationStore
from mixchat.turn import Ending, Turn


@pytest.fixture
def store() -> Iterator[ConversationStore]:
    with ConversationStore.open() as s:
        yield s


@pytest.fixture
def sources() -> SettingsSources:
    return load_sources()


def two_turns(store: ConversationStore) -> Conversation:
    conv = store.create_conversation(model="m", system_prompt=None, settings={})
    for role, text in [
        (Role.USER, "q1"),
        (Role.ASSISTANT, "a1"),
        (Role.USER, "q2"),
        (Role.ASSISTANT, "a2"),
    ]:
        store.append_message(conv.id, Message(role, text))
    return store.get_conversation(conv.id)


def texts(messages: list[Message]) -> list[str]:
    return [m.content for m in messages]


def run(turn: Turn, engine: ScriptedEngine):  # type: ignore[no-untyped-def]
    turn.start()
    return turn.run(engine, threading.Event(), lambda event: None)


def sibling_texts(store: ConversationStore, message: Message) -> list[str]:
    assert message.id is not None
    return texts(store.siblings(message.id))


@pytest.mark.parametrize("question", [0, 2], ids=["first-question", "last-question"])
def test_regenerate_answers_beside_the_old_answer(
    store: ConversationStore, sources: SettingsSources, question: int
) -> None:
    conv = two_turns(store)
    engine = ScriptedEngine()
    engine.queue("fresh")
    turn = Turn(store, sources, conv)
    turn.again(conv.messages[question])
    outcome = run(turn, engine)
    assert outcome.ending is Ending.COMPLETE
    # the prompt is the path up to the question, nothing after it
    assert texts(engine.requests[0][0]) == texts(conv.messages[: question + 1])
    shown = store.get_conversation(conv.id).messages
    assert texts(shown) == [*texts(conv.messages[: question + 1]), "fresh"]
    assert sibling_texts(store, shown[-1]) == [conv.messages[question + 1].content, "fresh"]
    # the old answer and everything after it are one switch away
    old = conv.messages[question + 1]
    assert old.id is not None
    assert texts(store.switch_to(old.id).messages) == texts(conv.messages)


@pytest.mark.parametrize("edited", [0, 2], ids=["first-question", "last-question"])
def test_an_edit_goes_beside_the_edited_question(
    store: ConversationStore, sources: SettingsSources, edited: int
) -> None:
    conv = two_turns(store)
    engine = ScriptedEngine()
    engine.queue("answer to the edit")
    turn = Turn(store, sources, conv)
    turn.ask(Message(Role.USER, "edited"), replacing=conv.messages[edited].id)
    run(turn, engine)
    assert texts(engine.requests[0][0]) == [*texts(conv.messages[:edited]), "edited"]
    shown = store.get_conversation(conv.id).messages
    assert texts(shown) == [*texts(conv.messages[:edited]), "edited", "answer to the edit"]
    assert sibling_texts(store, shown[edited]) == [conv.messages[edited].content, "edited"]
    assert len(store.get_tree(conv.id).branches) == 4 - edited  # the old turns, whole


class _Unsent(ScriptedEngine):
    def stream(self, messages, system_prompt, params, cancel):  # type: ignore[no-untyped-def]
        self.requests.append((list(messages), system_prompt, params))
        yield Failed("refused", kind=FailureKind.PROMPT, unsent=True)


@pytest.mark.parametrize("how", ["again", "edit"])
def test_taking_back_an_unsent_turn_leaves_the_tree_as_it_was(
    store: ConversationStore, sources: SettingsSources, how: str
) -> None:
    conv = two_turns(store)
    a1 = conv.messages[1]
    assert a1.id is not None
    store.start_reply(conv.id, parent_id=conv.messages[0].id)  # a sibling of a1 ...
    conv = store.switch_to(a1.id)  # ... while a1's branch is shown
    before = store.get_tree(conv.id)
    turn = Turn(store, sources, conv)
    if how == "again":
        turn.again(conv.messages[2])
    else:
        turn.ask(Message(Role.USER, "edited"), replacing=conv.messages[2].id)
    outcome = run(turn, _Unsent())
    assert outcome.unsent
    turn.undo()
    after = store.get_tree(conv.id)
    assert texts(after.messages) == texts(before.messages) == ["q1", "a1", "q2", "a2"]
    assert sorted(m.id for m in after.branches) == sorted(m.id for m in before.branches)  # type: ignore[type-var]
    assert turn.conversation is not None and texts(turn.conversation.messages) == texts(
        before.messages
    )


def test_the_next_turn_continues_the_shown_path(
    store: ConversationStore, sources: SettingsSources
) -> None:
    """``ask -c`` and the app open the conversation as shown: after switching to an older
    answer, the next question goes under it and its prompt is that branch."""
    conv = two_turns(store)
    engine = ScriptedEngine()
    engine.queue("newer a1")
    regen = Turn(store, sources, conv)
    regen.again(conv.messages[0])
    run(regen, engine)
    old = conv.messages[1]
    assert old.id is not None
    store.switch_to(old.id)
    engine.queue("a3")
    turn = Turn(store, sources, store.get_conversation(store.last_conversation_id() or ""))
    turn.ask(Message(Role.USER, "q3"))
    run(turn, engine)
    assert texts(engine.requests[-1][0]) == ["q1", "a1", "q2", "a2", "q3"]
    assert texts(store.get_conversation(conv.id).messages) == [
        "q1",
        "a1",
        "q2",
        "a2",
        "q3",
        "a3",
    ]


def test_regenerating_a_message_not_shown_is_refused(
    store: ConversationStore, sources: SettingsSources
) -> None:
    conv = two_turns(store)
    stranger = Message(Role.USER, "not here", id=10**6)
    with pytest.raises(PromptError, match="not in the conversation"):
        Turn(store, sources, conv).again(stranger)
    with pytest.raises(PromptError, match="not in the conversation"):
        Turn(None, sources, conv).ask(Message(Role.USER, "x"), replacing=10**6)
    assert texts(store.get_conversation(conv.id).messages) == texts(conv.messages)
