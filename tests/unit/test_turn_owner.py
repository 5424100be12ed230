"""``Turn`` owns a turn for both front ends: typed endings, taking a question back, the
context check before loading, and continuing a reply as the same message."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest

from mixchat.config import SettingsSources, load_sources
from mixchat.conversation import Message, Role, Status
from mixchat.engine.base import Event, Failed, FailureKind, GenerationParams, TextDelta
from mixchat.engine.scripted import ScriptedEngine
from mixchat.prompt import ContextOverflowError, PromptError
from mixchat.store import ConversationStore
from mixchat.transcript import to_json
from mixchat.turn import Ending, Turn


@pytest.fixture
def store() -> Iterator[ConversationStore]:
    with ConversationStore.open() as s:
        yield s


@pytest.fixture
def sources() -> SettingsSources:
    return load_sources()


def ask(store: ConversationStore | None, sources: SettingsSources, engine: object, text: str):  # type: ignore[no-untyped-def]
    turn = Turn(store, sources, None)
    turn.ask(Message(Role.USER, text))
    turn.start()
    return turn, turn.run(engine, threading.Event(), lambda event: None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("finish", "ending", "status"),
    [("stop", Ending.COMPLETE, Status.COMPLETE), ("length", Ending.LENGTH, Status.COMPLETE)],
)
def test_an_answer_ends_complete_or_cut_and_the_cut_is_saved(
    store: ConversationStore, sources: SettingsSources, finish: str, ending: Ending, status: Status
) -> None:
    engine = ScriptedEngine()
    engine.queue("Hello ", "there", finish=finish)  # type: ignore[arg-type]
    turn, outcome = ask(store, sources, engine, "hi")
    assert (outcome.ending, outcome.status, outcome.failure) == (ending, status, None)
    assert turn.conversation is not None
    saved = store.get_conversation(turn.conversation.id).messages[-1]
    assert (saved.content, saved.status, saved.finish_reason) == ("Hello there", status, finish)
    exported = to_json(store.get_conversation(turn.conversation.id))
    assert exported["messages"][-1]["content"] == "Hello there"


def test_a_cancel_is_stopped_and_a_failure_is_typed(
    store: ConversationStore, sources: SettingsSources
) -> None:
    engine = ScriptedEngine()
    gate = threading.Event()
    engine.queue("part", "never", gate=gate, gate_from=1)
    turn = Turn(store, sources, None)
    turn.ask(Message(Role.USER, "hi"))
    turn.start()
    cancel = threading.Event()

    def stop_after_first(event: Event) -> None:
        if isinstance(event, TextDelta):
            cancel.set()

    outcome = turn.run(engine, cancel, stop_after_first)
    assert (outcome.ending, outcome.status, outcome.text) == (
        Ending.STOPPED,
        Status.INTERRUPTED,
        "part",
    )
    engine.queue("x", fail_with="the GPU caught fire")
    _, failed = ask(store, sources, engine, "again")
    assert (failed.ending, failed.failure, failed.error) == (
        Ending.FAILED,
        FailureKind.ENGINE,
        "the GPU caught fire",
    )


class _RefusingEngine(ScriptedEngine):
    """Fails before anything reaches a model, as an unreachable server does."""

    def stream(self, messages, system_prompt, params, cancel):  # type: ignore[no-untyped-def]
        self.requests.append((list(messages), system_prompt, params))
        yield Failed("too long for the server", kind=FailureKind.PROMPT, unsent=True)


def test_an_unsent_question_is_taken_back(
    store: ConversationStore, sources: SettingsSources
) -> None:
    turn, outcome = ask(store, sources, _RefusingEngine(), "first")
    assert outcome.unsent and outcome.failure is FailureKind.PROMPT
    turn.undo()
    assert store.list_conversations() == []  # a new conversation goes away whole
    kept = Turn(store, sources, None)
    kept.ask(Message(Role.USER, "kept"))
    assert kept.conversation is not None
    later = Turn(store, sources, kept.conversation)
    later.ask(Message(Role.USER, "refused"))
    later.undo()  # an appended question goes, the conversation stays
    assert [m.content for m in store.get_conversation(kept.conversation.id).messages] == ["kept"]


class _CheckingEngine(ScriptedEngine):
    checked: list[int]

    def check_fits(
        self, messages: Sequence[Message], system_prompt: str | None, max_new_tokens: int
    ) -> None:
        self.checked = [len(messages), max_new_tokens]
        raise ContextOverflowError(99, max_new_tokens, 64)


def test_check_fits_asks_engines_that_can_tell(sources: SettingsSources) -> None:
    turn = Turn(None, sources.with_flags({"max_new_tokens": "7"}), None)
    engine = _CheckingEngine()
    with pytest.raises(PromptError, match="64-token context"):
        turn.check_fits(engine, Message(Role.USER, "long"))
    assert engine.checked == [1, 7]
    turn.check_fits(ScriptedEngine(), Message(Role.USER, "long"))  # cannot tell: no check


def test_a_cut_reply_is_continued_as_the_same_message(
    store: ConversationStore, sources: SettingsSources
) -> None:
    engine = ScriptedEngine()
    engine.queue("The answer ", "is", finish="length")
    first, _ = ask(store, sources, engine, "question")
    assert first.conversation is not None
    conv = store.get_conversation(first.conversation.id)
    engine.queue(" forty-two.")
    turn = Turn(store, sources, conv)
    turn.continue_reply(conv.messages[-1])
    turn.start()
    outcome = turn.run(engine, threading.Event(), lambda event: None)
    assert outcome.ending is Ending.COMPLETE
    sent, _, _ = engine.requests[-1]
    assert [m.role for m in sent] == [Role.USER, Role.ASSISTANT]  # it ends with the reply
    assert sent[-1].content == "The answer is"
    messages = store.get_conversation(conv.id).messages
    assert [(m.content, m.finish_reason) for m in messages] == [
        ("question", None),
        ("The answer is forty-two.", "stop"),
    ]


def test_only_the_last_nonempty_answer_can_be_continued(
    store: ConversationStore, sources: SettingsSources
) -> None:
    engine = ScriptedEngine()
    engine.queue("one")
    first, _ = ask(store, sources, engine, "q1")
    assert first.conversation is not None
    conv = store.get_conversation(first.conversation.id)
    turn = Turn(store, sources, conv)
    with pytest.raises(PromptError):
        turn.continue_reply(conv.messages[0])  # a question
    store.append_message(conv.id, Message(Role.USER, "q2"))
    conv = store.get_conversation(conv.id)
    with pytest.raises(PromptError):
        Turn(store, sources, conv).continue_reply(conv.messages[1])  # not the last one


def test_no_save_keeps_nothing_but_still_answers(sources: SettingsSources, mixchat_home) -> None:  # type: ignore[no-untyped-def]
    engine = ScriptedEngine()
    engine.queue("private")
    turn, outcome = ask(None, sources, engine, "secret")
    assert (outcome.ending, outcome.text, turn.conversation) == (Ending.COMPLETE, "private", None)
    sent, _, params = engine.requests[-1]
    assert [m.content for m in sent] == ["secret"] and isinstance(params, GenerationParams)
    assert not mixchat_home.exists()
