"""A streamed reply ends up looking exactly like the same reply rendered from its whole text.

Each reply is streamed into an ``AssistantBlock`` in many chunkings (whole, token-like,
character by character, seeded random, and splits inside fence markers and inside
multi-code-point characters), then compared with a block built from the full text (how a
saved message is shown): the rendered screen, cell by cell with styles, and the blocks.
Long replies are split into Markdown segments and open code fences are streamed
incrementally; both paths are exercised (``SEGMENT_BLOCKS`` is lowered so short replies
are cut too).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import pairwise

import pytest
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets._markdown import MarkdownBlock

from mixchat.conversation import Status
from mixchat.textsafe import neutralize
from mixchat.tui.app import CSS_FILE
from mixchat.tui.widgets import reply_renderer
from mixchat.tui.widgets.chat_view import AssistantBlock
from mixchat.tui.widgets.code_stream import CodeFence, LineHighlighter, open_fence, parse_opener

SIZE = (90, 220)

PYTHON = '''def load(path: str) -> dict[str, int]:
    """Read counts.

    Lines look like ``name = 3``.
    """
    counts = {}  # [bold]not markup[/bold]
    for line in open(path):
        name, _, value = line.partition("=")
        counts[name.strip()] = int(value)
    text = """a
multi-line [/INST] string"""
    return counts
'''

REPLY = f"""# Counting words

Here is a **plan** with `inline code`, a [link](https://example.com) and [bold]markup[/bold].

1. Read the file
2. Count the words

- nested:
  - item with *emphasis*
- last [/INST]

> A quote
> over two lines.

```python
{PYTHON}```

| name | count |
|------|-------|
| a    | 1     |

Setext heading
--------------

    indented code block

Wide: 日本語テキスト, e\u0301, 👩\u200d💻 and 🇫🇷 stay whole.

~~~
tilde fence with ``` inside
~~~

Escapes \x1b[31mred\x1b[0m and \x1b]52;c;aGk=\x07 stay visible.

```sh
echo "\x1b]0;title\x07" [bold]
```

***

Loose list:

1. one

2. two

Final words.
"""

TRICKY = """Intro line one\u2028with a line separator
continues here.
Setext too
===

2) starts at two
3) three

- item

  ```python
  inside_a_list = True
  ```

- second
lazy continuation

> quote
lazy quote line

   ```js
   indented(fence)
  less indented
   ```

````markdown
```python
not_closed_by_three()
```
````

``` not`a fence ```

<div>
html *block*

</div>

| a | b |
|---|---|
| 1 | 2 |
| 3 | 4 |
after table

```
no newline at the end\r\n, a line\u2028separator, a tab\there
```"""

UNCLOSED = "Start:\n\n```python\nx = 1\n  # [/INST]\ny = '''open\n"


class Host(App[None]):
    """Just a scroll view to put assistant blocks in, with the app's CSS."""

    CSS_PATH = CSS_FILE

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="chat")


def split_at(text: str, cuts: list[int]) -> list[str]:
    """``text`` cut at the given indexes (empty pieces dropped)."""
    bounds = [0, *sorted(set(cuts)), len(text)]
    return [text[a:b] for a, b in pairwise(bounds) if b > a]


def fence_splits(text: str) -> list[str]:
    """Chunks cut inside every fence marker (after each backtick or tilde of a run)."""
    return split_at(text, [i for i, ch in enumerate(text) if ch in "`~"])


def cluster_splits(text: str) -> list[str]:
    """Chunks cut between the code points of combined characters (accents, ZWJ, flags)."""
    return split_at(text, [i for i, ch in enumerate(text) if ch in "\u0301\u200d💻🇷"])


def random_splits(text: str, seed: int, most: int) -> list[str]:
    """Seeded random chunk sizes from 1 to ``most``."""
    rng = random.Random(seed)
    pieces, at = [], 0
    while at < len(text):
        size = rng.randint(1, most)
        pieces.append(text[at : at + size])
        at += size
    return pieces


def chunkings(text: str) -> Iterator[tuple[str, list[str]]]:
    """Named ways to cut ``text`` into deltas."""
    yield "whole", [text]
    yield "tokens", [text[i : i + 4] for i in range(0, len(text), 4)]
    yield "lines", text.splitlines(keepends=True)
    yield "fence-markers", fence_splits(text)
    yield "clusters", cluster_splits(text)
    for seed in range(2):
        yield f"random-{seed}", random_splits(text, seed, 40)


def screen_cells(app: App[None]) -> list[list[tuple[str, object]]]:
    """The rendered screen: per line, its segments' text and style."""
    strips: list[Strip] = app.screen._compositor.render_strips()
    return [[(seg.text, seg.style) for seg in strip] for strip in strips]


def screen_text(app: App[None]) -> str:
    return "\n".join(strip.text.rstrip() for strip in app.screen._compositor.render_strips())


def block_dump(block: AssistantBlock) -> list[tuple[str, str]]:
    """Every rendered leaf block, across segments: its kind and its text."""
    dump = []
    for segment in block.segments:
        for widget in segment.walk_children(MarkdownBlock):
            if isinstance(widget, CodeFence):
                dump.append(("fence", widget.shown_text()))
            elif not widget.children:
                dump.append((type(widget).__name__, str(widget.render())))
    return dump


def shown(app: App[None], widget: Widget) -> list[str]:
    """The screen lines a widget occupies."""
    strips = app.screen._compositor.render_strips()
    x, y, width, height = widget.region
    return [strip.crop(x, x + width).text for strip in strips[y : y + height]]


async def show(app: App[None], block: AssistantBlock) -> AssistantBlock:
    view = app.query_one("#chat", VerticalScroll)
    await view.remove_children()
    await view.mount(block)
    return block


async def settle(pilot) -> None:  # type: ignore[no-untyped-def]
    await pilot.pause()
    await pilot.pause()


async def reference(pilot, text: str):  # type: ignore[no-untyped-def]
    """Screen and blocks of ``text`` rendered at once, as a saved message is."""
    block = await show(pilot.app, AssistantBlock(text, Status.COMPLETE))
    await settle(pilot)
    return screen_cells(pilot.app), screen_text(pilot.app), block_dump(block)


async def streamed(pilot, pieces: list[str]):  # type: ignore[no-untyped-def]
    """Screen and blocks after streaming ``pieces`` into an empty block."""
    block = await show(pilot.app, AssistantBlock("", None))
    for piece in pieces:
        await block.append(piece)
    await block.finish()
    await settle(pilot)
    assert block.source == "".join(pieces)
    return screen_cells(pilot.app), screen_text(pilot.app), block_dump(block)


@pytest.mark.parametrize("segment_blocks", [reply_renderer.SEGMENT_BLOCKS, 2])
@pytest.mark.parametrize(
    "text", [REPLY, TRICKY, UNCLOSED], ids=["reply", "tricky", "unclosed-fence"]
)
@pytest.mark.slow
async def test_streamed_reply_renders_like_whole_text(
    monkeypatch: pytest.MonkeyPatch, segment_blocks: int, text: str
) -> None:
    monkeypatch.setattr(reply_renderer, "SEGMENT_BLOCKS", segment_blocks)
    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        want_cells, want_text, want_blocks = await reference(pilot, text)
        last_line = neutralize(text).rstrip().rsplit("\n", 1)[-1].strip()
        assert last_line in want_text  # the whole reply fits on the screen
        for name, pieces in chunkings(text):
            cells, shown, blocks = await streamed(pilot, pieces)
            assert blocks == want_blocks, name
            assert shown == want_text, name
            assert cells == want_cells, name


@pytest.mark.slow
async def test_character_by_character(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reply_renderer, "SEGMENT_BLOCKS", 1)
    text = REPLY[: REPLY.index("| name")]
    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        want = await reference(pilot, text)
        assert await streamed(pilot, list(text)) == want


@pytest.mark.slow
async def test_long_reply_is_cut_into_segments_with_the_same_spacing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reply_renderer, "SEGMENT_BLOCKS", 3)
    text = "".join(
        f"## Part {i}\n\nParagraph {i}.\n\n```\ncode {i}\n```\n\n- a\n- b\n\n> q {i}\n\n"
        for i in range(6)
    )
    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        want = await reference(pilot, text)
        block = await show(app, AssistantBlock("", None))
        for i in range(0, len(text), 5):
            await block.append(text[i : i + 5])
        await block.finish()
        await settle(pilot)
        assert len(block.segments) > 3  # it was cut...
        assert "".join(s.source for s in block.segments) == text
        assert (screen_cells(app), screen_text(app), block_dump(block)) == want  # ...invisibly


async def test_open_fence_streams_incrementally_and_literally() -> None:
    head = "Look:\n\n```python\n"
    lines = [f"x{i} = '[bold]{i}[/bold]'  # \x1b[31m[/INST]\n" for i in range(40)]
    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        block = await show(app, AssistantBlock("", None))
        await block.append(head)
        fence = block.query_one(CodeFence)
        assert fence.streaming
        for count, line in enumerate(lines, 1):
            await block.append(line[:7])
            if count <= 12:  # on screen too, as each line starts and as it grows
                await pilot.pause()
                assert shown(app, fence)[-2].strip() == neutralize(line[:7])
            await block.append(line[7:])
            if count <= 12:
                await pilot.pause()
                assert shown(app, fence)[-2].strip() == neutralize(line).strip()
            code = fence.shown_text()
            assert code == neutralize("".join(lines[:count])).rstrip("\n")
            assert fence.streaming and block.query_one(CodeFence) is fence
        assert "[bold]39[/bold]" in code and "\\x1b[31m[/INST]" in code
        assert "\x1b" not in code
        await block.append("``")
        assert fence.streaming  # a partial closing line is not a close
        await block.append("`\nAfter.\n")
        assert not fence.streaming  # the whole block went back to Markdown
        await block.finish()
        await settle(pilot)
        text = screen_text(app)
        assert "x39 = '[bold]39[/bold]'  # \\x1b[31m[/INST]" in text
        assert "After." in text and "\x1b" not in text


async def test_markup_and_escapes_stay_literal() -> None:
    text = "[bold]b[/bold] [/INST] \x1b]52;c;aGk=\x07\u2028\n\n```\n[red]r[/red] \x1b[2J\n```\n"
    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        _, shown, blocks = await streamed(pilot, random_splits(text, 7, 3))
    assert "[bold]b[/bold] [/INST] \\x1b]52;c;aGk=\\x07\\u2028" in shown
    assert "[red]r[/red] \\x1b[2J" in shown
    assert "\x1b" not in shown and "\x07" not in shown
    assert ("fence", "[red]r[/red] \\x1b[2J") in blocks


def test_fence_openers_and_closers() -> None:
    opener = parse_opener("```python title")
    assert opener is not None and opener.language == "python"
    assert opener.closes("```") and opener.closes("   ````  ")
    assert not opener.closes("    ```") and not opener.closes("~~~") and not opener.closes("``` x")
    assert parse_opener("``` a`b") is None and parse_opener("    ```") is None
    tilde = parse_opener("~~~~")
    assert tilde is not None and tilde.closes("~~~~~") and not tilde.closes("~~~")
    assert open_fence("```\ncode\n```\n") is None
    found = open_fence("  ```js\n  let a\n``")
    assert found is not None and found[1] == "  let a\n``" and found[0].indent == 2
    assert found[0].strip_indent("    b") == "  b"


def test_line_highlighter_matches_whole_highlight() -> None:
    from textual.highlight import HighlightTheme, highlight

    lines = PYTHON.rstrip("\n").split("\n")
    whole = highlight(PYTHON.rstrip("\n"), language="python").split("\n", allow_blank=True)
    for seed in range(5):
        rng = random.Random(seed)
        highlighter = LineHighlighter("python", HighlightTheme)
        rows: list = []
        at = 0
        while at < len(lines):
            size = rng.randint(1, 3)
            start, new = highlighter.add_lines(lines[at : at + size])
            rows[start:] = new
            at += size
        assert [r.plain for r in rows] == [w.plain for w in whole]
        assert all(r.is_same(w) for r, w in zip(rows, whole, strict=True)), seed


class SideBySide(App[None]):
    """Two columns: the streamed block on the left, the reference on the right."""

    CSS_PATH = CSS_FILE
    CSS = "#left, #right { width: 50%; }"

    def compose(self) -> ComposeResult:
        from textual.containers import Horizontal

        with Horizontal():
            yield VerticalScroll(id="left")
            yield VerticalScroll(id="right")


@pytest.mark.slow
async def test_every_step_of_a_stream_shows_what_its_text_so_far_renders_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reply_renderer, "SEGMENT_BLOCKS", 2)
    long = " ".join(f"word{i} [b]x[/b]" for i in range(30))  # wraps over a few lines
    text = f"# Title\n\n{long}\n\n1. one\n\n2. {long}\n\n> {long}\n\nend\n"
    app = SideBySide()
    async with app.run_test(size=(120, 60)) as pilot:
        streaming = AssistantBlock("", None)
        await app.query_one("#left").mount(streaming)
        right = app.query_one("#right", VerticalScroll)
        at = 0
        for piece in random_splits(text, 11, 60):
            await streaming.append(piece)
            at += len(piece)
            await pilot.pause()
            # Looked at before anything else on screen changes (which would re-layout it).
            streamed = shown(app, streaming)
            await right.remove_children()
            reference = AssistantBlock(text[:at], None)
            await right.mount(reference)
            await pilot.pause()
            assert streamed == shown(app, reference), at
        await streaming.finish()
