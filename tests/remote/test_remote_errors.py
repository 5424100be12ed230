"""Failures a real server produces only by accident, against an in-process stub server."""

from __future__ import annotations

import threading
import time

import pytest

from mixchat.config import Settings
from mixchat.conversation import Message, Role
from mixchat.engine.base import (
    EngineError,
    Event,
    Failed,
    Finished,
    GenerationParams,
    Notice,
    TextDelta,
    Usage,
)
from mixchat.engine.remote import RemoteEngine
from tests.remote.conftest import StubServer

HELLO = [Message(Role.USER, "hi")]
PARAMS = GenerationParams(temperature=0.0, top_k=5, max_new_tokens=16, seed=4)


def ask(stub: StubServer, model: str, **settings: object) -> list[Event]:
    engine = RemoteEngine(Settings(model=model, **settings), stub.url)  # type: ignore[arg-type]
    try:
        return list(engine.stream(HELLO, "SYS", PARAMS, threading.Event()))
    finally:
        engine.close()


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def only_failure(events: list[Event]) -> str:
    failed = [e for e in events if isinstance(e, Failed)]
    assert len(failed) == 1 and events[-1] is failed[0]
    assert not any(isinstance(e, Finished) for e in events)
    assert "\n" not in failed[0].message
    return failed[0].message


def test_a_complete_reply_sends_the_request_mixchat_means(stub: StubServer) -> None:
    events = ask(stub, "ok")
    assert text_of(events) == "Hello there"
    usage = next(e for e in events if isinstance(e, Usage))
    assert (usage.prompt_tokens, usage.completion_tokens) == (7, 2)
    assert events[-1] == Finished("stop")
    body = stub.requests[-1]
    assert body["messages"] == [{"role": "user", "content": "SYS\n\nhi"}]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"], body["seed"], body["top_k"]) == (16, 0.0, 4, 5)
    assert "repetition_penalty" not in body  # left at 1.0: not sent


def test_api_key_comes_from_the_named_variable_and_never_shows(
    stub: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub.key = "right-key"
    monkeypatch.setenv("MY_KEY", "wrong-key-123")
    engine = RemoteEngine(Settings(model="ok"), stub.url, api_key_env="MY_KEY")
    with pytest.raises(EngineError) as caught:
        list(engine.load())
    assert str(caught.value) == f"{stub.url} refused the API key (401); put the key in $MY_KEY"
    assert stub.auth_headers[-1] == "Bearer wrong-key-123"
    monkeypatch.setenv("MY_KEY", "right-key")
    assert text_of(ask(stub, "ok", api_key_env="MY_KEY")) == "Hello there"


def test_unknown_model_names_what_is_served(stub: StubServer) -> None:
    engine = RemoteEngine(Settings(model="mixtral"), stub.url)
    loaded = list(engine.load())
    notice = f"{stub.url} lists ok, short, not mixtral; pass the served name with --model"
    assert Notice(notice) in loaded
    events = list(engine.stream(HELLO, None, PARAMS, threading.Event()))
    engine.close()
    assert only_failure(events) == (
        f"model 'mixtral' not found at {stub.url} (404); it serves ok, short"
    )


def test_rate_limit_is_one_line_when_retries_are_off(stub: StubServer) -> None:
    message = only_failure(ask(stub, "busy", server_retries=0))
    assert message == f"{stub.url} is busy (429 too many requests); try again shortly"
    assert len(stub.requests) == 1


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("stream-error", "reported an error mid-reply: engine crashed"),
        ("stream-drop", "the connection to"),
        ("stream-garbage", "sent a malformed event: {this is not json"),
    ],
)
def test_mid_stream_failures_keep_the_partial_text(
    stub: StubServer, model: str, expected: str
) -> None:
    events = ask(stub, model)
    assert text_of(events) == "Hello there"
    assert expected in only_failure(events)


def test_silence_times_out(stub: StubServer) -> None:
    # Long enough that connecting and the first events fit in it on a loaded machine.
    events = ask(stub, "stream-silent", server_idle_timeout_s=2)
    assert text_of(events) == "Hello there"
    assert only_failure(events) == (
        f"{stub.url} sent no data for 2s (raise server_idle_timeout_s to wait longer)"
    )


def test_cancel_while_the_server_is_silent_returns_at_once(stub: StubServer) -> None:
    engine = RemoteEngine(Settings(model="stream-silent"), stub.url)
    cancel = threading.Event()
    events: list[Event] = []
    for event in engine.stream(HELLO, None, PARAMS, cancel):
        events.append(event)
        if isinstance(event, TextDelta) and event.text == " there":
            cancelled_at = time.monotonic()
            cancel.set()
    # Liveness: without the cancel this read would wait for the 300 s read timeout.
    assert time.monotonic() - cancelled_at < 30
    assert events[-1] == Finished("cancelled")
    assert isinstance(events[-2], Usage) and events[-2].completion_tokens == 2
    stub.release.set()
    engine.settings = Settings(model="ok")
    assert text_of(list(engine.stream(HELLO, None, PARAMS, threading.Event()))) == "Hello there"
    engine.close()


def test_a_bad_endpoint_is_an_engine_error() -> None:
    engine = RemoteEngine(Settings(model="m"), "localhost:8000")
    with pytest.raises(EngineError, match="must be an http"):
        list(engine.load())
