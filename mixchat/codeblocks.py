"""Fenced code blocks of Markdown text: the one parser behind ``ask --extract`` and the
app's copy-code actions.

Follows CommonMark's fences: a line of three or more backticks or tildes opens a block
(its info string, e.g. ``python``, after the fence; a backtick fence's info string cannot
hold a backtick, so ```` ```x``` ```` on a line of its own is inline code, not a fence); a
line of the same character, at least as long and with nothing after it but spaces, closes
it. So a four-backtick block can hold ```` ``` ```` lines, and a ``~~~`` block can hold
backtick fences. A block left open runs to the end of the text (a reply cut short).
Unlike CommonMark, a fence may be indented by any number of spaces, as models indent
code blocks inside list items; that many spaces are removed from the block's lines.
Blocks inside block quotes (``> ```...``) are not recognised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class CodeBlock:
    """One fenced block: its code (each line ending in a newline, except perhaps the last
    of a block left open), its info string and whether a closing fence ended it."""

    code: str
    info: str = ""
    closed: bool = True

    @property
    def language(self) -> str:
        """The first word of the info string (``python`` in ``python title=x.py``)."""
        words = self.info.split()
        return words[0] if words else ""


def _is_close(line: str, char: str, length: int) -> bool:
    body = line.strip(" \t")
    return len(body) >= length and body == char * len(body)


def _dedent(line: str, indent: int) -> str:
    """Remove up to ``indent`` leading spaces or tabs."""
    cut = 0
    while cut < indent and cut < len(line) and line[cut] in " \t":
        cut += 1
    return line[cut:]


def code_blocks(text: str) -> list[CodeBlock]:
    """Every fenced code block of ``text``, in order."""
    blocks: list[CodeBlock] = []
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        match = _OPEN.match(lines[index].rstrip("\r"))
        index += 1
        if match is None:
            continue
        fence, info = match["fence"], match["info"].strip()
        if fence[0] == "`" and "`" in info:
            continue  # inline code on a line of its own
        indent, body = len(match["indent"]), []
        closed = False
        while index < len(lines):
            line = lines[index]
            index += 1
            if _is_close(line.rstrip("\r"), fence[0], len(fence)):
                closed = True
                break
            body.append(_dedent(line, indent))
        code = "\n".join(body)
        if closed and body:
            code += "\n"
        elif not closed and index == len(lines) and body and body[-1] == "":
            code = "\n".join(body[:-1]) + "\n"  # the text ended with a newline
        blocks.append(CodeBlock(code, info, closed))
    return blocks


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``11th``; negative numbers count from the end."""
    if n < 0:
        return "last" if n == -1 else f"{ordinal(-n)} from the end"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class NoSuchBlock(LookupError):
    """The text has no code block at that position; the message is one line."""


def nth_block(text: str, n: int = -1) -> CodeBlock:
    """The ``n``-th code block of ``text``, counting from 1 (negative: from the end, -1 the
    last). Raises ``NoSuchBlock`` saying how many blocks there are."""
    if n == 0:
        raise ValueError("code blocks are counted from 1 (or from -1, the last)")
    blocks = code_blocks(text)
    if not blocks:
        raise NoSuchBlock("has no code block")
    beyond = -n > len(blocks) if n < 0 else n > len(blocks)
    if beyond:
        count = f"{len(blocks)} code block{'s' if len(blocks) != 1 else ''}"
        raise NoSuchBlock(f"has {count}, so no {ordinal(n)} one")
    return blocks[n - 1 if n > 0 else n]
