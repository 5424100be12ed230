"""The chat screen follows the store: conversations made, renamed or deleted by another
process show in the list, and turns added to the open conversation (``mixchat ask -c``,
another window) show in the view, so the next prompt never holds text the user cannot see.

Changes are noticed cheaply: SQLite's ``PRAGMA data_version`` (``store.data_version()``)
moves only when another connection commits, and costs no disk read, so it is polled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from mixchat.store import NotFoundError, StoreError
from mixchat.tui.errors import notify_store_errors

if TYPE_CHECKING:
    from mixchat.tui.screens.chat import ChatScreen

STORE_POLL_S = 1.0  # how often the store is asked whether another process wrote to it


class StoreSync:
    """Polls the store for a ``ChatScreen`` and brings the screen up to date."""

    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen
        self._version: int | None = None
        # One change of the view at a time: a poll that lands while a send (or another
        # poll) is bringing the view up to date would show the same turn twice.
        self._lock = asyncio.Lock()

    def start(self) -> None:
        """Take the store's current state as seen, and poll from now on."""
        try:
            self._version = self.screen.store.data_version()
        except StoreError:
            self._version = None
        self.screen.set_interval(STORE_POLL_S, self.check)

    async def check(self) -> None:
        """Follow what other processes wrote: the list, and the open conversation (after
        the reply, if one streams: the reply's end brings the view up to date). A poll
        that finds the view being changed leaves it to the next one."""
        if self._lock.locked():
            return
        async with self._lock:
            await self._check()

    @contextlib.asynccontextmanager
    async def caught_up(self) -> AsyncIterator[None]:
        """For an action that changes the conversation (send, regenerate, continue): wait
        for a poll under way, bring the view up to date, and hold the poll off until the
        action has shown what it did."""
        async with self._lock:
            await self._check()
            yield

    async def _check(self) -> None:
        screen = self.screen
        try:
            version = screen.store.data_version()
        except StoreError:
            return
        if version == self._version:
            return
        self._version = version
        screen.sidebar.reload()
        if not screen.generating:
            await self.follow()

    @notify_store_errors
    async def follow(self) -> None:
        """Show the open conversation as the store holds it now."""
        screen, control = self.screen, self.screen.control
        if control.conversation is None:
            return
        try:
            fresh = screen.store.get_conversation(control.conversation.id)
        except NotFoundError:
            screen.edit.end(restore_draft=False)
            screen.notify("The open conversation was deleted elsewhere.", severity="warning")
            await control.new()
            return
        control.conversation = fresh
        if screen.edit.pending is not None and not screen.edit.still_applies(fresh.messages):
            screen.edit.end(restore_draft=False)
            screen.notify("The conversation changed elsewhere: the edit is cancelled.")
        if await screen.shown.follow(fresh.messages):
            control.count_context()
            control.offer_answer(say=False)
        control.mark_branches()  # a regenerate elsewhere makes versions here

    def notify(self, message: str, **kwargs: object) -> None:
        """For ``notify_store_errors``: a failed read is shown on the screen."""
        self.screen.notify(message, **kwargs)  # type: ignore[arg-type]
