"""The conversation: message blocks in an anchored scroll view.

User text is shown as plain text (never markup); assistant text is Markdown. Control
characters are neutralised before display.

A streaming reply is rendered by ``ReplyRenderer``. It feeds ``Markdown.append``, as
Textual's ``MarkdownStream`` does, with the deltas the reply stream
(``screens/chat_reply``) has coalesced, but works around what makes that stream slow
down or go wrong as a reply grows:

- a growing top-level code fence is re-parsed and re-highlighted in full on every update:
  while it is open, its ``CodeFence`` is fed the new text directly (see ``code_stream``)
  and Markdown gets the text back once the fence closes;
- every block of a ``Markdown`` widget is arranged again on each layout pass: the reply
  is split into Markdown *segments* of a couple of dozen top-level blocks, cut only just
  after a blank line that ended a block for good, so finished segments keep their layout;
- ``Markdown.append`` re-parses from the start of the last block only, so a block that
  turns out to continue the one before it ("2. item" after a list and a blank line) would
  stay separate: such blocks are rendered again together (``_rejoin``).

A finished reply looks exactly like the reply rendered from its whole text, which is how a
saved message is shown (one ``ChatMarkdown`` widget): each block is Textual's own, and the
spacing where segments meet is set to what one widget would give. The tests stream replies
in many chunkings and compare the screens cell by cell.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.dom import DOMNode
from textual.widget import Widget
from textual.widgets import Button, Label, Markdown, Static

from mixchat.conversation import Message, Role, Status
from mixchat.textsafe import neutralize
from mixchat.tui.actions import Where, bindings
from mixchat.tui.keymap import keymap_of
from mixchat.tui.widgets.code_stream import ChatMarkdown
from mixchat.tui.widgets.long_text import (
    MAX_SHOWN_BLOCKS,
    MAX_SHOWN_CHARS,
    Head,
    markdown_head,
    plain_head,
    too_long_note,
)
from mixchat.tui.widgets.reply_renderer import ReplyRenderer

STATUS_LABEL = {Status.INTERRUPTED: "stopped", Status.ERROR: "error"}


def cut_note(node: DOMNode) -> str:
    """The note under a reply cut by the token limit: how to continue it."""
    return f"cut at the token limit: {keymap_of(node).say('continue_reply')} continues it"


# Line and paragraph separators: Python's str.splitlines (which Textual's Markdown uses to
# count lines) breaks on them but Markdown does not, so they are shown escaped.
_SEPARATORS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029"})


def markdown_text(text: str) -> str:
    """Model text as it is given to the Markdown widgets: controls neutralised."""
    return neutralize(text).translate(_SEPARATORS)


class UserBlock(Static):
    """A user message, as literal text (a very long one: its head and a note)."""

    def __init__(self, content: str) -> None:
        head = plain_head(content)
        text = Text(neutralize(head.text))
        if head.truncated:
            text.append("\n\n" + too_long_note(head, whole=""), style="italic")
        super().__init__(text, classes="message user")
        self.source = content
        self._text = text

    def set_branch(self, label: str) -> None:
        """Show ``label`` ("2/3 ...": this version among the edited ones) under the text."""
        text = self._text.copy()
        if label:
            text.append("\n" + label, style="dim")
        self.update(text)


class AssistantBlock(Vertical):
    """An assistant message: Markdown body (one or more segments) plus a status line.

    A very long message is rendered up to the budgets of ``long_text``, saved or
    streamed, with a note under it; ``source`` always holds the whole text.
    """

    def __init__(
        self, content: str = "", status: Status | None = Status.COMPLETE, note: str = ""
    ) -> None:
        super().__init__(classes="message assistant")
        self._pieces = [content]  # joined on demand: a long stream is not copied per delta
        self._initial_status = status
        self._initial_note = note
        self._renderer: ReplyRenderer | None = None
        self._shown_chars = 0  # of a streamed reply, given to the renderer
        self._cut = False  # a streamed reply went over the budget: the rest is not shown

    @property
    def source(self) -> str:
        """The whole text of the message."""
        if len(self._pieces) > 1:
            self._pieces = ["".join(self._pieces)]
        return self._pieces[0]

    @source.setter
    def source(self, text: str) -> None:
        self._pieces = [text]

    def compose(self) -> ComposeResult:
        head = markdown_head(self.source)
        yield ChatMarkdown(markdown_text(head.text), open_links=False)
        if head.truncated:
            yield Label(Text(too_long_note(head)), classes="too-long")
        yield Label("", classes="status")

    def on_mount(self) -> None:
        self.set_status(self._initial_status, self._initial_note)

    @property
    def markdown(self) -> Markdown:
        """The first Markdown segment (the only one unless a long reply was streamed)."""
        return self.query(Markdown).first()

    @property
    def segments(self) -> list[Markdown]:
        """The Markdown widgets of the body, in order."""
        return list(self.query_children(Markdown))

    def set_status(self, status: Status | None, note: str = "") -> None:
        """Show 'stopped', 'error: ...' or nothing under the message."""
        label = self.query_one(".status", Label)
        text = STATUS_LABEL.get(status, "") if status is not None else ""
        if note:
            text = f"{text}: {note}" if text else note
        label.update(Text(neutralize(text)))
        label.display = bool(text)

    def set_branch(self, label: str) -> None:
        """Show ``label`` ("2/3 ...": this answer among its siblings) under the message."""
        found = self.query(".branch")
        if found:
            found.first(Label).update(Text(label))
        elif label:
            self.mount(Label(Text(label), classes="branch"), before=self.query_one(".status"))

    async def append(self, text: str) -> None:
        """Stream more Markdown into the body (the caller coalesces deltas)."""
        if not text:
            return
        self._pieces.append(text)
        if self._cut:
            self._show_too_long()
            return
        if self._renderer is None:
            self._renderer = ReplyRenderer(self, self.markdown)
        over = False
        room = MAX_SHOWN_CHARS - self._shown_chars
        widgets = self._widgets() + text.count("\n") + text.count("|") if "\n" in text else 0
        if len(text) > room or widgets > MAX_SHOWN_BLOCKS:
            # Near a budget: the head of everything so far, as a saved message would get.
            shown = self._shown_chars
            head = markdown_head(self.source[: shown + len(text)])
            over = head.truncated
            text = text[: max(0, len(head.text) - shown)]
        if text:
            self._shown_chars += len(text)
            await self._renderer.write(markdown_text(text))
        if over:
            self._cut = True
            await self.finish()
            self._show_too_long()

    def _widgets(self) -> int:
        return sum(1 for segment in self.segments for _ in segment.walk_children())

    def _show_too_long(self) -> None:
        head = Head(self.source[: self._shown_chars], len(self.source))
        note = Text(too_long_note(head))
        found = self.query(".too-long")
        if found:
            found.first(Label).update(note)
        else:
            self.mount(Label(note, classes="too-long"), before=self.query_one(".status"))

    async def finish(self) -> None:
        """Render whatever is still held back; the body is final after this."""
        if self._renderer is not None:
            await self._renderer.finish()
            self._renderer = None


INITIAL_MESSAGES = 40  # rendered when a conversation opens; older ones on request


class ChatView(VerticalScroll):
    """All messages of the open conversation; stays at the bottom while streaming.

    Focused, it has the keys of the message selection (``Where.MESSAGES``); they run the
    screen's ``selection`` (``screens/chat_selection``).
    """

    BINDINGS = bindings(Where.MESSAGES)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._hidden: list[Message] = []

    def on_mount(self) -> None:
        self.anchor()

    @property
    def hidden_count(self) -> int:
        """How many of the oldest messages are not drawn (behind the "earlier" button)."""
        return len(self._hidden)

    async def _select(self, name: str, *args: int) -> None:
        selection = getattr(self.screen, "selection", None)
        if selection is not None:
            await getattr(selection, name)(*args)

    async def action_select_previous(self) -> None:
        """Select the message above."""
        await self._select("move", -1)

    async def action_select_next(self) -> None:
        """Select the message below."""
        await self._select("move", 1)

    async def action_copy_message(self) -> None:
        """Copy the selected message."""
        await self._select("copy")

    async def action_copy_block(self, number: int) -> None:
        """Copy the selected message's code block ``number``."""
        await self._select("copy_block", number)

    async def action_edit_message(self) -> None:
        """Edit the selected message (the user's): sent as a new version."""
        await self._select("edit")

    async def action_regenerate_from(self) -> None:
        """Answer the selected answer's question again."""
        await self._select("regenerate")

    async def action_fork_from(self) -> None:
        """A new conversation up to the selected message."""
        await self._select("fork")

    async def action_delete_from(self) -> None:
        """Delete the selected message and what is under it (asks first)."""
        await self._select("delete")

    async def show_conversation(self, messages: list[Message]) -> None:
        """Replace the view with ``messages``: the newest ``INITIAL_MESSAGES`` at once, the
        rest behind a button, so long conversations open quickly."""
        await self.remove_children()
        self._hidden = messages[: max(0, len(messages) - INITIAL_MESSAGES)]
        blocks: list[Widget] = [self._block(m) for m in messages[len(self._hidden) :]]
        if self._hidden:
            blocks.insert(0, self._earlier_button())
        if blocks:
            await self.mount_all(blocks)
        self.scroll_end(animate=False)
        self.anchor()

    def _earlier_label(self) -> Content:
        count = len(self._hidden)
        return Content(f"Show {count} earlier message{'s' if count != 1 else ''}")

    def _earlier_button(self) -> Button:
        return Button(self._earlier_label(), id="earlier", classes="earlier")

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id != "earlier":
            return
        event.stop()
        await self.show_earlier()

    async def show_earlier(self) -> None:
        """Render the next batch of older messages above the ones shown."""
        batch = self._hidden[-INITIAL_MESSAGES:]
        self._hidden = self._hidden[: len(self._hidden) - len(batch)]
        button = self.query_one("#earlier", Button)
        blocks = [self._block(m) for m in batch]
        await self.mount_all(blocks, after=button)
        if self._hidden:
            button.label = self._earlier_label()
        else:
            await button.remove()

    def _block(self, message: Message) -> Static | AssistantBlock:
        if message.role is Role.USER:
            return UserBlock(message.content)
        note = cut_note(self) if message.finish_reason == "length" else ""
        return AssistantBlock(message.content, message.status, note)

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

    async def add_messages(self, messages: list[Message]) -> None:
        """Append saved messages after those shown (written elsewhere, say)."""
        if messages:
            await self.mount_all([self._block(m) for m in messages])
            self.anchor()

    def mark_branches(self, labels: dict[int, str]) -> None:
        """Label the drawn messages by their index in the conversation ("2/3" on one with
        siblings); every other drawn message loses a label it had."""
        for offset, block in enumerate(self.query(".message")):
            if isinstance(block, (UserBlock, AssistantBlock)):
                block.set_branch(labels.get(len(self._hidden) + offset, ""))

    def dim_first(self, count: int) -> None:
        """Dim the first ``count`` messages of the conversation (left out of the last
        prompt to fit the context); every other drawn message is shown as usual."""
        for offset, block in enumerate(self.query(".message")):
            block.set_class(len(self._hidden) + offset < count, "left-out")

    async def remove_last(self, count: int) -> None:
        """Drop the last ``count`` blocks (regenerate, edit)."""
        children = list(self.query(".message"))
        for child in children[len(children) - count :] if count else []:
            await child.remove()
