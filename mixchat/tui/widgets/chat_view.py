"""The conversation: message blocks in an anchored scroll view.

User text is shown as plain text (never markup); assistant text is Markdown. Control
characters are neutralised before display.

A streaming reply is rendered by ``ReplyRenderer``. It feeds ``Markdown.append``, as
Textual's ``MarkdownStream`` does, with the deltas the chat screen has coalesced, but
works around what makes that stream slow down or go wrong as a reply grows:

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

import re

from markdown_it import MarkdownIt
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.geometry import Spacing
from textual.widget import Widget
from textual.widgets import Button, Label, Markdown, Static
from textual.widgets._markdown import MarkdownBlock

from mixchat.conversation import Message, Role, Status
from mixchat.textsafe import neutralize
from mixchat.tui.widgets.code_stream import ChatMarkdown, CodeFence, open_fence

STATUS_LABEL = {Status.INTERRUPTED: "stopped", Status.ERROR: "error"}
SEGMENT_BLOCKS = 24  # top-level blocks in a segment before the reply may start a new one
# Top-level blocks that a blank line ends for good: nothing after it can join them.
ENDED_BY_BLANK_LINE = {
    "paragraph_open",
    "heading_open",
    "hr",
    "fence",
    "table_open",
    "blockquote_open",
}
BLANK_LINE = re.compile(r"\n[ \t]*\n")
# Line and paragraph separators: Python's str.splitlines (which Textual's Markdown uses to
# count lines) breaks on them but Markdown does not, so they are shown escaped.
_SEPARATORS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029"})


def markdown_text(text: str) -> str:
    """Model text as it is given to the Markdown widgets: controls neutralised."""
    return neutralize(text).translate(_SEPARATORS)


class UserBlock(Static):
    """A user message, as literal text."""

    def __init__(self, content: str) -> None:
        super().__init__(Text(neutralize(content)), classes="message user")
        self.source = content


class AssistantBlock(Vertical):
    """An assistant message: Markdown body (one or more segments) plus a status line."""

    def __init__(self, content: str = "", status: Status | None = Status.COMPLETE) -> None:
        super().__init__(classes="message assistant")
        self.source = content
        self._initial_status = status
        self._renderer: ReplyRenderer | None = None

    def compose(self) -> ComposeResult:
        yield ChatMarkdown(markdown_text(self.source), open_links=False)
        yield Label("", classes="status")

    def on_mount(self) -> None:
        self.set_status(self._initial_status)

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

    async def append(self, text: str) -> None:
        """Stream more Markdown into the body (the caller coalesces deltas)."""
        if not text:
            return
        self.source += text
        if self._renderer is None:
            self._renderer = ReplyRenderer(self, self.markdown)
        await self._renderer.write(markdown_text(text))

    async def finish(self) -> None:
        """Render whatever is still held back; the body is final after this."""
        if self._renderer is not None:
            await self._renderer.finish()
            self._renderer = None


class ReplyRenderer:
    """Writes a streaming reply into an ``AssistantBlock``; see the module docstring."""

    def __init__(self, block: AssistantBlock, first: Markdown) -> None:
        self._block = block
        self._live = first  # the segment being written
        self._live_source = first.source  # the text given to it so far
        self._tail_offset = 0  # in _live_source: a top-level block start at or before the last
        self._fence: CodeFence | None = None  # an open fence being fed text
        self._held = ""  # fence text not yet given to the live segment
        self._fence_closed = False  # the closing line came; waiting for the next block
        self._seam: tuple[MarkdownBlock, Spacing] | None = None  # last block before a cut
        self._parser = MarkdownIt("gfm-like")

    async def write(self, text: str) -> None:
        """Render ``text`` (from ``markdown_text``) after what came before."""
        if self._fence is None:
            await self._write_prose(text)
            return
        closed_at = 0 if self._fence_closed else self._fence.feed(text)
        if closed_at is None:
            self._held += text  # shown by the fence; Markdown gets it when the fence closes
            return
        self._fence_closed = True
        if not text[closed_at:].strip():
            self._held += text  # closed: wait for the next block to start (see below)
            return
        # Give Markdown the whole fence and the start of the next block in one append, so
        # the fence is parsed and highlighted once, not again on every update while it
        # is still the last block.
        text, self._held = self._held + text, ""
        await self._end_fence(text)

    async def finish(self) -> None:
        """Hand any held-back fence text to Markdown, which renders it as a whole."""
        if self._fence is not None:
            held, self._held = self._held, ""
            await self._end_fence(held, reopen=False)

    async def _end_fence(self, text: str, reopen: bool = True) -> None:
        # Markdown re-parses from the fence's first line, highlights the whole block and
        # gives it to the fence (``set_content``), which stops streaming.
        self._fence = None
        self._fence_closed = False
        await self._append_live(text)
        if reopen:
            self._open_fence_if_any()

    async def _write_prose(self, text: str) -> None:
        head, rest = self._cut(text)
        if head:
            await self._append_live(head)
        if rest is not None:
            await self._start_segment(rest)
        self._open_fence_if_any()

    async def _append_live(self, text: str) -> None:
        before = sum(isinstance(child, MarkdownBlock) for child in self._live.children)
        self._live_source += text
        await self._live.append(text)
        if before >= 2:
            await self._rejoin(before - 2)
        self._fix_seam()

    def _cut(self, text: str) -> tuple[str, str | None]:
        """Split ``text`` where a new segment may start: (head, rest) or (text, None).

        Only when the live segment is long, and only just after a blank line that ended
        a block no later text can extend (a paragraph, say; not a list), so the segments
        parse exactly as the whole reply would.
        """
        blocks = sum(isinstance(child, MarkdownBlock) for child in self._live.children)
        if blocks < SEGMENT_BLOCKS:
            return text, None
        last_line = self._live_source[max(self._live_source.rfind("\n"), 0) :]
        if not BLANK_LINE.search(last_line + text):
            return text, None
        tail = self._live_source[self._tail_offset :] + text
        cut = len(self._live_source) - self._tail_offset  # where ``text`` starts in tail
        starts: dict[int, tuple[str, int]] = {}  # first line -> (token type, end line)
        for token in self._parser.parse(tail):
            if token.level == 0 and token.map is not None:
                starts[token.map[0]] = (token.type, token.map[1])
        lines = tail.split("\n")
        offsets = [0]
        for line in lines[:-1]:
            offsets.append(offsets[-1] + len(line) + 1)
        before: tuple[str, int] | None = None  # type and end line of the block so far
        for number, offset in enumerate(offsets):
            blank_before = number > 0 and not lines[number - 1].strip(" \t")
            if blank_before and offset >= cut and before is not None:
                kind, end = before
                if kind in ENDED_BY_BLANK_LINE and end <= number - 1:
                    at = offset - cut
                    return text[:at], text[at:]
            if number in starts:
                before = starts[number]
        if starts:
            self._tail_offset += offsets[max(starts)]
        return text, None

    async def _rejoin(self, first: int) -> None:
        """Re-render the blocks from index ``first`` on when an append merged into them.

        ``Markdown.append`` re-parses from the start of the last block only, so a block
        that began as a paragraph ("2" after a list and a blank line) and then became
        part of the block before it ("2. item") would stay a separate block. Checked by
        parsing again from the block before the re-parsed ones; repaired by moving those
        blocks' text to a new segment.
        """
        blocks = [c for c in self._live.children if isinstance(c, MarkdownBlock)][first:]
        first_line = blocks[0].source_range[0]
        tail = "".join(self._live_source.splitlines(keepends=True)[first_line:])
        shown = [block.source_range[0] - first_line for block in blocks]
        parsed = [t.map[0] for t in self._parser.parse(tail) if t.level == 0 and t.map]
        if parsed == shown:
            return
        with self._block.app.batch_update():
            for block in blocks:
                await block.remove()
            self._live_source = self._live_source[: len(self._live_source) - len(tail)]
            await self._start_segment(tail)

    async def _start_segment(self, text: str) -> None:
        """Go on in a new Markdown segment after the live one, starting with ``text``."""
        self._fix_seam()  # against the live segment's first block, final from now on
        old = self._live
        blocks = [c for c in old.children if isinstance(c, MarkdownBlock)]
        segment = ChatMarkdown(open_links=False)
        await self._block.mount(segment, after=old)
        if blocks:
            self._seam = (blocks[-1], blocks[-1].styles.margin)
        else:
            await old.remove()  # emptied by _rejoin; a pending seam now faces the new one
        self._live, self._live_source, self._tail_offset = segment, "", 0
        if text:
            await self._append_live(text)

    def _fix_seam(self) -> None:
        """Margins of adjacent blocks collapse inside one Markdown but not across two:
        shrink the bottom margin of the block before a cut so the gap is the same."""
        if self._seam is None:
            return
        children = [c for c in self._live.children if isinstance(c, MarkdownBlock)]
        if not children:
            return
        before, margin = self._seam
        top = children[0].styles.margin.top
        bottom = max(0, margin.bottom - top)
        if before.styles.margin.bottom != bottom:
            before.styles.margin = Spacing(margin.top, margin.right, bottom, margin.left)
        if len(children) > 1:
            self._seam = None  # the first block is no longer the last: it stays as it is

    def _open_fence_if_any(self) -> None:
        """If the live segment now ends in an open top-level fence, stream it ourselves."""
        try:
            last = self._live.children[-1]
        except IndexError:
            return
        if not isinstance(last, CodeFence) or last.streaming:
            return
        found = open_fence(last.source or "")
        if found is not None:
            last.start_streaming(*found)
            self._fence = last


INITIAL_MESSAGES = 40  # rendered when a conversation opens; older ones on request


class ChatView(VerticalScroll):
    """All messages of the open conversation; stays at the bottom while streaming."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._hidden: list[Message] = []

    def on_mount(self) -> None:
        self.anchor()

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
