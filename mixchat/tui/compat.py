"""The private parts of Textual that mixchat uses, in one place.

Textual's Markdown widget classes live in a private module, and the chat's renderers
subclass them and read a few of their private attributes; the keymap reads Textual's
key-name tables. Every such use goes through this module, so a Textual upgrade that
moves or renames one breaks here, where ``missing()`` names it (a test checks it), and
not somewhere deep in a reply being drawn. ``pyproject.toml`` pins Textual to the
versions this was tested with.

Methods of Textual's that our subclasses override (they keep Textual's names, so they
cannot be wrapped here) are listed in ``OVERRIDDEN`` and checked by ``missing()`` too.
"""

from __future__ import annotations

from typing import Any

from markdown_it.token import Token
from textual.content import Content
from textual.keys import KEY_NAME_REPLACEMENTS, KEY_TO_UNICODE_NAME, REPLACED_KEYS
from textual.widgets._markdown import (
    Markdown,
    MarkdownBlock,
    MarkdownFence,
    MarkdownParagraph,
    MarkdownTable,
    MarkdownTableContent,
    MarkdownTH,
)

TESTED = ">=8.0,<8.3"  # the Textual versions the app was tested with (as in pyproject.toml)

__all__ = [
    "KEY_NAME_REPLACEMENTS",
    "KEY_TO_UNICODE_NAME",
    "REPLACED_KEYS",
    "Markdown",
    "MarkdownBlock",
    "MarkdownFence",
    "MarkdownParagraph",
    "MarkdownTH",
    "MarkdownTable",
    "MarkdownTableContent",
    "block_children",
    "block_content",
    "block_token",
    "missing",
]

# (class, method): Textual's private methods that a mixchat subclass overrides or calls.
OVERRIDDEN: tuple[tuple[type, str], ...] = (
    (MarkdownBlock, "_update_from_block"),
    (MarkdownBlock, "_copy_context"),
    (MarkdownTableContent, "_update_rows"),
)


def block_children(block: MarkdownBlock) -> list[MarkdownBlock]:
    """The blocks inside ``block`` (a table's rows and cells, a list's items)."""
    return list(block._blocks)


def block_token(block: MarkdownBlock) -> Token:
    """The markdown-it token ``block`` was made from."""
    token: Token = block._token
    return token


def block_content(block: MarkdownBlock) -> Content:
    """The text ``block`` shows."""
    content: Content = block._content
    return content


def missing() -> list[str]:
    """The private names this module relies on that the installed Textual lacks."""
    from textual.widgets import OptionList, TextArea

    found: list[str] = []
    for cls, name in OVERRIDDEN:
        if not callable(getattr(cls, name, None)):
            found.append(f"{cls.__name__}.{name}")
    for cls in (TextArea, OptionList):  # text widgets run bindings from their key handler
        if not callable(getattr(cls, "_on_key", None)):
            found.append(f"{cls.__name__}._on_key")
    probe: Any = MarkdownBlock.__init__
    if "token" not in probe.__code__.co_varnames:
        found.append("MarkdownBlock(markdown, token)")
    return found
