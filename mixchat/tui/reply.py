"""A reply on the worker thread, and its text handed to the UI thread.

``run_reply`` runs on a thread worker: it streams from the engine into the store and only
posts messages. Text goes through a ``ReplyBuffer``: the worker adds each delta as it
arrives, the UI drains everything pending in one go, so a fast model costs one message
per UI turn, not one per token. Arrival times give the rate shown while a reply streams
(one delta is about one token for the engines here).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from textual.message import Message as UIMessage

from mixchat.conversation import Status
from mixchat.engine.base import ContextTrimmed, Engine, Event, TextDelta, Usage
from mixchat.store import StoreError
from mixchat.tui.messages import ContextTrimmedNote, ReplyDone, ReplyText, ReplyUsage
from mixchat.turn import Ending, Turn


class ReplyBuffer:
    """Thread-safe: ``add`` runs on the worker thread, the rest on the UI thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: list[str] = []
        self._posted = False
        self._deltas = 0
        self._first: float | None = None
        self._last: float | None = None

    def reset(self) -> None:
        """Forget everything: a new reply starts."""
        with self._lock:
            self._parts.clear()
            self._posted = False
            self._deltas = 0
            self._first = self._last = None

    def add(self, text: str) -> bool:
        """Queue a delta; True when the caller must tell the UI (nothing was pending)."""
        now = time.perf_counter()
        with self._lock:
            self._parts.append(text)
            self._deltas += 1
            if self._first is None:
                self._first = now
            self._last = now
            if self._posted:
                return False
            self._posted = True
            return True

    def drain(self) -> str:
        """Everything pending, in order; the next ``add`` tells the UI again."""
        with self._lock:
            text = "".join(self._parts)
            self._parts.clear()
            self._posted = False
        return text

    @property
    def tokens_per_s(self) -> float | None:
        """Deltas per second since the first one (None until two have arrived)."""
        with self._lock:
            if self._first is None or self._last is None or self._deltas < 2:
                return None
            elapsed = self._last - self._first
            return (self._deltas - 1) / elapsed if elapsed > 0 else None


def run_reply(
    post: Callable[[UIMessage], object],
    buffer: ReplyBuffer,
    key: int,
    engine: Engine,
    turn: Turn,
    cancel: threading.Event,
) -> None:
    """Stream one reply of ``turn`` (``turn.start()`` done; on a worker thread), posting
    ``ReplyText`` when text waits in ``buffer``, ``ReplyUsage``, ``ContextTrimmedNote`` and,
    always, ``ReplyDone``."""

    def on_event(event: Event) -> None:
        if isinstance(event, TextDelta):
            if buffer.add(event.text):  # else a ReplyText already posted drains it too
                post(ReplyText(key))
        elif isinstance(event, Usage):
            post(ReplyUsage(key, event))
        elif isinstance(event, ContextTrimmed):
            post(ContextTrimmedNote(event.dropped_messages))

    try:
        outcome = turn.run(engine, cancel, on_event)
    except Exception as exc:  # the engine or the store broke: keep what we can, say why
        recorder = turn.recorder
        assert recorder is not None
        try:
            outcome = recorder.finish(Status.ERROR)
        except StoreError:
            outcome = recorder.outcome
            outcome.status = Status.ERROR
        outcome.ending = Ending.INTERRUPTED
        outcome.error = (
            f"{type(exc).__name__}: {exc}" if not isinstance(exc, StoreError) else str(exc)
        )
    post(ReplyDone(key, outcome))
