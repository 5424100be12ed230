"""Markdown blocks Textual's own widget gets wrong or leaves out.

- Tables: Textual's ``MarkdownTable`` shows every cell left-aligned; markdown-it gives
  each header and data cell a ``style="text-align:..."`` attribute from ``:--``, ``--:``
  and ``:-:``.
- HTML blocks: Textual makes no widget for them, so their text vanished, and
  ``Markdown.append`` (which pairs the new blocks with the widgets from the last one
  on) then wrote the block after an HTML block over the one before it. They are shown
  as their literal source text (never interpreted).
"""

from __future__ import annotations

from typing import cast

from markdown_it.token import Token
from textual.app import ComposeResult
from textual.content import Content
from textual.css.types import AlignHorizontal
from textual.widgets._markdown import (
    Markdown,
    MarkdownBlock,
    MarkdownTable,
    MarkdownTableContent,
    MarkdownTH,
)
from textual.widgets._static import Static

ALIGNMENTS = ("left", "center", "right")


def column_alignments(table: MarkdownBlock) -> list[str]:
    """Each column's alignment, from the header cells' ``text-align`` style attribute."""

    def flatten(block: MarkdownBlock) -> list[MarkdownBlock]:
        found: list[MarkdownBlock] = []
        for child in block._blocks:
            found.append(child)
            found.extend(flatten(child))
        return found

    aligns = []
    for block in flatten(table):
        if isinstance(block, MarkdownTH):
            style = str(block._token.attrs.get("style", ""))
            value = style.partition("text-align:")[2].strip()
            aligns.append(value if value in ALIGNMENTS else "left")
    return aligns


class AlignedTableContent(MarkdownTableContent):
    """The grid of cells, each aligned as its column says."""

    def __init__(
        self, headers: list[Content], rows: list[list[Content]], aligns: list[str]
    ) -> None:
        super().__init__(headers, rows)
        self.aligns = aligns

    def on_mount(self) -> None:
        super().on_mount()
        self.apply_alignment()

    def apply_alignment(self) -> None:
        """Set each cell's ``text-align`` from its column (headers first, then rows)."""
        columns = len(self.headers)
        if not columns or not any(a != "left" for a in self.aligns):
            return
        for index, cell in enumerate(self.query_children(Static)):
            column = index % columns
            if column < len(self.aligns):
                cell.styles.text_align = cast(AlignHorizontal, self.aligns[column])

    async def _update_rows(self, updated_rows: list[list[Content]]) -> None:
        await super()._update_rows(updated_rows)  # rows streamed in
        self.apply_alignment()


class AlignedTable(MarkdownTable):
    """``MarkdownTable`` with per-column alignment."""

    def compose(self) -> ComposeResult:
        headers, rows = self._get_headers_and_rows()
        self._headers = headers
        self._rows = rows
        yield AlignedTableContent(headers, rows, column_alignments(self))


class HtmlBlock(MarkdownBlock):
    """An HTML block, shown as the text it is."""

    DEFAULT_CSS = """
    HtmlBlock {
        margin: 0 0 1 0;
    }
    """

    def __init__(self, markdown: Markdown, token: Token) -> None:
        super().__init__(markdown, token)
        self.set_content(Content(token.content.rstrip("\n")))

    async def _update_from_block(self, block: MarkdownBlock) -> None:
        if isinstance(block, HtmlBlock):
            self._copy_context(block)
            self.set_content(block._content)
        else:
            await super()._update_from_block(block)
