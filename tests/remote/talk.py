"""Ask a server for one reply through the remote engine and look at the events."""

from __future__ import annotations

import threading

from mixchat.config import Settings
from mixchat.conversation import Message, Role
from mixchat.engine.base import Event, Failed, Finished, GenerationParams, Notice, TextDelta, Usage
from mixchat.engine.remote import RemoteEngine

HELLO = [Message(Role.USER, "hi")]


def engine_for(url: str, model: str = "ok", **settings: object) -> RemoteEngine:
    """A remote engine with these settings (``server_*`` limits among them)."""
    return RemoteEngine(Settings(model=model, **settings), url)  # type: ignore[arg-type]


def converse(
    url: str, *, max_tokens: int = 16, waits: list[float] | None = None, **settings: object
) -> list[Event]:
    """All events of one reply; retry waits are recorded in ``waits`` instead of slept."""
    engine = engine_for(url, **settings)
    if waits is not None:

        def record(seconds: float, cancel: threading.Event) -> bool:
            waits.append(seconds)
            return cancel.is_set()

        engine.wait = record
    params = GenerationParams(temperature=0.0, max_new_tokens=max_tokens)
    try:
        return list(engine.stream(HELLO, None, params, threading.Event()))
    finally:
        engine.close()


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def notices(events: list[Event]) -> list[str]:
    return [e.message for e in events if isinstance(e, Notice)]


def failure(events: list[Event]) -> Failed:
    """The one failure, which ends the events and is one line."""
    failed = [e for e in events if isinstance(e, Failed)]
    assert len(failed) == 1 and events[-1] is failed[0], events[-3:]
    assert not any(isinstance(e, Finished) for e in events)
    assert "\n" not in failed[0].message and len(failed[0].message) < 400
    return failed[0]


def finished(events: list[Event]) -> tuple[Finished, Usage]:
    """The reply ended normally: its ``Finished`` and ``Usage``."""
    assert not any(isinstance(e, Failed) for e in events), events[-3:]
    assert isinstance(events[-1], Finished) and isinstance(events[-2], Usage), events[-3:]
    return events[-1], events[-2]
