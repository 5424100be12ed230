"""How answers, the message box and the sidebar look: fence languages, the placeholder,
no empty edge lines, aligned table columns, long code lines, one-line titles."""

from __future__ import annotations

import pytest
from textual.widgets import OptionList
from textual.widgets._markdown import MarkdownBlock

from mixchat.config import Settings
from mixchat.conversation import Message, Role, Status
from mixchat.store import ConversationStore
from mixchat.tui.widgets.chat_view import AssistantBlock
from mixchat.tui.widgets.code_stream import CodeFence
from mixchat.tui.widgets.prompt_input import PromptInput, model_display_name
from tests.tui.conftest import AppFactory
from tests.tui.helpers import ready
from tests.tui.screen import screen_lines, screen_text
from tests.tui.test_streaming_render import Host, settle, show


@pytest.mark.parametrize(
    "pieces",
    [
        ["Code:\n\n```", "python\nprint(1)\n", "x = 2\n```\n"],
        ["Code:\n\n``", "`pyt", "hon", "\nprint(1)\n", "x = 2\n"],
        ["Code:\n\n~~~", "javascript  {.numberLines}", "\nlet a = 1\n"],
    ],
    ids=["after-marker", "split-language", "info-string"],
)
async def test_fence_language_is_never_shown_as_code_while_streaming(
    pieces: list[str],
) -> None:
    info = "".join(pieces).split("\n\n", 1)[1].split("\n", 1)[0].strip("`~ ")
    app = Host()
    async with app.run_test(size=(90, 40)) as pilot:
        block = await show(app, AssistantBlock("", None))
        for piece in pieces:
            await block.append(piece)
            await settle(pilot)
            for fence in block.query(CodeFence):
                code = fence.shown_text() if fence.streaming else fence.code
                for line in code.splitlines():
                    assert not (line.strip() and line.strip() in info), (piece, code)
            for line in screen_lines(app):
                stripped = line.strip(" █▎▊")
                assert not (stripped and stripped in info), (piece, line)
        assert "print(1)" in screen_text(app) or "let a = 1" in screen_text(app)


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct"),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", "Mixtral-8x7B-Instruct-v0.1"),
        ("/models/llama-3/", "llama-3"),
        ("mixtral", "mixtral"),
    ],
)
async def test_placeholder_names_the_model(model: str, name: str, make_app: AppFactory) -> None:
    assert model_display_name(model) == name
    app = make_app(settings=Settings(model=model))
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot)
        prompt = app.query_one(PromptInput)
        assert str(prompt.placeholder).startswith(f"Message {name} ")
        assert f"Message {name}" in screen_text(app)
        if "Mixtral" not in model:
            assert "Mixtral" not in screen_text(app)


EDGES = {
    "paragraph": "First words.\n\nLast words.",
    "heading-and-list": "# Title\n\n- one\n- two\n",
    "quote-and-table": "> quoted\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
    "fence-and-hr": "```\ncode\n```\n\ntext\n\n---\n",
    "h2-numbered": "## Steps\n\n1. first\n2. second\n\n",
}


@pytest.mark.parametrize("name", sorted(EDGES))
@pytest.mark.parametrize("streamed", [False, True], ids=["saved", "streamed"])
async def test_answer_blocks_have_no_empty_first_or_last_line(name: str, streamed: bool) -> None:
    app = Host()
    async with app.run_test(size=(90, 40)) as pilot:
        if streamed:
            block = await show(app, AssistantBlock("", None))
            for i in range(0, len(EDGES[name]), 3):
                await block.append(EDGES[name][i : i + 3])
            await block.finish()
        else:
            block = await show(app, AssistantBlock(EDGES[name], Status.COMPLETE))
        await settle(pilot)
        content = block.content_region
        for y in (content.y, content.bottom - 1):
            shown, _ = app.screen.get_widget_at(content.x + 3, y)
            owners = [shown, *shown.ancestors]
            assert any(isinstance(w, MarkdownBlock) for w in owners), (y, shown)


async def test_table_columns_follow_their_alignment() -> None:
    table = (
        "| left | right | centre |\n|:-----|------:|:------:|\n"
        "| a | 1 | x |\n| bbbbbbbbbb | 22222222222 | yyyyyyyyyyy |\n"
    )
    app = Host()
    async with app.run_test(size=(90, 30)) as pilot:
        for streamed in (False, True):
            if streamed:
                block = await show(app, AssistantBlock("", None))
                for line in table.splitlines(keepends=True):
                    await block.append(line)
                await block.finish()
            else:
                await show(app, AssistantBlock(table, Status.COMPLETE))
            await settle(pilot)
            (row,) = [line for line in screen_lines(app) if "│ a " in line]
            cells = [c for c in row.split("│")[1:-1]]
            assert cells[0].startswith(" a ")  # left
            assert cells[1].endswith(" 1 ") and cells[1].startswith("   ")  # right
            left, right = len(cells[2]) - len(cells[2].lstrip()), len(cells[2].rstrip())
            assert abs(left - (len(cells[2]) - right)) <= 1  # centred


async def test_long_code_lines_scroll_sideways_with_a_scrollbar() -> None:
    tail = "END_OF_A_VERY_LONG_LINE"
    code = "```python\nx = 1\ny = '" + "w" * 150 + tail + "'\n```\n"
    app = Host()
    async with app.run_test(size=(80, 30)) as pilot:
        block = await show(app, AssistantBlock(code, Status.COMPLETE))
        await settle(pilot)
        fence = block.query_one(CodeFence)
        assert tail not in screen_text(app)
        assert fence.show_horizontal_scrollbar and fence.max_scroll_x > 0
        bar = fence.horizontal_scrollbar
        assert bar.region.height == 1 and bar.region.width > 0  # seen, not just scrollable
        shown, _ = app.screen.get_widget_at(bar.region.x, bar.region.y)
        assert shown is bar
        fence.scroll_to(x=fence.max_scroll_x, animate=False, immediate=True)
        await settle(pilot)
        assert tail in screen_text(app)


async def test_sidebar_titles_take_one_line_with_an_ellipsis(
    make_app: AppFactory, store: ConversationStore
) -> None:
    for title in ("A rather long title about many many things indeed", "Short"):
        conv = store.create_conversation(
            model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "q")
        )
        store.rename(conv.id, title)
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        options = app.query_one(OptionList)
        lines = [line for line in screen_lines(app) if "A rather long" in line]
        assert len(lines) == 1 and "…" in lines[0]
        assert options.virtual_size.height == 2  # one row per conversation


HTML = (
    "para one\n\n<div>\nhtml *block* <script>x</script>\n\n</div>\n\n"
    "- item\n\n  <p>in a list</p>\n\nafter\n"
)


@pytest.mark.parametrize("streamed", [False, True], ids=["saved", "streamed"])
async def test_html_blocks_are_shown_as_text_and_keep_their_neighbours(streamed: bool) -> None:
    app = Host()
    async with app.run_test(size=(90, 40)) as pilot:
        if streamed:
            block = await show(app, AssistantBlock("", None))
            for i in range(0, len(HTML), 4):
                await block.append(HTML[i : i + 4])
            await block.finish()
        else:
            await show(app, AssistantBlock(HTML, Status.COMPLETE))
        await settle(pilot)
        text = screen_text(app)
        for fragment in ("para one", "<div>", "html *block* <script>x</script>", "</div>"):
            assert fragment in text, fragment
        assert "<p>in a list</p>" in text and "after" in text


DEEP = {
    "numbers-on-one-line": ("Steps:\n\n" + "1. " * 30 + "leaf\n2. second\n\nafter\n", "leaf"),
    "indented": ("".join("  " * i + f"- level {i}\n" for i in range(25)) + "\nafter\n", "level 24"),
    "quotes": ("> " * 30 + "deep quote\n\nafter\n", "deep quote"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DEEP))
@pytest.mark.parametrize("streamed", [False, True], ids=["saved", "streamed"])
async def test_deeply_nested_lists_and_quotes_show_their_text(name: str, streamed: bool) -> None:
    text, deepest = DEEP[name]
    app = Host()
    async with app.run_test(size=(100, 60)) as pilot:
        if streamed:
            block = await show(app, AssistantBlock("", None))
            for i in range(0, len(text), 5):
                await block.append(text[i : i + 5])
            await block.finish()
        else:
            await show(app, AssistantBlock(text, Status.COMPLETE))
        await settle(pilot)
        shown = screen_text(app)
        assert deepest in shown and "after" in shown
        if name == "numbers-on-one-line":
            assert "second" in shown
