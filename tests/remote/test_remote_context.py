"""Context fitting for a remote model: old turns dropped, the newest kept, overflow refused."""

from __future__ import annotations

import threading

from mixchat.config import Settings
from mixchat.conversation import Message, Role
from mixchat.engine.base import ContextTrimmed, Failed, Finished, GenerationParams
from mixchat.engine.remote import RemoteEngine
from tests.remote.conftest import StubServer

PARAMS = GenerationParams(temperature=0.0, max_new_tokens=16)


def history(turns: int) -> list[Message]:
    messages: list[Message] = []
    for i in range(turns):
        messages.append(Message(Role.USER, f"question number {i} " + "word " * 20))
        messages.append(Message(Role.ASSISTANT, f"answer number {i} " + "text " * 20))
    messages.append(Message(Role.USER, "the newest question"))
    return messages


def test_oldest_turns_are_dropped_to_fit_the_servers_context(stub: StubServer) -> None:
    # The stub lists "short" with max_model_len 256, as vLLM reports it.
    engine = RemoteEngine(Settings(model="short"), stub.url)
    try:
        events = list(engine.stream(history(8), "Be brief.", PARAMS, threading.Event()))
        assert engine.info().context_size == 256
    finally:
        engine.close()
    trimmed = [e for e in events if isinstance(e, ContextTrimmed)]
    assert trimmed and trimmed[0].dropped_messages > 0
    assert trimmed[0].prompt_tokens + PARAMS.max_new_tokens <= 256
    assert events[-1] == Finished("stop")
    sent = stub.requests[-1]["messages"]
    assert sent[-1] == {"role": "user", "content": "the newest question"}
    assert sent[0]["role"] == "user" and sent[0]["content"].startswith("Be brief.\n\n")
    assert "question number 0" not in str(sent)
    assert len(sent) == 2 * 8 + 1 - trimmed[0].dropped_messages


def test_a_history_that_fits_is_sent_whole(stub: StubServer) -> None:
    engine = RemoteEngine(Settings(model="ok"), stub.url)
    try:
        events = list(engine.stream(history(3), None, PARAMS, threading.Event()))
    finally:
        engine.close()
    assert not any(isinstance(e, ContextTrimmed) for e in events)
    assert len(stub.requests[-1]["messages"]) == 7


def test_a_newest_message_too_long_fails_in_one_line_without_a_request(
    stub: StubServer,
) -> None:
    engine = RemoteEngine(Settings(model="short"), stub.url)
    before = len(stub.requests)
    try:
        long = [Message(Role.USER, "word " * 400)]
        events = list(engine.stream(long, None, PARAMS, threading.Event()))
    finally:
        engine.close()
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.kind == "prompt"
    assert "256-token context" in failed.message and "\n" not in failed.message
    assert len(stub.requests) == before
