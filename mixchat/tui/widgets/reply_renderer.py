"""Streaming a reply into an ``AssistantBlock`` (see ``chat_view``'s module docstring)."""

from __future__ import annotations

import re

from markdown_it import MarkdownIt
from textual.geometry import Spacing
from textual.widget import Widget
from textual.widgets import Markdown

from mixchat.tui.compat import MarkdownBlock
from mixchat.tui.widgets.code_stream import ChatMarkdown, CodeFence, open_fence

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


class ReplyRenderer:
    """Writes a streaming reply into an ``AssistantBlock``; see the module docstring."""

    def __init__(self, block: Widget, first: Markdown) -> None:
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
