"""The conversation: message blocks in an anchored scroll view.

User text is shown as plain text (never markup); assistant text is Markdown,
streamed through Textual's ``MarkdownStream`` so a token never re-renders the
whole message. Control characters are neutralised before display.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Markdown, Static
from textual.widgets._markdown import MarkdownStream

from mixchat.conversation import Message, Role, Status
from mixchat.textsafe import neutralize

STATUS_LABEL = {Status.INTERRUPTED: "stopped", Status.ERROR: "error"}


class UserBlock(Static):
    """A user message, as literal text."""

    def __init__(self, content: str) -> None:
        super().__init__(Text(neutralize(content)), classes="message user")
        self.source = content


class AssistantBlock(Vertical):
    """An assistant message: Markdown body plus a status line."""

    def __init__(self, content: str = "", status: Status | None = Status.COMPLETE) -> None:
        super().__init__(classes="message assistant")
        self.source = content
        self._initial_status = status
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        yield Markdown(neutralize(self.source), open_links=False)
        yield Label("", classes="status")

    def on_mount(self) -> None:
        self.set_status(self._initial_status)

    @property
    def markdown(self) -> Markdown:
        return self.query_one(Markdown)

    def set_status(self, status: Status | None, note: str = "") -> None:
        """Show 'stopped', 'error: ...' or nothing under the message."""
        label = self.query_one(".status", Label)
        text = STATUS_LABEL.get(status, "") if status is not None else ""
        if note:
            text = f"{text}: {note}" if text else note
        label.update(Text(neutralize(text)))
        label.display = bool(text)

    async def append(self, text: str) -> None:
        """Stream more Markdown into the body."""
        if not text:
            return
        self.source += text
        if self._stream is None:
            self._stream = Markdown.get_stream(self.markdown)
        await self._stream.write(neutralize(text))

    async def finish(self) -> None:
        """Flush and stop the stream."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None


class ChatView(VerticalScroll):
    """All messages of the open conversation; stays at the bottom while streaming."""

    def on_mount(self) -> None:
        self.anchor()

    async def show_conversation(self, messages: list[Message]) -> None:
        """Replace the view with ``messages``."""
        await self.remove_children()
        blocks = [self._block(m) for m in messages]
        if blocks:
            await self.mount_all(blocks)
        self.scroll_end(animate=False)
        self.anchor()

    @staticmethod
    def _block(message: Message) -> Static | AssistantBlock:
        if message.role is Role.USER:
            return UserBlock(message.content)
        return AssistantBlock(message.content, message.status)

    async def add_user(self, content: str) -> UserBlock:
        """Append a user message."""
        block = UserBlock(content)
        await self.mount(block)
        self.anchor()
        return block

    async def add_assistant(self) -> AssistantBlock:
        """Append an empty assistant message to stream into."""
        block = AssistantBlock("", None)
        await self.mount(block)
        self.anchor()
        return block

    async def remove_last(self, count: int) -> None:
        """Drop the last ``count`` blocks (regenerate, edit)."""
        children = list(self.query(".message"))
        for child in children[len(children) - count :] if count else []:
            await child.remove()
