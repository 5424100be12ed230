"""Tests for mixchat.turn and mixchat.recorder: a reply streamed into the store."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import pytest

import mixchat.recorder as session
from mixchat.conversation import Message, Role, Status
from mixchat.engine.base import (
    Event,
    Failed,
    Finished,
    GenerationParams,
    Notice,
    TextDelta,
    Usage,
)
from mixchat.engine.scripted import ScriptedEngine
from mixchat.prompt import prompt_messages
from mixchat.recorder import ReplyRecorder
from mixchat.store import ConversationStore
from mixchat.turn import stream_reply

PARAMS = GenerationParams(temperature=0.0, max_new_tokens=32, seed=1)


@pytest.fixture
def store() -> Iterator[ConversationStore]:
    with ConversationStore.open() as s:
        yield s


@dataclass
class Chat:
    """A conversation with one committed user message, ready for a reply."""

    store: ConversationStore
    conv_id: str
    history: list[Message]
    cancel: threading.Event = field(default_factory=threading.Event)

    def recorder(self) -> ReplyRecorder:
        return ReplyRecorder(self.store, self.conv_id)

    def run(
        self,
        engine: object,
        recorder: ReplyRecorder,
        on_event: Callable[[Event], None] = lambda e: None,
    ) -> session.TurnOutcome:
        return stream_reply(
            engine,  # type: ignore[arg-type]
            recorder,
            self.history,
            "SYS",
            PARAMS,
            self.cancel,
            on_event,
        )


@pytest.fixture
def chat(store: ConversationStore) -> Chat:
    conv = store.create_conversation(model="scripted", system_prompt="SYS", settings={})
    store.append_message(conv.id, Message(Role.USER, "hello there"))
    history = prompt_messages(store.get_conversation(conv.id).messages)
    return Chat(store, conv.id, history)


def saved_messages(conv_id: str) -> list[Message]:
    """Read the conversation through a separate connection, as another process would."""
    with ConversationStore.open() as other:
        return other.get_conversation(conv_id).messages


def saved_reply(conv_id: str) -> Message:
    reply = saved_messages(conv_id)[-1]
    assert reply.role is Role.ASSISTANT
    return reply


@dataclass
class ListEngine:
    """Yields a fixed list of events; optionally raises after them."""

    events: list[Event]
    raise_after: BaseException | None = None

    def stream(
        self,
        messages: Sequence[Message],
        system_prompt: str | None,
        params: GenerationParams,
        cancel: threading.Event,
    ) -> Iterable[Event]:
        yield from self.events
        if self.raise_after is not None:
            raise self.raise_after


# -- complete replies ---------------------------------------------------------------


def test_complete_reply_is_saved_with_status_and_usage(chat: Chat) -> None:
    engine = ScriptedEngine()
    engine.queue("Hel", "lo", " world")
    seen: list[Event] = []
    recorder = chat.recorder()
    outcome = chat.run(engine, recorder, seen.append)

    assert outcome.status is Status.COMPLETE
    assert outcome.text == "Hello world"
    assert outcome.finish_reason == "stop"
    assert outcome.error is None
    assert outcome.usage is not None
    assert outcome.usage.completion_tokens == 3
    assert outcome.usage.prompt_tokens == len(chat.history)
    assert [e.text for e in seen if isinstance(e, TextDelta)] == ["Hel", "lo", " world"]
    assert seen == outcome.events
    assert isinstance(seen[-1], Finished)

    rows = saved_messages(chat.conv_id)
    assert [(m.role, m.content, m.status) for m in rows] == [
        (Role.USER, "hello there", Status.COMPLETE),
        (Role.ASSISTANT, "Hello world", Status.COMPLETE),
    ]
    reply = rows[-1]
    assert reply.id == outcome.message_id
    assert reply.prompt_tokens == outcome.usage.prompt_tokens
    assert reply.completion_tokens == 3
    assert reply.ttft_s == outcome.usage.ttft_s
    assert reply.duration_s == outcome.usage.duration_s


def test_engine_receives_history_system_prompt_and_params(chat: Chat) -> None:
    engine = ScriptedEngine()
    chat.run(engine, chat.recorder())
    ((messages, system_prompt, params),) = engine.requests
    assert [m.content for m in messages] == ["hello there"]
    assert system_prompt == "SYS"
    assert params == PARAMS
    assert saved_reply(chat.conv_id).content == "echo: hello there"


def test_finish_reason_length_is_complete(chat: Chat) -> None:
    engine = ListEngine([TextDelta("cut"), Usage(3, 1, 0.1, 0.2, 5.0), Finished("length")])
    outcome = chat.run(engine, chat.recorder())
    assert outcome.status is Status.COMPLETE
    reply = saved_reply(chat.conv_id)
    assert (reply.content, reply.status, reply.prompt_tokens, reply.completion_tokens) == (
        "cut",
        Status.COMPLETE,
        3,
        1,
    )
    assert (reply.ttft_s, reply.duration_s) == (0.1, 0.2)


def test_stream_that_ends_without_finished_is_interrupted(chat: Chat) -> None:
    outcome = chat.run(ListEngine([Notice("hi"), TextDelta("half")]), chat.recorder())
    assert outcome.status is Status.INTERRUPTED
    assert outcome.finish_reason is None
    reply = saved_reply(chat.conv_id)
    assert (reply.content, reply.status) == ("half", Status.INTERRUPTED)


def test_recorder_without_store_keeps_nothing_on_disk(chat: Chat) -> None:
    engine = ScriptedEngine()
    engine.queue("a", "b")
    recorder = ReplyRecorder(None, None)
    outcome = chat.run(engine, recorder)
    assert outcome.status is Status.COMPLETE
    assert outcome.text == "ab"
    assert outcome.message_id is None
    assert [m.role for m in saved_messages(chat.conv_id)] == [Role.USER]


# -- failures -------------------------------------------------------------------------


def test_failed_event_gives_error_status_with_partial_content(chat: Chat) -> None:
    engine = ScriptedEngine()
    engine.queue("partial ", "text", fail_with="CUDA out of memory")
    outcome = chat.run(engine, chat.recorder())
    assert outcome.status is Status.ERROR
    assert outcome.error == "CUDA out of memory"
    assert outcome.text == "partial text"
    assert isinstance(outcome.events[-1], Failed)
    reply = saved_reply(chat.conv_id)
    assert (reply.content, reply.status) == ("partial text", Status.ERROR)
    assert reply.completion_tokens is None


def test_failed_event_wins_over_finished(chat: Chat) -> None:
    engine = ListEngine([TextDelta("x"), Failed("boom"), Finished("stop")])
    outcome = chat.run(engine, chat.recorder())
    assert outcome.status is Status.ERROR
    assert saved_reply(chat.conv_id).status is Status.ERROR


def test_exception_from_engine_saves_partial_and_propagates(chat: Chat) -> None:
    engine = ListEngine([TextDelta("so "), TextDelta("far")], raise_after=RuntimeError("dead"))
    recorder = chat.recorder()
    with pytest.raises(RuntimeError, match="dead"):
        chat.run(engine, recorder)
    assert chat.cancel.is_set()
    assert recorder.outcome.status is Status.INTERRUPTED
    reply = saved_reply(chat.conv_id)
    assert (reply.content, reply.status) == ("so far", Status.INTERRUPTED)


# -- cancel and interrupt --------------------------------------------------------------


def test_cancel_set_in_on_event_after_first_delta(chat: Chat) -> None:
    engine = ScriptedEngine()
    engine.queue("first ", "second ", "third")

    def on_event(event: Event) -> None:
        if isinstance(event, TextDelta):
            chat.cancel.set()

    outcome = chat.run(engine, chat.recorder(), on_event)
    assert outcome.status is Status.INTERRUPTED
    assert outcome.finish_reason == "cancelled"
    assert outcome.text == "first "
    reply = saved_reply(chat.conv_id)
    assert (reply.content, reply.status) == ("first ", Status.INTERRUPTED)


def test_cancel_from_another_thread_while_engine_waits(chat: Chat) -> None:
    gate = threading.Event()
    gate.set()
    engine = ScriptedEngine()
    engine.queue("one ", "two ", "three", gate=gate)
    first_delta = threading.Event()
    result: list[session.TurnOutcome] = []
    recorder = chat.recorder()

    def on_event(event: Event) -> None:
        if isinstance(event, TextDelta) and not first_delta.is_set():
            gate.clear()  # hold the engine before its next piece
            first_delta.set()

    worker = threading.Thread(target=lambda: result.append(chat.run(engine, recorder, on_event)))
    worker.start()
    assert first_delta.wait(timeout=30)
    # Mid-stream: the row exists, marked interrupted, before the reply is finished.
    assert saved_reply(chat.conv_id).status is Status.INTERRUPTED
    chat.cancel.set()
    worker.join(timeout=30)
    assert not worker.is_alive()
    (outcome,) = result
    assert outcome.status is Status.INTERRUPTED
    assert outcome.finish_reason == "cancelled"
    assert outcome.text == "one "
    reply = saved_reply(chat.conv_id)
    assert (reply.content, reply.status) == ("one ", Status.INTERRUPTED)


def test_keyboard_interrupt_saves_partial_and_propagates(chat: Chat) -> None:
    engine = ScriptedEngine()
    engine.queue("a", "b", "c", "d")
    deltas = 0

    def on_event(event: Event) -> None:
        nonlocal deltas
        if isinstance(event, TextDelta):
            deltas += 1
            if deltas == 2:
                raise KeyboardInterrupt

    recorder = chat.recorder()
    with pytest.raises(KeyboardInterrupt):
        chat.run(engine, recorder, on_event)
    assert chat.cancel.is_set()
    assert recorder.outcome.status is Status.INTERRUPTED
    assert recorder.outcome.text == "ab"
    reply = saved_reply(chat.conv_id)
    assert (reply.content, reply.status) == ("ab", Status.INTERRUPTED)


# -- checkpointing -------------------------------------------------------------------


def test_reply_row_exists_before_the_first_token(chat: Chat) -> None:
    recorder = chat.recorder()
    reply = saved_reply(chat.conv_id)
    assert reply.id == recorder.outcome.message_id
    assert (reply.content, reply.status) == ("", Status.INTERRUPTED)


def test_checkpoints_grow_the_row_while_streaming(
    chat: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session, "CHECKPOINT_INTERVAL_S", 0)
    engine = ScriptedEngine()
    engine.queue("The ", "quick ", "brown ", "fox")
    seen: list[tuple[str, Status]] = []
    recorder = chat.recorder()

    with ConversationStore.open() as reader:

        def on_event(event: Event) -> None:
            if isinstance(event, TextDelta):
                recorder.flush()  # checkpoints are written by a thread: wait for it
                reply = reader.get_conversation(chat.conv_id).messages[-1]
                seen.append((reply.content, reply.status))

        outcome = chat.run(engine, recorder, on_event)

    assert seen == [
        ("The ", Status.INTERRUPTED),
        ("The quick ", Status.INTERRUPTED),
        ("The quick brown ", Status.INTERRUPTED),
        ("The quick brown fox", Status.INTERRUPTED),
    ]
    assert outcome.status is Status.COMPLETE
    assert saved_reply(chat.conv_id).status is Status.COMPLETE


def test_no_checkpoint_before_the_interval(chat: Chat, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "CHECKPOINT_INTERVAL_S", 1e9)
    engine = ScriptedEngine()
    engine.queue("a", "b", "c")
    seen: list[str] = []

    recorder = chat.recorder()

    def on_event(event: Event) -> None:
        if isinstance(event, TextDelta):
            recorder.flush()
            seen.append(saved_reply(chat.conv_id).content)

    chat.run(engine, recorder, on_event)
    assert seen == ["", "", ""]
    assert saved_reply(chat.conv_id).content == "abc"  # the final write still happens


def test_explicit_checkpoint_writes_the_text_so_far(
    chat: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session, "CHECKPOINT_INTERVAL_S", 1e9)
    recorder = chat.recorder()
    recorder.add("x")
    recorder.add("y")
    assert saved_reply(chat.conv_id).content == ""
    recorder.checkpoint()
    recorder.flush()
    reply = saved_reply(chat.conv_id)
    assert (reply.content, reply.status) == ("xy", Status.INTERRUPTED)


# -- prompt history -------------------------------------------------------------------


def test_prompt_messages_filters_failed_and_empty_replies() -> None:
    q1 = Message(Role.USER, "q1")
    a1 = Message(Role.ASSISTANT, "a1")
    q2 = Message(Role.USER, "q2")
    empty_partial = Message(Role.ASSISTANT, "", Status.INTERRUPTED)
    q3 = Message(Role.USER, "q3")
    partial = Message(Role.ASSISTANT, "half an answer", Status.INTERRUPTED)
    q4 = Message(Role.USER, "q4")
    failed = Message(Role.ASSISTANT, "boo", Status.ERROR)
    failed_empty = Message(Role.ASSISTANT, "", Status.ERROR)
    empty_complete = Message(Role.ASSISTANT, "", Status.COMPLETE)
    q5 = Message(Role.USER, "")
    msgs = [q1, a1, q2, empty_partial, q3, partial, q4, failed, failed_empty, empty_complete, q5]

    kept = prompt_messages(msgs)
    assert [id(m) for m in kept] == [id(m) for m in (q1, a1, q2, q3, partial, q4, q5)]
    assert len(msgs) == 11  # the input is not modified


def test_next_prompt_leaves_out_failed_reply_but_keeps_partial(chat: Chat) -> None:
    engine = ScriptedEngine()
    engine.queue("oops", fail_with="boom")
    chat.run(engine, chat.recorder())

    chat.store.append_message(chat.conv_id, Message(Role.USER, "again"))
    engine.queue("half", "more")
    nxt = Chat(chat.store, chat.conv_id, prompt_messages(saved_messages(chat.conv_id)))

    def stop_after_first(event: Event) -> None:
        if isinstance(event, TextDelta):
            nxt.cancel.set()

    nxt.run(engine, nxt.recorder(), stop_after_first)

    third = prompt_messages(saved_messages(chat.conv_id))
    assert [(m.role, m.content, m.status) for m in third] == [
        (Role.USER, "hello there", Status.COMPLETE),
        (Role.USER, "again", Status.COMPLETE),
        (Role.ASSISTANT, "half", Status.INTERRUPTED),
    ]
    contents = [m.content for m in engine.requests[1][0]]
    assert contents == ["hello there", "again"]
