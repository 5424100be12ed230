"""The remote engine against a real ``transformers serve`` process serving the tiny Mixtral."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mixchat.config import Settings
from mixchat.conversation import Message, Role
from mixchat.engine.base import (
    EngineError,
    Event,
    Failed,
    Finished,
    GenerationParams,
    TextDelta,
    Usage,
)
from mixchat.engine.remote import RemoteEngine
from tests.remote.conftest import Served, free_port

HELLO = [Message(Role.USER, "Hello, who are you?")]


def collect(events: list[Event]) -> tuple[str, list[Usage], list[Finished], list[Failed]]:
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    usage = [e for e in events if isinstance(e, Usage)]
    finished = [e for e in events if isinstance(e, Finished)]
    failed = [e for e in events if isinstance(e, Failed)]
    return text, usage, finished, failed


def test_streams_a_reply_with_server_usage(served: Served) -> None:
    engine = served.engine()
    try:
        list(engine.load())
        params = GenerationParams(temperature=0.0, max_new_tokens=8)
        events = list(engine.stream(HELLO, "Be brief.", params, threading.Event()))
    finally:
        engine.close()
    text, usage, finished, failed = collect(events)
    assert not failed, failed
    assert text.strip()
    assert [f.reason for f in finished] in (["stop"], ["length"])
    assert len(usage) == 1 and usage[0].prompt_tokens > 0  # the server's own figures
    if finished[0].reason == "length":
        assert usage[0].completion_tokens == 8
    assert isinstance(events[-1], Finished)


def test_info_describes_the_endpoint(served: Served) -> None:
    engine = served.engine(context_size=4096)
    list(engine.load())
    info = engine.info()
    engine.close()
    assert (info.model_id, info.device, info.dtype, info.weight_bytes) == (
        served.model,
        served.url,
        "remote",
        0,
    )
    assert info.context_size == 4096


def test_cancel_mid_stream_is_prompt_and_the_next_reply_works(served: Served) -> None:
    engine = served.engine()
    cancel = threading.Event()
    long = GenerationParams(temperature=1.0, max_new_tokens=20000, seed=3)
    events: list[Event] = []
    cancelled_at = float("inf")
    try:
        stream = engine.stream(HELLO, None, long, cancel)
        for event in stream:
            events.append(event)
            if sum(isinstance(e, TextDelta) for e in events) == 3:
                cancel.set()
                cancelled_at = time.monotonic()
        elapsed = time.monotonic() - cancelled_at
        # The next request is answered even though the first asked for 20000 tokens:
        # closing the response made the server stop generating.
        started = time.monotonic()
        short = GenerationParams(temperature=0.0, max_new_tokens=4)
        after = list(engine.stream(HELLO, None, short, threading.Event()))
        next_s = time.monotonic() - started
    finally:
        engine.close()
    # Liveness, not speed: a cancel that did not close the stream would run on for
    # 20,000 tokens; no more than the chunk in flight arrives after it.
    after_cancel = sum(isinstance(e, TextDelta) for e in events) - 3
    assert after_cancel <= 1 and elapsed < 30
    assert isinstance(events[-1], Finished) and events[-1].reason == "cancelled"
    text, _, finished, failed = collect(after)
    assert not failed and text and finished[0].reason in ("stop", "length")
    assert next_s < 30


def test_unknown_model_fails_in_one_line(served: Served, tmp_path: Path) -> None:
    # transformers serve answers a model it cannot load with a bare 500.
    engine = RemoteEngine(Settings(model=str(tmp_path / "no-such-model")), served.url)
    events = list(engine.stream(HELLO, None, GenerationParams(), threading.Event()))
    engine.close()
    _, _, finished, failed = collect(events)
    assert not finished and len(failed) == 1
    assert failed[0].message.startswith(f"server error 500 from {served.url}")
    assert "\n" not in failed[0].message


def test_connection_refused_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    engine = RemoteEngine(Settings(model="m"), url, connect_timeout_s=2)
    with pytest.raises(EngineError) as caught:
        list(engine.load())
    message = str(caught.value)
    assert message.startswith(f"cannot reach {url}") and "refused" in message.lower()
    assert "\n" not in message
    events = list(engine.stream(HELLO, None, GenerationParams(), threading.Event()))
    assert events[-1] == Failed(message, kind="engine", unsent=True)  # nothing was asked
