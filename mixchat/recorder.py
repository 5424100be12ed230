"""A reply as it streams, recorded in the store, and what became of it (``TurnOutcome``).

The user's message is already committed; the reply row is created before the
first token (status interrupted), checkpointed at least every
``CHECKPOINT_INTERVAL_S`` while it streams, and finalized at the end, so a
process killed at any moment keeps its partial reply marked interrupted.

Streaming never waits on the database: checkpoints go to a writer thread that keeps only
the newest text, so while another program holds the database locked the reply goes on
(and is shown) and the writer catches up with one write once it can. The final write
waits for the writer; if the full reply could not be saved, ``ReplyNotSaved`` says
exactly what the database holds instead.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from mixchat.conversation import Message, Status
from mixchat.engine.base import ContextTrimmed, Event, FailureKind, Usage
from mixchat.store import ConversationStore, NotFoundError, StoreError

CHECKPOINT_INTERVAL_S = 0.5


class ReplyNotSaved(StoreError):
    """The reply was streamed (and shown) in full, but the store does not hold all of it.

    The message says why and what was saved; ``outcome`` is the reply as streamed.
    """

    def __init__(self, message: str, outcome: TurnOutcome, *, deleted: bool = False) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.deleted = deleted  # the conversation was deleted while the reply streamed


class Ending(enum.StrEnum):
    """How a turn ended."""

    COMPLETE = "complete"  # the model ended its answer
    LENGTH = "length"  # cut by the token limit (max_new_tokens): it can be continued
    STOPPED = "stopped"  # the user stopped it (Esc, a cancel)
    INTERRUPTED = "interrupted"  # a signal, a crash or a broken store stopped it
    FAILED = "failed"  # the model, the server or the prompt failed (``failure`` says which)


@dataclass
class TurnOutcome:
    """What became of a reply."""

    text: str = ""
    status: Status = Status.INTERRUPTED
    finish_reason: str | None = None
    usage: Usage | None = None
    error: str | None = None
    message_id: int | None = None
    events: list[Event] = field(default_factory=list)
    # Why the saved reply falls short of ``text`` (one line), when it does.
    not_saved: str | None = None
    ending: Ending = Ending.INTERRUPTED
    failure: FailureKind | None = None  # with Ending.FAILED
    unsent: bool = False  # it failed before the request reached the model

    @property
    def dropped_messages(self) -> int:
        """How many of the oldest messages were left out of the prompt to fit the context."""
        return sum(e.dropped_messages for e in self.events if isinstance(e, ContextTrimmed))


def _is_locked(error: StoreError) -> bool:
    cause = error.__cause__
    text = str(cause).lower()
    return isinstance(cause, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


class _CheckpointWriter:
    """A thread that writes the newest checkpoint of one reply, then its final version."""

    def __init__(self, store: ConversationStore, message_id: int, conversation_id: str) -> None:
        self._store = store
        self._message_id = message_id
        self._conversation_id = conversation_id
        self._cond = threading.Condition()
        self._pending: str | None = None  # newest text not yet written
        self._busy = False
        self._final: dict[str, Any] | None = None
        self.saved_chars = 0  # how much of the reply the database surely holds
        self.failure: StoreError | None = None  # the last write that failed
        self.deleted = False  # the row is gone: the conversation was deleted
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mixchat-checkpoints", daemon=True)
        self._thread.start()

    @property
    def finishing(self) -> bool:
        """The final version was handed over (it may still be being written)."""
        return self._final is not None

    @property
    def fatal(self) -> StoreError | None:
        """A failure that more writes cannot cure (disk full, read-only): stop the reply."""
        failure = self.failure
        if failure is None or self.deleted or _is_locked(failure):
            return None
        return failure

    def submit(self, text: str) -> None:
        """Queue ``text`` (the whole reply so far); replaces any text not yet written."""
        with self._cond:
            self._pending = text
            self._cond.notify_all()

    def wait_idle(self) -> None:
        """Wait until everything submitted so far was written (or failed)."""
        with self._cond:
            while (self._pending is not None or self._busy) and not self.done.is_set():
                self._cond.wait()

    def finish(
        self, text: str, status: Status, usage: Usage | None, finish_reason: str | None = None
    ) -> None:
        """Hand over the final version and wait for the writer to save it (or fail)."""
        u = usage
        with self._cond:
            self._final = {
                "content": text,
                "status": status,
                "finish_reason": finish_reason,
                "prompt_tokens": u.prompt_tokens if u else None,
                "completion_tokens": u.completion_tokens if u else None,
                "ttft_s": u.ttft_s if u else None,
                "duration_s": u.duration_s if u else None,
            }
            self._cond.notify_all()
        self.done.wait()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and self._final is None:
                    self._cond.wait()
                final, text = self._final, self._pending
                self._pending = None
                self._busy = True
            try:
                if final is not None:
                    self._write_final(final)
                elif text is not None and not self.deleted:
                    self._store.checkpoint_reply(
                        self._message_id, text, conversation_id=self._conversation_id
                    )
                    self.saved_chars, self.failure = len(text), None
            except StoreError as exc:
                self._failed(exc)
            except Exception as exc:  # e.g. the store was closed under us: never die silently
                self._failed(StoreError(f"cannot save the reply: {type(exc).__name__}: {exc}"))
            finally:
                with self._cond:
                    self._busy = False
                    if final is not None:
                        self.done.set()
                    self._cond.notify_all()
            if final is not None:
                # One try, whatever came of it: what ``finish`` reports must stay true, so
                # nothing is written after it (a retry is a new writer's job).
                return

    def _write_final(self, final: dict[str, Any]) -> None:
        if self.deleted:
            return
        self._store.finish_reply(self._message_id, **final, conversation_id=self._conversation_id)
        self.saved_chars, self.failure = len(final["content"]), None

    def _failed(self, exc: StoreError) -> None:
        self.failure = exc
        if isinstance(exc, NotFoundError):
            self.deleted = True


class ReplyRecorder:
    """Accumulates a streamed reply and keeps its row in the store current."""

    def __init__(
        self,
        store: ConversationStore | None,
        conversation_id: str | None,
        continuing: Message | None = None,
        answering: int | None = None,
    ) -> None:
        """A new reply row in ``conversation_id``, at the end of its shown path (or below
        message ``answering``: a question answered again, beside its earlier answers); or,
        with ``continuing`` (a saved reply), that reply goes on: its text is kept and what
        streams is added to it."""
        self._store = store
        self.outcome = TurnOutcome()
        self._parts: list[str] = [continuing.content] if continuing is not None else []
        self._last_checkpoint = time.monotonic()
        self._writer: _CheckpointWriter | None = None
        self._conversation_id = conversation_id
        if store is not None and conversation_id is not None:
            if continuing is not None and continuing.id is not None:
                message_id = store.reopen_reply(continuing.id, conversation_id).id
            elif answering is not None:
                message_id = store.start_reply(conversation_id, parent_id=answering).id
            else:
                message_id = store.start_reply(conversation_id).id
            assert message_id is not None
            self.outcome.message_id = message_id
            self._writer = _CheckpointWriter(store, message_id, conversation_id)

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def add(self, delta: str) -> None:
        """Append streamed text; queue a checkpoint if the last one is old enough."""
        self._parts.append(delta)
        if time.monotonic() - self._last_checkpoint >= CHECKPOINT_INTERVAL_S:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Queue the reply so far for the writer; never waits for the database."""
        if self._writer is not None:
            self._writer.submit(self.text)
        self._last_checkpoint = time.monotonic()

    def flush(self) -> None:
        """Wait until the queued checkpoints are written (or failed)."""
        if self._writer is not None:
            self._writer.wait_idle()

    @property
    def saved(self) -> bool:
        """Whether the store holds the reply as it was finished (or stopped)."""
        writer = self._writer
        return writer is not None and writer.done.is_set() and writer.failure is None

    def settle(self) -> None:
        """After an interruption: let a final save in progress end, or save the reply so
        far as interrupted; a failure is left in ``outcome.not_saved``."""
        writer = self._writer
        if writer is None:
            return
        if writer.finishing:
            writer.done.wait()
            return
        try:
            self.finish(Status.INTERRUPTED)
        except StoreError as exc:
            self.outcome.not_saved = str(exc)

    def raise_if_broken(self) -> None:
        """Raise the store's error if saving failed for good (disk full, read-only)."""
        if self._writer is not None and self._writer.fatal is not None:
            raise self._writer.fatal

    def finish(self, status: Status, usage: Usage | None = None) -> TurnOutcome:
        """Finalize the reply with its status and usage, waiting for the writer.

        Raises ``ReplyNotSaved`` when the store does not hold the whole reply (the
        conversation was deleted meanwhile, or the database stayed locked), and the store's
        error when it cannot be written at all.
        """
        self.outcome.text = self.text
        self.outcome.status = status
        self.outcome.usage = usage or self.outcome.usage
        writer = self._writer
        if writer is None:
            return self.outcome
        if writer.done.is_set():  # finished before (e.g. a retry with another status)
            writer = self._writer = _CheckpointWriter(
                writer._store, writer._message_id, writer._conversation_id
            )
        reason = self.outcome.finish_reason if status is Status.COMPLETE else None
        writer.finish(self.outcome.text, status, self.outcome.usage, reason)
        if writer.failure is None:
            return self.outcome
        if writer.deleted:
            message = (
                "the conversation was deleted while the answer streamed; "
                "the answer was shown but not saved"
            )
            self.outcome.not_saved = message
            raise ReplyNotSaved(message, self.outcome, deleted=True)
        if _is_locked(writer.failure):
            total = len(self.outcome.text)
            kept = (
                f"the saved copy holds its first {writer.saved_chars:,} of {total:,} characters"
                if writer.saved_chars
                else "none of it was saved"
            )
            message = f"the answer was shown but not saved in full: {writer.failure}; {kept}"
            self.outcome.not_saved = message
            raise ReplyNotSaved(message, self.outcome)
        raise writer.failure
