"""A huge message costs what is shown, not what it holds: saved or streamed, it is
rendered up to a budget of characters and widgets, with a note, and kept whole."""

from __future__ import annotations

import pytest
from textual.widgets import Markdown
from textual.widgets._markdown import MarkdownBlock

from mixchat.conversation import Message, Role, Status
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from mixchat.tui.widgets import long_text
from mixchat.tui.widgets.chat_view import AssistantBlock, UserBlock
from mixchat.tui.widgets.long_text import MAX_SHOWN_BLOCKS, MAX_SHOWN_CHARS, markdown_head
from tests.tui.conftest import AppFactory
from tests.tui.helpers import ready, type_and_send, wait_reply
from tests.tui.screen import screen_text

HUGE = {
    "one-word-160k": "word " * 160_000,
    "50-mb": "x" * 50_000_000,
    "paragraphs": "para\n\n" * 20_000,
    "table": "| a | b | c |\n|---|---|---|\n" + "| 1 | 2 | 3 |\n" * 5_000,
    "list": "".join(f"- item {i}\n" for i in range(10_000)),
    "code": "```python\n" + "".join(f"x{i} = {i}\n" for i in range(40_000)) + "```\n",
}


def rendered_widgets(block: AssistantBlock) -> int:
    return sum(1 for segment in block.segments for _ in segment.walk_children())


def shown_source(block: AssistantBlock) -> str:
    return "".join(segment.source for segment in block.query(Markdown))


@pytest.mark.parametrize("name", sorted(HUGE))
def test_head_is_within_the_budgets(name: str) -> None:
    text = HUGE[name]
    head = markdown_head(text)
    assert head.truncated and head.total_chars == len(text)
    assert len(head.text) <= MAX_SHOWN_CHARS
    assert text.startswith(head.text) and len(head.text) > 0
    widgets = sum(
        long_text.widget_count(t.type, t.nesting, t.content)
        for t in long_text._PARSER.parse(head.text)
    )
    assert widgets <= MAX_SHOWN_BLOCKS


def test_ordinary_messages_are_shown_whole() -> None:
    text = "# Title\n\n" + "Some words. " * 500 + "\n\n" + "- item\n" * 100
    assert markdown_head(text).text == text and not markdown_head(text).truncated


@pytest.mark.parametrize("name", ["one-word-160k", "50-mb", "paragraphs", "table"])
async def test_opening_a_huge_message_renders_a_bounded_head_and_a_note(
    name: str, make_app: AppFactory, store: ConversationStore
) -> None:
    text = HUGE[name]
    conv = store.create_conversation(model="m", system_prompt=None, settings={})
    store.append_message(conv.id, Message(Role.USER, text))
    reply = store.start_reply(conv.id)
    assert reply.id is not None
    store.finish_reply(reply.id, text, Status.COMPLETE)
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await ready(pilot)
        block = screen.query_one(AssistantBlock)
        assert block.source == text  # whole, for copying
        assert len(shown_source(block)) <= MAX_SHOWN_CHARS
        assert rendered_widgets(block) <= 3 * MAX_SHOWN_BLOCKS
        user = screen.query_one(UserBlock)
        assert user.source == text
        assert len(str(user.render())) <= MAX_SHOWN_CHARS + 200
        block.scroll_visible(animate=False, immediate=True)
        screen.chat.scroll_end(animate=False, immediate=True)
        await pilot.pause()
        assert "Message too long to show in full" in screen_text(app)
        kilo = f"{len(text) / 1000:,.0f} K characters"
        assert kilo in str(block.query_one(".too-long").render())


async def test_streaming_a_huge_reply_stops_rendering_at_the_budget(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    pieces = ["para\n\n" * 50] * 400  # 120 KB in 400 deltas, 20,000 paragraphs
    engine.queue(*pieces)
    app = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "go on and on")
        await wait_reply(pilot)
        block = screen.query_one(AssistantBlock)
        whole = "".join(pieces)
        assert block.source == whole
        conv = store.get_conversation(store.list_conversations()[0].id)
        assert conv.messages[-1].content == whole  # saved whole
        assert sum(isinstance(w, MarkdownBlock) for w in block.walk_children()) <= (
            MAX_SHOWN_BLOCKS + 30
        )
        assert len(shown_source(block)) <= MAX_SHOWN_CHARS
        note = str(block.query_one(".too-long").render())
        assert f"{len(whole) / 1000:,.0f} K characters" in note


async def test_streaming_long_text_in_one_paragraph_is_cut_by_characters() -> None:
    from tests.tui.test_streaming_render import Host, settle, show

    app = Host()
    async with app.run_test(size=(90, 30)) as pilot:
        block = await show(app, AssistantBlock("", None))
        for _ in range(100):
            await block.append("word " * 200)  # 1 KB
        await block.finish()
        await settle(pilot)
        assert len(block.source) == 100_000
        assert len(shown_source(block)) <= MAX_SHOWN_CHARS
        assert block.query(".too-long")
