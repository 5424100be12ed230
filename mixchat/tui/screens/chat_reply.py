"""The reply streaming into the chat screen: which reply is current (its key), its cancel
event, the buffer its text arrives through and the block it is drawn in.

The worker (``mixchat.tui.reply.run_reply``) only posts messages; the chat screen hands
``ReplyText``, ``ReplyUsage`` and ``ReplyDone`` to this controller, on the UI thread.
A message of an older reply (its key is not the current one) is ignored.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING

from mixchat.conversation import Message, Role, Status
from mixchat.engine.base import Engine
from mixchat.tui.messages import ReplyDone, ReplyText, ReplyUsage
from mixchat.tui.reply import ReplyBuffer, run_reply
from mixchat.tui.widgets.chat_view import AssistantBlock, cut_note
from mixchat.tui.widgets.status_bar import ReplyState
from mixchat.turn import Ending, Turn, TurnOutcome

if TYPE_CHECKING:
    from mixchat.tui.screens.chat import ChatScreen


class ReplyStream:
    """At most one reply at a time, streaming into a ``ChatScreen``."""

    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen
        self.generating = False
        self.exit_after = False  # leave the app once the reply has been saved
        self._key = 0
        self._cancel = threading.Event()
        self._buffer = ReplyBuffer()
        self._block: AssistantBlock | None = None

    @property
    def text(self) -> str | None:
        """The text of the reply streaming now, if any."""
        return self._block.source if self._block is not None else None

    async def start(self, engine: Engine, turn: Turn) -> None:
        """Start streaming the reply of ``turn`` (its question is committed)."""
        screen = self.screen
        recorder = turn.start()
        self._key += 1
        self._cancel = threading.Event()
        self.generating = True
        screen.status.reply_state = ReplyState.GENERATING
        screen.status.tokens_per_s = None
        self._buffer.reset()
        self._block = await screen.chat.add_assistant()
        if recorder.text:  # a reply being continued: it goes on from its text
            await self._block.append(recorder.text)
        reply_id = recorder.outcome.message_id
        screen.shown.appended(Message(Role.ASSISTANT, "", Status.INTERRUPTED, id=reply_id))
        work = functools.partial(
            run_reply, screen.post_message, self._buffer, self._key, engine, turn, self._cancel
        )
        screen.run_worker(work, thread=True, group="reply", exit_on_error=False)

    def stop(self) -> bool:
        """Ask the reply to stop (its text so far is kept); False if none streams."""
        if not self.generating:
            return False
        self._cancel.set()
        return True

    async def on_text(self, message: ReplyText) -> None:
        """Draw the text that has arrived."""
        if message.reply_key == self._key and self._block is not None:
            await self._block.append(self._buffer.drain())
            self.screen.status.tokens_per_s = self._buffer.tokens_per_s

    def on_usage(self, message: ReplyUsage) -> None:
        """Show the reply's figures."""
        if message.reply_key == self._key:
            self.screen.status.show_usage(message.usage, self._buffer.tokens_per_s)

    async def finish(self, message: ReplyDone) -> TurnOutcome | None:
        """Draw the end of the reply and show how it ended; its outcome (None: an older
        reply's message)."""
        if message.reply_key != self._key:
            return None
        screen = self.screen
        outcome = message.outcome
        block, self._block = self._block, None
        if block is not None:
            await block.append(self._buffer.drain())
            await block.finish()
            cut = cut_note(screen) if outcome.ending is Ending.LENGTH else ""
            block.set_status(outcome.status, outcome.error or cut)
        self.generating = False
        screen.status.reply_state = ReplyState.after(outcome)
        if outcome.error:
            screen.notify(outcome.error, title="Generation failed", severity="error", markup=False)
        return outcome
