"""Markdown blocks Textual's own widget gets wrong or leaves out.

- Tables: Textual's ``MarkdownTable`` shows every cell left-aligned; markdown-it gives
  each header and data cell a ``style="text-align:..."`` attribute from ``:--``, ``--:``
  and ``:-:``.
- HTML blocks: Textual makes no widget for them, so their text vanished, and
  ``Markdown.append`` (which pairs the new blocks with the widgets from the last one
  on) then wrote the block after an HTML block over the one before it. They are shown
  as their literal source text (never interpreted); inline HTML too (``chat_parser``).
- Deep nesting: lists and quotes nested deeper than ``MAX_NESTING`` are shown as text
  (``flatten_deep_nesting``).
"""

from __future__ import annotations

import re
from typing import cast

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from textual.app import ComposeResult
from textual.content import Content
from textual.css.types import AlignHorizontal
from textual.widgets import Static

from mixchat.tui.compat import (
    Markdown,
    MarkdownBlock,
    MarkdownTable,
    MarkdownTableContent,
    MarkdownTH,
    block_children,
    block_content,
    block_token,
)

ALIGNMENTS = ("left", "center", "right")


def column_alignments(table: MarkdownBlock) -> list[str]:
    """Each column's alignment, from the header cells' ``text-align`` style attribute."""

    def flatten(block: MarkdownBlock) -> list[MarkdownBlock]:
        found: list[MarkdownBlock] = []
        for child in block_children(block):
            found.append(child)
            found.extend(flatten(child))
        return found

    aligns = []
    for block in flatten(table):
        if isinstance(block, MarkdownTH):
            style = str(block_token(block).attrs.get("style", ""))
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
            self.set_content(block_content(block))
        else:
            await super()._update_from_block(block)


def chat_parser() -> MarkdownIt:
    """Textual's "gfm-like" parser, with inline HTML read as text (Textual drops inline
    HTML tags, so ``<kbd>C</kbd>`` would show as ``C``; HTML blocks: ``md_blocks``) and
    lists and quotes nested deeper than ``MAX_NESTING`` shown as their text."""
    parser = MarkdownIt("gfm-like").disable("html_inline")
    parser.core.ruler.push("mixchat_flatten_deep", flatten_deep_nesting)
    return parser


MAX_NESTING = 6  # lists and block quotes inside one another, as Markdown shows them
_NESTED_OPEN = {"bullet_list_open", "ordered_list_open", "blockquote_open"}
_NESTED_CLOSE = {"bullet_list_close", "ordered_list_close", "blockquote_close"}
_MARKER = re.compile(r"[ \t]*(?:\d{1,9}[.)]|[-+*>])(?:[ \t]+|$)")


def flatten_deep_nesting(state: StateCore) -> None:
    """Replace lists and quotes nested deeper than ``MAX_NESTING`` by their source text.

    Small models write lines like ``1. 1. 1. 1. 2. 2. 3. ...``: each number opens a list
    inside the last. Past 20 levels markdown-it stops parsing and drops the rest of the
    message, and Textual shows such lists as nothing at all. The deep part (and, when
    markdown-it gave up, everything after it) is shown as a paragraph of its text.
    """
    tokens = state.tokens
    lines = state.src.split("\n")
    out: list[Token] = []
    depth = 0
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.type in _NESTED_OPEN and depth >= MAX_NESTING and token.map is not None:
            end = _matching_close(tokens, index)
            start, stop = token.map
            text_lines = [line.strip() for line in lines[start:stop]]
            if text_lines:
                first = text_lines[0]
                for _ in range(depth):  # the markers of the levels still shown
                    match = _MARKER.match(first)
                    first = first[match.end() :] if match else first
                text_lines[0] = first
            out.extend(_paragraph("\n".join(text_lines).strip("\n"), token))
            index = end + 1
            continue
        if token.type in _NESTED_OPEN:
            depth += 1
        elif token.type in _NESTED_CLOSE:
            depth -= 1
        out.append(token)
        index += 1
    state.tokens = out


def _matching_close(tokens: list[Token], index: int) -> int:
    level = 0
    for at in range(index, len(tokens)):
        level += tokens[at].nesting
        if level == 0:
            return at
    return len(tokens) - 1


def _paragraph(text: str, where: Token) -> list[Token]:
    """Tokens of a paragraph holding ``text`` literally, at ``where``'s place."""
    opening = Token("paragraph_open", "p", 1, map=where.map, level=where.level, block=True)
    children: list[Token] = []
    for number, line in enumerate(text.split("\n")):
        if number:
            children.append(Token("hardbreak", "br", 0))
        children.append(Token("text", "", 0, content=line))
    inline = Token(
        "inline", "", 0, map=where.map, level=where.level + 1, content=text, children=children
    )
    inline.block = True
    closing = Token("paragraph_close", "p", -1, level=where.level, block=True)
    return [opening, inline, closing]
