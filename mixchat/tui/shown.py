"""What the chat view shows of the open conversation, message by message.

Another window or ``mixchat ask -c`` can add to, cut or rewrite the open conversation.
The view is brought up to date with what the store holds by redrawing only from the
first message that differs, so a long conversation is not drawn again for one new turn.
Each redraw is whole before the next begins (the store's poll, a reply's end and the user's
actions all redraw, from separate tasks): two never both draw the same new turn.
"""

from __future__ import annotations

import asyncio

from mixchat.conversation import Message, Role, Status
from mixchat.prompt import prompt_messages
from mixchat.tui.widgets.chat_view import ChatView

Shown = tuple[int | None, Role, Status, str]


def _key(message: Message) -> Shown:
    return (message.id, message.role, message.status, message.content)


class ShownConversation:
    """The messages the ``ChatView`` shows, to compare with the store's."""

    def __init__(self, chat: ChatView) -> None:
        self._chat = chat
        self._shown: list[Shown] = []
        self._drawing = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._shown)

    async def show(self, messages: list[Message]) -> None:
        """Draw ``messages`` anew."""
        async with self._drawing:
            await self._show(messages)

    async def _show(self, messages: list[Message]) -> None:
        await self._chat.show_conversation(messages)
        self._shown = [_key(m) for m in messages]

    def appended(self, message: Message) -> None:
        """A block for ``message`` was added at the end (a sent message, a reply begun)."""
        self._shown.append(_key(message))

    def settled(self, message: Message) -> None:
        """The streamed reply with ``message``'s id ended as ``message`` says."""
        for index, shown in enumerate(self._shown):
            if shown[0] == message.id and shown[1] is message.role:
                self._shown[index] = _key(message)

    async def drop_from(self, index: int) -> None:
        """Remove the messages from ``index`` on (regenerate, an edit resent)."""
        async with self._drawing:
            await self._chat.remove_last(max(0, len(self._shown) - index))
            del self._shown[index:]

    async def follow(self, messages: list[Message]) -> bool:
        """Show ``messages`` (the store's), redrawing from the first that differs.
        True if anything changed."""
        async with self._drawing:
            return await self._follow(messages)

    async def _follow(self, messages: list[Message]) -> bool:
        fresh = [_key(m) for m in messages]
        if fresh == self._shown:
            return False
        same = 0
        for old, new in zip(self._shown, fresh, strict=False):
            if old != new:
                break
            same += 1
        stale = len(self._shown) - same
        if stale > len(self._chat.query(".message")):  # the change is among undrawn ones
            await self._show(messages)
            return True
        await self._chat.remove_last(stale)
        await self._chat.add_messages(messages[same:])
        self._shown = fresh
        return True


def left_out(messages: list[Message], dropped: int) -> int:
    """How many of ``messages`` (from the first) hold the ``dropped`` oldest messages of
    their prompt: those and the unsendable ones among them are what the prompt left out."""
    if dropped <= 0:
        return 0
    sent = {id(m) for m in prompt_messages(messages)}
    reached = 0
    for index, message in enumerate(messages):
        reached += id(message) in sent
        if reached == dropped:
            return index + 1
    return len(messages)
