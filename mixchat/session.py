"""One reply, end to end: stream from an engine while checkpointing into the store.

The user's message is already committed; the reply row is created before the
first token (status interrupted), checkpointed at least every
``CHECKPOINT_INTERVAL_S`` while it streams, and finalized at the end, so a
process killed at any moment keeps its partial reply marked interrupted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mixchat.conversation import Message, Status
from mixchat.engine.base import (
    Engine,
    Event,
    Failed,
    Finished,
    GenerationParams,
    TextDelta,
    Usage,
)
from mixchat.store import ConversationStore

CHECKPOINT_INTERVAL_S = 0.5


@dataclass
class ReplyOutcome:
    """What became of a reply."""

    text: str = ""
    status: Status = Status.INTERRUPTED
    finish_reason: str | None = None
    usage: Usage | None = None
    error: str | None = None
    message_id: int | None = None
    events: list[Event] = field(default_factory=list)


class ReplyRecorder:
    """Accumulates a streamed reply and keeps its row in the store current."""

    def __init__(self, store: ConversationStore | None, conversation_id: str | None) -> None:
        self._store = store
        self.outcome = ReplyOutcome()
        self._parts: list[str] = []
        self._last_checkpoint = time.monotonic()
        self._dirty = False
        if store is not None and conversation_id is not None:
            self.outcome.message_id = store.start_reply(conversation_id).id

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def add(self, delta: str) -> None:
        """Append streamed text; checkpoint if the last one is old enough."""
        self._parts.append(delta)
        self._dirty = True
        now = time.monotonic()
        if now - self._last_checkpoint >= CHECKPOINT_INTERVAL_S:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Write the reply so far."""
        if self._store is not None and self.outcome.message_id is not None and self._dirty:
            self._store.checkpoint_reply(self.outcome.message_id, self.text)
        self._dirty = False
        self._last_checkpoint = time.monotonic()

    def finish(self, status: Status, usage: Usage | None = None) -> ReplyOutcome:
        """Finalize the reply with its status and usage."""
        self.outcome.text = self.text
        self.outcome.status = status
        self.outcome.usage = usage or self.outcome.usage
        if self._store is not None and self.outcome.message_id is not None:
            u = self.outcome.usage
            self._store.finish_reply(
                self.outcome.message_id,
                self.outcome.text,
                status,
                prompt_tokens=u.prompt_tokens if u else None,
                completion_tokens=u.completion_tokens if u else None,
                ttft_s=u.ttft_s if u else None,
                duration_s=u.duration_s if u else None,
            )
        return self.outcome


def stream_reply(
    engine: Engine,
    recorder: ReplyRecorder,
    history: Sequence[Message],
    system_prompt: str | None,
    params: GenerationParams,
    cancel: threading.Event,
    on_event: Callable[[Event], None],
) -> ReplyOutcome:
    """Run one reply, recording it; ``on_event`` sees every event (for display).

    A ``KeyboardInterrupt`` cancels generation, saves the partial reply as
    interrupted and propagates.
    """
    try:
        for event in engine.stream(history, system_prompt, params, cancel):
            recorder.outcome.events.append(event)
            if isinstance(event, TextDelta):
                recorder.add(event.text)
            elif isinstance(event, Usage):
                recorder.outcome.usage = event
            elif isinstance(event, Finished):
                recorder.outcome.finish_reason = event.reason
            elif isinstance(event, Failed):
                recorder.outcome.error = event.message
            on_event(event)
    except BaseException:
        cancel.set()
        recorder.finish(Status.INTERRUPTED)
        raise
    if recorder.outcome.error is not None:
        return recorder.finish(Status.ERROR)
    if recorder.outcome.finish_reason in ("stop", "length"):
        return recorder.finish(Status.COMPLETE)
    return recorder.finish(Status.INTERRUPTED)
