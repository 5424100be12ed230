"""Bounds on how much of one message is rendered.

Textual lays out every Markdown block as widgets, at a cost per widget (about 10 ms on a
small machine), and wraps every character of a paragraph. A message of 50 MB, or of
thousands of short paragraphs or table rows, would take minutes and gigabytes to show.
So a message is shown up to a budget of characters and of block widgets, cut at a line
boundary, with a note saying how much is not shown; the whole text stays in the store,
in copies (F3) and in exports.
"""

from __future__ import annotations

from dataclasses import dataclass

from markdown_it import MarkdownIt

MAX_SHOWN_CHARS = 48_000
MAX_SHOWN_BLOCKS = 250  # Markdown widgets: blocks, list items, table cells, code chunks
CODE_LINES_PER_BLOCK = 32  # a code fence is drawn in chunks of this many lines

_PARSER = MarkdownIt("gfm-like")
_SINGLE = {"fence", "code_block", "hr", "html_block"}


@dataclass(frozen=True)
class Head:
    """The part of a message that is rendered."""

    text: str
    total_chars: int

    @property
    def truncated(self) -> bool:
        """Whether some of the message is not shown."""
        return len(self.text) < self.total_chars


def char_head(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """At most ``limit`` characters of ``text``, cut after a line break or space if one
    is near the end."""
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit)
    if cut < limit // 2:
        cut = text.rfind(" ", 0, limit)
    return text[: cut + 1] if cut >= limit // 2 else text[:limit]


def widget_count(token_type: str, nesting: int, content: str) -> int:
    """About how many widgets Textual's Markdown makes for one token."""
    if token_type in ("fence", "code_block"):
        return 1 + content.count("\n") // CODE_LINES_PER_BLOCK
    if token_type in _SINGLE or nesting == 1:
        return 1
    return 0


def markdown_head(
    text: str, max_chars: int = MAX_SHOWN_CHARS, max_blocks: int = MAX_SHOWN_BLOCKS
) -> Head:
    """The head of Markdown ``text`` within the budgets: the characters are cut first (so
    a huge message is never parsed whole), then at the first line whose block would go
    over ``max_blocks`` widgets."""
    if len(text) <= max_blocks:
        return Head(text, len(text))  # every widget takes at least a character
    head = char_head(text, max_chars)
    count = 0
    line = 0  # the first line of the latest block seen
    for token in _PARSER.parse(head):
        if token.map is not None:
            line = token.map[0]
        count += widget_count(token.type, token.nesting, token.content)
        if count > max_blocks:
            lines = head.splitlines(keepends=True)
            head = "".join(lines[: max(line, 1)])
            break
    return Head(head, len(text))


def plain_head(text: str, max_chars: int = MAX_SHOWN_CHARS) -> Head:
    """The head of plain text (a user message) within the character budget."""
    return Head(char_head(text, max_chars), len(text))


def too_long_note(head: Head, whole: str = "F3 copies the whole answer; ") -> str:
    """The line shown under a message that is not shown in full."""
    shown, total = len(head.text), head.total_chars
    return (
        f"Message too long to show in full: {_size(total)}, of which the first "
        f"{_size(shown)} are shown. {whole}`mixchat export` saves the conversation."
    )


def _size(chars: int) -> str:
    if chars < 10_000:
        return f"{chars:,} characters"
    return f"{chars / 1000:,.0f} K characters"
