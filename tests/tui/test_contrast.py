"""Every text the app shows reaches WCAG AA (4.5:1) in every built-in theme, and AAA (7:1)
in the high-contrast theme.

Computed from what is really drawn: each scene is rendered with the theme, and every
cell holding text is checked with the colours the terminal gets (CSS variables resolved,
alpha blended, "dim" and "reverse" applied). The scenes cover the placeholder, status
labels (stopped, error), the status bar, the sidebar (search placeholder, titles, the
highlighted one, focused and not), Markdown (headings, emphasis, inline code, links,
quotes, lists, tables, highlighted code of several languages), the "earlier messages"
button, notifications of each severity, the help, settings (with its error line),
rename and delete windows, and the theme picker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from mixchat.config import Settings
from mixchat.conversation import Message, Role, Status
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from mixchat.tui.app import MixchatApp
from tests.tui.contrast import low_contrast, ratio, text_colours
from tests.tui.screen import screen_text

REQUIRED = {"mixchat-dark": 4.5, "mixchat-light": 4.5, "mixchat-high-contrast": 7.0}
SIZE = (120, 60)

ANSWER = """# Heading one

## Heading two

### Heading three

#### Heading four

##### Heading five

###### Heading six

A paragraph with **bold**, *emphasis*, ~~struck~~, `inline code` and a [link](https://example.com).

> A block quote with `code` and **bold**.

1. First
2. Second
   - nested *item*

| Name | Right | Centre |
|:-----|------:|:------:|
| alpha | 1 | x |
| beta | 22 | yy |

```python
# a comment
def greet(name: str = "world") -> None:
    \"\"\"Docstring.\"\"\"
    value = 42 + 3.5  # numbers
    print(f"hello {name}", value, None, True)
```

```javascript
// comment
const re = /ab+c/g; let s = `t ${1}`;
```

```bash
for f in *.txt; do echo "$f" && exit 1; done
```

```json
{"key": [1, 2.5, true, null, "s"]}
```

---

The end.
"""


def _store_with_history(store: ConversationStore) -> str:
    conv = store.create_conversation(model="m", system_prompt=None, settings={})
    for i in range(41):  # more than are shown at once: the "earlier messages" button
        store.append_message(conv.id, Message(Role.USER, f"old question {i}"))
    reply = store.start_reply(conv.id)
    assert reply.id is not None
    store.finish_reply(reply.id, ANSWER, Status.COMPLETE)
    store.append_message(conv.id, Message(Role.USER, "And then?"))
    stopped = store.start_reply(conv.id)
    assert stopped.id is not None
    store.finish_reply(stopped.id, "Partly", Status.INTERRUPTED)
    store.append_message(conv.id, Message(Role.USER, "Again?"))
    failed = store.start_reply(conv.id)
    assert failed.id is not None
    store.finish_reply(failed.id, "Broke", Status.ERROR)
    store.rename(conv.id, "The open conversation")
    for title in ("Another conversation", "A third one"):
        other = store.create_conversation(
            model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "q")
        )
        store.rename(other.id, title)
    return conv.id


Scene = Callable[[Pilot[None]], Awaitable[str]]


async def main_screen(pilot: Pilot[None]) -> str:
    app = pilot.app
    app.notify("Information toast", title="Info")
    app.notify("Warning toast", title="Careful", severity="warning")
    app.notify("Error toast", title="Broken", severity="error")
    await pilot.pause()
    return "main"


async def scrolled_to_top(pilot: Pilot[None]) -> str:
    chat = pilot.app.chat_screen.chat  # type: ignore[attr-defined]
    chat.scroll_home(animate=False, immediate=True)
    chat.release_anchor()
    await pilot.pause()
    return "top"


async def answer(pilot: Pilot[None]) -> str:
    from mixchat.tui.widgets.chat_view import AssistantBlock

    chat = pilot.app.chat_screen.chat  # type: ignore[attr-defined]
    chat.release_anchor()
    block = next(b for b in chat.query(AssistantBlock) if b.source == ANSWER)
    chat.scroll_to_widget(block, animate=False, immediate=True, top=True)
    await pilot.pause()
    return "answer"


async def code(pilot: Pilot[None]) -> str:
    from mixchat.tui.widgets.code_stream import CodeFence

    chat = pilot.app.chat_screen.chat  # type: ignore[attr-defined]
    chat.release_anchor()
    fence = chat.query(CodeFence).first()
    chat.scroll_to_widget(fence, animate=False, immediate=True, top=True)
    await pilot.pause()
    return "code"


async def list_focused(pilot: Pilot[None]) -> str:
    pilot.app.chat_screen.sidebar.options.focus()  # type: ignore[attr-defined]
    await pilot.pause()
    return "list-focused"


async def search_typed(pilot: Pilot[None]) -> str:
    search = pilot.app.query_one("#search", Input)
    search.focus()
    await pilot.press("o", "p")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    return "search"


async def help_screen(pilot: Pilot[None]) -> str:
    await pilot.press("f1")
    await pilot.pause()
    return "help"


async def settings_error(pilot: Pilot[None]) -> str:
    await pilot.press("ctrl+s")
    await pilot.pause()
    pilot.app.screen.query_one("#temperature", Input).value = "hot"
    await pilot.press("ctrl+s")
    await pilot.pause()
    return "settings"


async def rename(pilot: Pilot[None]) -> str:
    await pilot.press("f2")
    await pilot.pause()
    return "rename"


async def delete(pilot: Pilot[None]) -> str:
    pilot.app.chat_screen.sidebar.options.focus()  # type: ignore[attr-defined]
    await pilot.press("d")
    await pilot.pause()
    return "delete"


async def theme_picker(pilot: Pilot[None]) -> str:
    await pilot.press("ctrl+t")
    await pilot.pause()
    await pilot.press("down")
    await pilot.pause()
    return "themes"


async def palette(pilot: Pilot[None]) -> str:
    await pilot.press("ctrl+p")
    await pilot.pause()
    await pilot.press(*"re")
    await pilot.pause()
    await pilot.pause()
    return "palette"


SCENES: list[Scene] = [
    main_screen,
    scrolled_to_top,
    answer,
    code,
    list_focused,
    search_typed,
    help_screen,
    settings_error,
    rename,
    delete,
    theme_picker,
    palette,
]


EXPECTED = {
    "main": ["Message model", "stopped", "Broke", "Warning toast"],
    "top": ["earlier messages", "old question 10"],
    "answer": ["Heading one", "inline code", "Heading six", "block quote", "beta"],
    "code": ["# a comment", "const re", "for f in", '"key"', "The end."],
    "list-focused": ["The open conversation", "Another conversation"],
    "search": ["op"],
    "help": ["In the chat", "Ctrl+N"],  # the first rows: the help scrolls
    "settings": ["temperature", "Save (Ctrl+S)"],
    "rename": ["New title"],
    "delete": ["Delete", "Cancel"],
    "themes": ["mixchat-dark"],
    "palette": ["Regenerate"],
}


@pytest.mark.slow
@pytest.mark.parametrize("theme", sorted(REQUIRED))
async def test_every_text_reaches_the_required_contrast(
    theme: str, store: ConversationStore
) -> None:
    conv_id = _store_with_history(store)
    engine = ScriptedEngine()
    app = MixchatApp(Settings(model="org/model", theme=theme), lambda _s: engine, store, conv_id)
    failures: dict[str, list[object]] = {}
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await app.wait_for_model()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.theme == theme
        for scene in SCENES:
            name = await scene(pilot)
            await pilot.pause()
            await pilot.pause()
            text = screen_text(app)
            # The scene shows what it is meant to (else it would prove nothing).
            for fragment in EXPECTED[name]:
                assert fragment in text, (name, fragment)
            assert len(text_colours(app)) >= 3
            failures[name] = list(low_contrast(app, REQUIRED[theme]))
            while len(app.screen_stack) > 1:  # back to the chat screen for the next one
                app.pop_screen()
                await pilot.pause()
            app.clear_notifications()
            app.query_one("#input").focus()
            app.query_one("#search", Input).value = ""
            await pilot.pause()
    assert {k: v for k, v in failures.items() if v} == {}


def test_ratio_matches_wcag_reference_values() -> None:
    from rich.color import Color

    assert round(ratio(Color.parse("#000000"), Color.parse("#ffffff")), 1) == 21.0
    assert round(ratio(Color.parse("#777777"), Color.parse("#ffffff")), 2) == 4.48
    assert round(ratio(Color.parse("#595959"), Color.parse("#ffffff")), 2) == 7.0
