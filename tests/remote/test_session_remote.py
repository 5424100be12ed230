"""Crash-safety bookkeeping through session.stream_reply is the same for a remote engine."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from mixchat.config import Settings
from mixchat.conversation import Message, Role, Status
from mixchat.engine.base import GenerationParams, TextDelta
from mixchat.engine.remote import RemoteEngine
from mixchat.prompt import prompt_messages
from mixchat.recorder import ReplyRecorder
from mixchat.store import ConversationStore
from mixchat.turn import stream_reply
from tests.remote.conftest import Served, StubServer


@pytest.fixture
def store() -> Iterator[ConversationStore]:
    with ConversationStore.open() as s:
        yield s


def reply_to(store: ConversationStore, engine: RemoteEngine) -> tuple[str, Message]:
    """Commit a question, stream the reply through the session, read it back from disk."""
    conv = store.create_conversation(
        model=engine.settings.model,
        system_prompt=None,
        settings={},
        first_message=Message(Role.USER, "Tell me a story."),
    )
    history = prompt_messages(store.get_conversation(conv.id).messages)
    streamed: list[str] = []
    outcome = stream_reply(
        engine,
        ReplyRecorder(store, conv.id),
        history,
        None,
        GenerationParams(temperature=0.0, max_new_tokens=12),
        threading.Event(),
        lambda e: streamed.append(e.text) if isinstance(e, TextDelta) else None,
    )
    assert outcome.text == "".join(streamed)
    with ConversationStore.open() as other:  # as another process would see it
        saved = other.get_conversation(conv.id).messages[-1]
    assert saved.role is Role.ASSISTANT and saved.id == outcome.message_id
    return "".join(streamed), saved


def test_a_remote_reply_is_saved_complete(served: Served, store: ConversationStore) -> None:
    engine = served.engine()
    try:
        text, saved = reply_to(store, engine)
    finally:
        engine.close()
    assert text and saved.content == text
    assert saved.status is Status.COMPLETE
    assert saved.prompt_tokens and saved.prompt_tokens > 0  # the server's count


def test_a_reply_broken_mid_stream_is_saved_as_error(
    stub: StubServer, store: ConversationStore
) -> None:
    engine = RemoteEngine(Settings(model="stream-drop"), stub.url)
    try:
        text, saved = reply_to(store, engine)
    finally:
        engine.close()
    assert text == saved.content == "Hello there"  # the partial text is kept
    assert saved.status is Status.ERROR
