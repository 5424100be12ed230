"""Render everything in every theme: a corpus of answers, streamed through the real reply
path (scripted engine) and reopened from the store, in each built-in theme and Textual's
default theme. No exception, and the text of each answer is on screen: each answer is
scrolled through and read back from the screen.

The corpus: answers the real small model wrote (``corpus/real``, see its SOURCE.md) and
hand-written ones (``corpus/hand``): tables with alignment, nested and task lists, block
quotes, headings 1-6, rules, inline and block HTML, links, images, footnotes, maths,
very long lines, unterminated markup, 10 KB of code; plus hostile markup and escapes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from textual.app import App

from mixchat.config import Settings
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from mixchat.tui.widgets.chat_view import AssistantBlock
from tests.tui.conftest import AppFactory
from tests.tui.helpers import ready, type_and_send, wait_reply
from tests.tui.screen import screen_lines, screen_segments

pytestmark = pytest.mark.slow  # every answer of the corpus, streamed, in every theme

CORPUS = Path(__file__).parent / "corpus"
HOSTILE = (
    "Markup stays text: [bold]markup[/bold] [/INST] [link=https://x.invalid]y[/link] "
    "[@click=app.quit]q[/] \\[ and a lone [ too.\n\n"
    "Escapes stay visible: \x1b[31mred\x1b[0m and \x1b]52;c;aGk=\x07 and \x1b]0;title\x07.\n\n"
    "```\n[red]code[/red] \x1b[2J </s> <s>\n```\n"
)
DOCS = {
    **{f"real/{p.stem}": p.read_text() for p in sorted((CORPUS / "real").glob("[0-9]*.md"))},
    **{f"hand/{p.stem}": p.read_text() for p in sorted((CORPUS / "hand").glob("*.md"))},
    "hostile": HOSTILE,
}
# Fragments that must be on screen exactly (beyond the word check below).
PROBES = {
    "real/10-tree-steps": ["Steps:", "9. 10. 11. 12.", "7. 7. 7. 7. 8."],
    "hand/tables": ["Centre", "1,234.50", "pipe | escaped", "Text right after the tables"],
    "hand/lists": ["fourth level deep", "an open task", "a finished task", "eleven"],
    "hand/structure": ["Heading level six", "Another setext", "A nested quote inside it"],
    "hand/html-links": ["<b>bold tags</b>", "Click to expand", "inline link", "reference link"],
    "hand/footnotes-math": ["[^1]", "$E = mc^2$", "frac{1}{3}", "*not italic*"],
    "hand/code-10k": ["def function_0(", "And that is the end of the program."],
    "hand/long-lines": ["end of the long line.", "short code line", "then normal text"],
    "hand/unterminated": ["bold that never closes", "def unfinished(x):"],
    "hostile": [
        "[bold]markup[/bold] [/INST]",
        "\\x1b[31mred\\x1b[0m",
        "\\x1b]52;c;aGk=\\x07",
        "[red]code[/red] \\x1b[2J </s> <s>",
    ],
}
THEMES = ["mixchat-dark", "mixchat-light", "mixchat-high-contrast", "textual-dark"]
SIZE = (100, 40)


def words(doc: str) -> set[str]:
    """The words of a document that a reader should see (not link targets)."""
    doc = re.sub(r"\]\([^)]*\)", "]", doc)  # link and image targets
    doc = re.sub(r"(?m)^\[[^\]^]+\]:.*$", "", doc)  # reference definitions
    doc = re.sub(r"https?://\S+", "", doc)
    return set(re.findall(r"[A-Za-z][A-Za-z0-9]{3,}", doc))


def chunks(text: str, size: int = 7) -> list[str]:
    """Token-like deltas."""
    return [text[i : i + size] for i in range(0, len(text), size)]


async def block_text(pilot, block: AssistantBlock) -> str:  # type: ignore[no-untyped-def]
    """Everything a block shows, read from the screen a page at a time."""
    app: App[None] = pilot.app
    chat = app.chat_screen.chat  # type: ignore[attr-defined]
    chat.release_anchor()
    top, bottom = block.virtual_region.y, block.virtual_region.bottom
    view = chat.content_region
    rows: dict[int, str] = {}
    y = top
    while y < bottom:
        chat.scroll_to(y=y, animate=False, immediate=True)
        await pilot.pause()
        lines = screen_lines(app)
        for virtual in range(y, min(bottom, int(chat.scroll_y) + view.height)):
            screen_row = view.y + virtual - int(chat.scroll_y)
            if virtual >= int(chat.scroll_y):
                rows[virtual] = lines[screen_row][view.x : view.right]
        for row in screen_segments(app):
            for segment in row:
                assert "\x1b" not in segment.text and "\x07" not in segment.text
        y = int(chat.scroll_y) + view.height
        if chat.scroll_y >= chat.max_scroll_y:
            break
    return "\n".join(_unframed(rows[k]) for k in sorted(rows))


def _unframed(row: str) -> str:
    """A row without the block's border and padding on either side."""
    frame = " " + "".join(chr(c) for c in range(0x2500, 0x25A0))
    return row.strip(frame)


def check_shown(name: str, doc: str, shown: str) -> None:
    flat = " ".join(shown.split())
    for probe in PROBES.get(name, []):
        assert " ".join(probe.split()) in flat, (name, probe)
    wanted = words(doc)
    missing = {w for w in wanted if w not in shown}
    # Words can be hidden legitimately: past the right edge of a code line (it scrolls),
    # or broken by wrapping inside a word longer than the screen.
    assert len(missing) <= max(2, len(wanted) // 10), (name, sorted(missing)[:20])


@pytest.mark.parametrize("theme", THEMES)
async def test_corpus_streamed_and_reopened_in_every_theme(
    theme: str, make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    for doc in DOCS.values():
        engine.queue(*chunks(doc))
    app = make_app(settings=Settings(model="scripted-model", theme=theme))
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        assert app.theme == theme
        for name in DOCS:
            await type_and_send(pilot, f"Show me {name}")
            await wait_reply(pilot)
            assert app.is_running, name
        conversation = store.get_conversation(store.list_conversations()[0].id)
        answers = [m.content for m in conversation.messages if m.role.value == "assistant"]
        assert answers == list(DOCS.values())  # saved exactly as streamed
        for reopened in (False, True):
            if reopened:
                await screen.open_conversation(conversation.id)
                await pilot.pause()
            blocks = list(screen.query(AssistantBlock))
            assert [b.source for b in blocks] == list(DOCS.values())
            for (name, doc), block in zip(DOCS.items(), blocks, strict=True):
                check_shown(name, doc, await block_text(pilot, block))
            assert app.is_running
