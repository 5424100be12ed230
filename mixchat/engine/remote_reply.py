"""One reply from a server: read events on a thread, check them, yield engine events.

The HTTP request runs on a reader thread that hands events to the caller through a
bounded queue, so a cancel, the idle timeout (no data event for
``server_idle_timeout_s``, which also catches a server dripping a byte at a time) and
the overall deadline (``server_reply_timeout_s``) are seen within ``POLL_S`` even
while the server is silent. The reader stops, closing the response (which tells the
server to stop generating), as soon as the caller stops listening.

``--max-tokens`` is enforced here too: a server that sends more text chunks than
``max_new_tokens`` (or more than ``CHARS_PER_TOKEN`` characters a token) is cut off
and the reply ends as ``length``, so an endless stream cannot run on.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from mixchat.engine.base import Event, Failed, FailureKind, Finished, Notice, TextDelta, Usage
from mixchat.engine.redact import StreamRedactor
from mixchat.engine.remote_errors import Context, deadline_message, describe, idle_message
from mixchat.engine.remote_fields import read_chunk, shown
from mixchat.engine.remote_http import StreamEnd
from mixchat.engine.remote_sse import SSEEvent

POLL_S = 0.05  # how often a waiting stream looks at its cancel event and clocks
CHARS_PER_TOKEN = 64  # no real token is longer: a bound on text per --max-tokens
_QUEUE = 64  # events waiting for the caller; the reader waits when it is full


@dataclass
class ReplyState:
    """What one reply has produced so far, across tries."""

    max_tokens: int
    started: float  # perf_counter at the start of the request
    redactor: StreamRedactor
    chunks: int = 0  # text chunks: at least one token each
    chars: int = 0
    ttft: float | None = None
    emitted: bool = False  # text was shown: no more retries
    usage: dict[str, int] = field(default_factory=dict)
    finish: str | None = None
    done: bool = False  # [DONE] arrived
    events: int = 0  # data events in this try
    noticed: set[str] = field(default_factory=set)

    def new_try(self) -> None:
        """Forget what a failed try (that showed no text) said about its end."""
        self.usage, self.finish, self.done, self.events = {}, None, False, 0

    def usage_event(self) -> Usage:
        """The server's token counts where it sent valid ones, else chunk counts."""
        duration = time.perf_counter() - self.started
        prompt = self.usage.get("prompt", 0)
        completion = self.usage.get("completion", self.chunks)
        decode_s = duration - (self.ttft or 0.0)
        rate = (completion - 1) / decode_s if completion > 1 and decode_s > 0 else None
        cached = min(self.usage.get("cached", 0), prompt)
        return Usage(prompt, completion, self.ttft, duration, rate, cached_tokens=cached)


def _json_int(text: str) -> int | float:
    """A JSON integer; one too long to be any count (or for Python to parse) is read as
    infinity, which the field checks then refuse like any other bad number."""
    return int(text) if len(text) <= 24 else math.inf


def _put(items: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            items.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _read(events: Iterator[Any], items: queue.Queue[Any], stop: threading.Event) -> None:
    """Reader thread: pass events on until they end or nobody listens; errors too."""
    try:
        for event in events:
            if not _put(items, event, stop):
                return
    except Exception as exc:
        _put(items, exc, stop)
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()  # leaves the response's with-block: the connection closes


class ReplyReader:
    """Turns one try's events into engine events; see the module docstring."""

    def __init__(
        self,
        ctx: Context,
        say: Callable[[str], str],
        state: ReplyState,
        cancel: threading.Event,
        deadline: float,
    ) -> None:
        self.ctx = ctx
        self.say = say  # one line, secrets redacted
        self.state = state
        self.cancel = cancel
        self.deadline = deadline

    # -- endings ------------------------------------------------------------

    def flush(self) -> Iterator[Event]:
        """Text held back by the redactor (it was not a secret after all)."""
        rest = self.state.redactor.flush()
        if rest:
            yield TextDelta(rest)

    def fail(
        self, message: str, kind: FailureKind = FailureKind.ENGINE, unsent: bool = False
    ) -> Iterator[Event]:
        """End with a failure; the text so far stays."""
        yield from self.flush()
        yield Failed(self.say(message), kind=kind, unsent=unsent)

    def cancelled(self) -> Iterator[Event]:
        """End as cancelled, with what usage there is."""
        yield from self.flush()
        yield self.state.usage_event()
        yield Finished("cancelled")

    def notice(self, key: str, line: str) -> Iterator[Event]:
        """A notice, once per kind per reply."""
        if key not in self.state.noticed:
            self.state.noticed.add(key)
            yield Notice(self.say(line))

    # -- one try ------------------------------------------------------------

    def attempt(
        self, open_events: Callable[[threading.Event], Iterator[SSEEvent | StreamEnd]]
    ) -> Generator[Event, None, BaseException | None]:
        """Read one try to its end. Returns the exception of a try that failed before any
        text was shown (the caller may retry it); otherwise everything, the final
        ``Finished`` or ``Failed`` included, has been yielded and it returns None."""
        state = self.state
        state.new_try()
        items: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE)
        stop = threading.Event()
        reader = threading.Thread(
            target=_read, args=(open_events(stop), items, stop), name="mixchat-remote", daemon=True
        )
        reader.start()
        idle_s = self.ctx.settings.server_idle_timeout_s
        last_data = time.monotonic()
        foreign: str | None = None
        try:
            while True:
                if self.cancel.is_set():
                    yield from self.cancelled()
                    return None
                now = time.monotonic()
                if now >= self.deadline:
                    yield from self.fail(deadline_message(self.ctx))
                    return None
                if now - last_data >= idle_s:
                    yield from self.fail(idle_message(self.ctx))
                    return None
                try:
                    item = items.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if isinstance(item, StreamEnd):
                    foreign = item.foreign_line
                    break
                if isinstance(item, BaseException):
                    if not state.emitted:
                        return item
                    yield from self.fail(describe(item, self.ctx, mid_reply=True))
                    return None
                last_data = time.monotonic()
                state.events += 1
                verdict = yield from self._event(item)
                if verdict == "end":
                    break
                if verdict == "failed":
                    return None
        finally:
            stop.set()  # also when the caller abandons the generator (Ctrl-C)
        yield from self._end(foreign)
        return None

    def _event(self, event: SSEEvent) -> Generator[Event, None, str]:
        """Handle one data event: "more", "end" (done, or cut off) or "failed"."""
        state, where = self.state, self.ctx.endpoint
        if event.data.strip() == "[DONE]":
            state.done = True
            return "end"
        try:
            data = json.loads(event.data, parse_int=_json_int)
        except (ValueError, RecursionError):
            yield from self.fail(f"{where} sent a malformed event: {event.data[:80]}")
            return "failed"
        view = read_chunk(data, event.event)
        for key, line in view.notices:
            yield from self.notice(key, line)
        if view.error is not None:
            during = " mid-reply" if state.emitted else ""
            yield from self.fail(f"{where} reported an error{during}: {view.error}")
            return "failed"
        state.usage.update(view.usage)
        state.finish = view.finish or state.finish
        if not view.text:
            return "more"
        budget = state.max_tokens * CHARS_PER_TOKEN - state.chars
        if state.chunks >= state.max_tokens or budget <= 0:
            yield from self._cut_off()
            return "end"
        text = view.text[:budget]
        if state.ttft is None:
            state.ttft = time.perf_counter() - state.started
        state.chunks += 1
        state.chars += len(text)
        state.emitted = True  # the first token has arrived: never retry from here
        safe = state.redactor.feed(text)
        if safe:
            yield TextDelta(safe)
        if len(text) < len(view.text):
            yield from self._cut_off()
            return "end"
        return "more"

    def _cut_off(self) -> Iterator[Event]:
        n = self.state.max_tokens
        self.state.finish = "length"
        yield from self.notice(
            "max_tokens",
            f"{self.ctx.endpoint} kept sending past --max-tokens {n}; stopped reading "
            "(raise max_new_tokens for longer replies)",
        )

    def _end(self, foreign: str | None) -> Iterator[Event]:
        state, where = self.state, self.ctx.endpoint
        if state.finish is None and state.done:
            state.finish = "stop"  # the server said the stream is complete
            yield from self.notice(
                "finish_reason", f"{where} sent no finish_reason; took the reply as complete"
            )
        if state.finish is None:
            if state.events == 0 and not state.emitted and (foreign or "").startswith("<"):
                yield from self.fail(
                    f"{where} answered with an HTML page instead of an event stream; "
                    "is --endpoint the address of its OpenAI-compatible API?"
                )
            elif state.events == 0 and not state.emitted:
                what = f"; it began: {shown(foreign)}" if foreign else ""
                yield from self.fail(f"{where} ended the stream without sending any event{what}")
            else:
                yield from self.fail(f"{where} ended the stream before the reply finished")
            return
        yield from self.flush()
        yield state.usage_event()
        yield Finished("length" if state.finish == "length" else "stop")
