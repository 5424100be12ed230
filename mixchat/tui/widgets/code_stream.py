"""Code blocks that stay cheap to draw and to grow.

``CodeFence`` is the ``MarkdownFence`` of ``ChatMarkdown`` (the Markdown widget of every
assistant message, streamed or saved). It looks the same, but shows its code as a stack of
small ``Label`` chunks rather than one ``Label``: a screen update then renders only the
chunks in view, and a changed fence redraws only the chunks that changed.

It can also *stream*. Textual's ``Markdown.append`` re-parses the last top-level block on
every update, so a growing code fence is parsed and highlighted again in full each time a
few tokens arrive. While a top-level fence is open, the reply renderer feeds the new text
to the fence instead (``feed``): complete lines are highlighted once, lexing from a recent
line where the lexer restarts cleanly, and the partial last line is shown plain. When the
fence closes (or the reply ends) the renderer gives the text back to ``Markdown.append``,
which highlights the whole block once and hands the result to ``set_content``: the final
look is that of the whole text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, cast

from markdown_it.token import Token
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.token import Comment, Error, String, _TokenType
from pygments.util import ClassNotFound
from textual.app import ComposeResult
from textual.content import Content, Span
from textual.css.styles import RulesMap
from textual.highlight import ANSIDarkHighlightTheme, ANSILightHighlightTheme, HighlightTheme
from textual.widgets import Label, Markdown

from mixchat.tui.compat import MarkdownBlock, MarkdownFence, MarkdownParagraph
from mixchat.tui.widgets.md_blocks import AlignedTable, HtmlBlock, chat_parser

OPENER = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")
CHUNK_LINES = 32  # lines of code per Label
MAX_RELEX_LINES = 400  # bound on re-lexing when no clean restart line is found

# Token types that may carry lexer state across a line break.
_STATEFUL = (String, Comment.Multiline, Error)


@dataclass(frozen=True)
class FenceOpener:
    """The opening line of a fenced code block."""

    indent: int
    marker: str  # the run of backticks or tildes
    info: str
    complete: bool = True  # False while the line's end (the info string) is still to come

    @property
    def language(self) -> str:
        """The first word of the info string ('' when none)."""
        words = self.info.split()
        return words[0] if words else ""

    def closes(self, line: str) -> bool:
        """Whether ``line`` (without its newline) is this fence's closing line."""
        stripped = line.lstrip(" ")
        if len(line) - len(stripped) > 3:
            return False
        run = len(stripped) - len(stripped.lstrip(self.marker[0]))
        return run >= len(self.marker) and not stripped[run:].strip(" \t")

    def strip_indent(self, line: str) -> str:
        """Remove up to the opener's indentation from a content line, as CommonMark does."""
        spaces = len(line) - len(line.lstrip(" "))
        return line[min(spaces, self.indent) :]


def parse_opener(line: str) -> FenceOpener | None:
    """The fence opened by ``line`` (without its newline), or None."""
    match = OPENER.match(line)
    if match is None:
        return None
    indent, marker, info = match.groups()
    if marker[0] == "`" and "`" in info:
        return None  # a backtick fence's info string may not contain backticks
    return FenceOpener(len(indent), marker, info.strip())


def open_fence(source: str) -> tuple[FenceOpener, str] | None:
    """If ``source`` (a fence block's Markdown) is a fence not yet closed: opener and body.

    While the opening line is incomplete, the body is empty and the opener's
    ``complete`` is False: the rest of the line (the language) is still to come.
    """
    first, newline, body = source.partition("\n")
    opener = parse_opener(first)
    if opener is not None and not newline:
        return replace(opener, complete=False), ""
    if opener is None:
        return None
    lines = body.split("\n")
    # The last piece is a partial line (or empty): it cannot close the fence yet.
    if any(opener.closes(line) for line in lines[:-1]):
        return None
    return opener, body


class LineHighlighter:
    """Highlights code one batch of complete lines at a time.

    Each batch is lexed together with the lines since the last *restart line*: a line
    whose start falls between tokens (not inside a multi-line string or comment), where
    lexing from scratch gives the same result as lexing the whole block. So the work per
    batch stays about the size of the batch, and multi-line strings still come out right.
    """

    def __init__(self, language: str, theme: type[HighlightTheme]) -> None:
        try:
            lexer: Lexer = get_lexer_by_name(
                language or "text", stripnl=False, ensurenl=True, tabsize=8
            )
        except ClassNotFound:
            lexer = get_lexer_by_name("text", stripnl=False, ensurenl=True, tabsize=8)
        self._lexer = lexer
        self._styles = theme.STYLES
        self._lines: list[str] = []
        self._restart = 0  # index of the line lexing restarts from

    def add_lines(self, lines: list[str]) -> tuple[int, list[Content]]:
        """Add complete ``lines`` (without newlines); rows to show from a line index on.

        The rows start at the restart line, not at the first new line: lines lexed again
        (say, inside a string that was still open) may now come out differently.
        """
        if not lines:
            return len(self._lines), []
        first_new = len(self._lines)
        self._lines.extend(lines)
        if first_new - self._restart > MAX_RELEX_LINES:
            self._restart = first_new  # give up exactness rather than re-lex without bound
        start = self._restart
        spans: list[Span] = []
        parts: list[str] = []
        position = 0
        line = start  # the line the current token starts on
        at_line_start = False  # the previous token ended a line, outside any stateful token
        for token_type, value in self._lexer.get_tokens("\n".join(self._lines[start:])):
            if not value:
                continue
            stateful = any(token_type in kind for kind in _STATEFUL)
            if at_line_start and not stateful:
                self._restart = line
            newlines = value.count("\n")
            if newlines and not stateful:
                inner = newlines - 1 if value.endswith("\n") else newlines
                if inner:  # lines that start inside a plain token are clean too
                    self._restart = line + inner
            at_line_start = value.endswith("\n") and not stateful
            line += newlines
            end = position + len(value)
            style_type: _TokenType | None = token_type
            while style_type is not None:
                if style := self._styles.get(style_type):
                    spans.append(Span(position, end, style))
                    break
                style_type = style_type.parent
            parts.append(value)
            position = end
        self._restart = min(self._restart, len(self._lines) - 1)
        code = "".join(parts)
        if code.endswith("\n"):
            code = code[:-1]  # the lexer's ensured newline
        content = Content(code, spans=spans).stylize_before("$text")
        return start, content.split("\n", allow_blank=True)


def highlight_theme(ansi: bool, dark: bool) -> type[HighlightTheme]:
    """The theme ``MarkdownFence`` would use."""
    if not ansi:
        return HighlightTheme
    return ANSIDarkHighlightTheme if dark else ANSILightHighlightTheme


class CodeFence(MarkdownFence):
    """A ``MarkdownFence`` drawn in chunks, which can grow line by line while streaming."""

    DEFAULT_CSS = """
    CodeFence {
        padding: 1 0;
        & > Label.chunk {
            padding: 0 2;
        }
    }
    CodeFence:ansi > Label.chunk {
        padding: 0 0;
    }
    """

    def __init__(self, markdown: Markdown, token: Token, code: str) -> None:
        super().__init__(markdown, token, code)
        self._chunks: list[Label] = []
        self._shown: list[Content] = []  # what each chunk shows
        self._rows: list[Content] = []  # one per line of code
        self._opener: FenceOpener | None = None  # set while streaming
        self._highlighter: LineHighlighter | None = None
        self._partial = ""  # the unfinished last line, while streaming
        self._opening: str | None = None  # the opening line while it is incomplete

    @property
    def streaming(self) -> bool:
        """Whether the fence is being fed text (it is still open)."""
        return self._opener is not None

    def compose(self) -> ComposeResult:
        self._rows = self._highlighted_code.split("\n", allow_blank=True)
        self._shown = self._chunked()
        self._chunks = [Label(chunk, expand=True, classes="chunk") for chunk in self._shown]
        yield from self._chunks

    def _chunked(self, first: int = 0) -> list[Content]:
        rows = self._rows
        return [
            Content("\n").join(rows[start : start + CHUNK_LINES])
            for start in range(first * CHUNK_LINES, len(rows), CHUNK_LINES)
        ]

    def set_content(self, content: Content) -> None:
        """Show ``content`` (the whole highlighted code); ends streaming."""
        self._content = content
        self._opener = self._highlighter = None
        self._partial = ""
        self._opening = None
        self._show(content.split("\n", allow_blank=True), 0)

    def notify_style_update(self) -> None:
        if self.streaming:
            MarkdownBlock.notify_style_update(self)  # re-highlighted once it closes
        else:
            super().notify_style_update()

    def _show(self, rows: list[Content], start: int, layout: bool = True) -> None:
        """Replace the rows from ``start`` on, redrawing only the chunks that changed.

        With ``layout`` False a chunk whose size cannot change (same number of lines, none
        wider than it) is only repainted: no screen re-layout for a growing last line.
        """
        self._rows[start:] = rows
        if not self.is_mounted:
            return
        first = start // CHUNK_LINES
        chunks = self._chunked(first)
        new: list[Label] = []
        for index, chunk in enumerate(chunks, first):
            if index >= len(self._chunks):
                self._shown.append(chunk)
                new.append(Label(chunk, expand=True, classes="chunk"))
                continue
            shown = self._shown[index]
            if shown.is_same(chunk):
                continue
            label = self._chunks[index]
            width = label.outer_size.width - label.styles.gutter.width
            same_size = chunk.plain.count("\n") == shown.plain.count("\n") and all(
                row.cell_length <= width for row in chunk.split("\n")
            )
            self._shown[index] = chunk
            label.update(chunk, layout=layout or not same_size)
        end = first + len(chunks)
        for label in self._chunks[end:]:
            label.remove()
        del self._chunks[end:], self._shown[end:]
        if new:
            self._chunks.extend(new)
            self.mount_all(new)

    def start_streaming(self, opener: FenceOpener, body: str) -> None:
        """Take over an open fence whose text so far (after the opening line) is ``body``.

        If the opening line is not complete yet, what follows up to its end is the rest of
        the info string: it is held (never shown as code) until the line ends.
        """
        self._opener = opener
        self._highlighter = self._highlighter_for(opener)
        self._partial = ""
        self._rows = []
        self._opening = None if opener.complete else (self.source or "").partition("\n")[0]
        self.feed(body)

    def _highlighter_for(self, opener: FenceOpener) -> LineHighlighter:
        theme = highlight_theme(self.app.native_ansi_color, self.app.current_theme.dark)
        return LineHighlighter(opener.language, theme)

    def feed(self, text: str) -> int | None:
        """Show more of the fence body; where in ``text`` the fence closed, else None.

        The returned index is just past the closing line's newline; text from there on
        is not shown (the caller gives it, with the whole fence, back to Markdown). An
        opening line that turns out not to open a fence (a backtick in its info string)
        ends the fence at once: the whole of ``text`` goes back to Markdown.
        """
        if self._opening is not None:
            rest, newline, body = text.partition("\n")
            self._opening += rest
            if not newline:
                return None
            opener = parse_opener(self._opening)
            self._opening = None
            if opener is None:
                return len(text)
            self._opener, self._highlighter = opener, self._highlighter_for(opener)
            closed = self.feed(body)
            return None if closed is None else closed + len(rest) + 1
        opener, highlighter = self._opener, self._highlighter
        assert opener is not None and highlighter is not None, "not streaming"
        lines = (self._partial + text).split("\n")
        complete, partial = lines[:-1], lines[-1]
        offset = -len(self._partial)  # index in ``text`` just past the current line
        for index, line in enumerate(complete):
            offset += len(line) + 1
            if opener.closes(line):
                return offset
            complete[index] = opener.strip_indent(line)
        self._partial = partial
        start, rows = highlighter.add_lines(complete)
        if partial:
            rows.append(Content(opener.strip_indent(partial)).stylize_before("$text"))
        self._show(rows, start, layout=False)
        return None

    def shown_text(self) -> str:
        """The code as shown (for tests)."""
        return "\n".join(row.plain for row in self._rows)


class ChatParagraph(MarkdownParagraph):
    """A paragraph that asks for a screen re-layout only when its height changes.

    While a reply streams, most updates add a few words to the last paragraph without
    wrapping onto a new line: those now repaint the paragraph alone.
    """

    def set_content(self, content: Content) -> None:
        self._content = content
        self.update(content, layout=not self._same_height(content))

    def _same_height(self, content: Content) -> bool:
        if not self.is_mounted:
            return False
        gutter = self.styles.gutter
        width = self.outer_size.width - gutter.width
        height = self.outer_size.height - gutter.height
        return width > 0 and content.get_height(cast(RulesMap, self.styles), width) == height


class ChatMarkdown(Markdown):
    """Markdown with ``CodeFence`` code blocks, ``ChatParagraph`` paragraphs, tables
    aligned as their delimiter rows say, and HTML blocks shown as text."""

    BLOCKS = {
        **Markdown.BLOCKS,
        "paragraph_open": ChatParagraph,
        "fence": CodeFence,
        "code_block": CodeFence,
        "table_open": AlignedTable,
    }

    def __init__(self, markdown: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("parser_factory", chat_parser)
        super().__init__(markdown, **kwargs)

    def unhandled_token(self, token: Token) -> MarkdownBlock | None:
        """HTML blocks are shown as text (see ``md_blocks``)."""
        if token.type == "html_block":
            return HtmlBlock(self, token)
        return None
