"""Snapshot tests of what the app looks like (pytest-textual-snapshot).

Update after an intended visual change with: pytest tests/tui/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

import pytest

from mixchat.config import Settings
from mixchat.conversation import Message, Role, Status
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from mixchat.tui.app import MixchatApp

ANSWER = """Here is a **binary search** in Python:

```python
def bsearch(items: list[int], target: int) -> int:
    lo, hi = 0, len(items) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if items[mid] == target:
            return mid
        if items[mid] < target:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1
```

It runs in *O(log n)* time. Literal `[bold]` and [/INST] stay text.
"""


def _app(theme: str) -> MixchatApp:
    store = ConversationStore.open()
    conv = store.create_conversation(model="m", system_prompt=None, settings={})
    store.append_message(conv.id, Message(Role.USER, "Write a binary search in Python."))
    reply = store.start_reply(conv.id)
    assert reply.id is not None
    store.finish_reply(reply.id, ANSWER, Status.COMPLETE)
    store.append_message(conv.id, Message(Role.USER, "And in one line?"))
    stopped = store.start_reply(conv.id)
    assert stopped.id is not None
    store.finish_reply(stopped.id, "Use `bisect.bisect_left` from the", Status.INTERRUPTED)
    engine = ScriptedEngine()
    return MixchatApp(
        Settings(model="mistralai/Mixtral-8x7B-Instruct-v0.1", theme=theme),
        lambda _s: engine,
        store,
        resume_id=conv.id,
    )


async def _settle(pilot) -> None:  # type: ignore[no-untyped-def]
    await pilot.app.wait_for_model()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await _still(pilot)


async def _still(pilot) -> None:  # type: ignore[no-untyped-def]
    """Cursors that do not blink: a shot taken half a second later (a slow machine) shows
    the same screen."""
    for widget in pilot.app.screen.query("TextArea, Input"):
        widget.cursor_blink = False
    await pilot.pause()


def test_main_screen_dark(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(_app("mixchat-dark"), terminal_size=(110, 40), run_before=_settle)


def test_main_screen_light(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(_app("mixchat-light"), terminal_size=(110, 40), run_before=_settle)


def test_main_screen_high_contrast(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(_app("mixchat-high-contrast"), terminal_size=(110, 40), run_before=_settle)


# A representative answer from the render corpus: aligned table, nested list, quote,
# inline HTML as text, code; in each built-in theme.
RICH_ANSWER = """## Comparison

| Language | Typing | Speed |
|:---------|:------:|------:|
| Python | dynamic | 1 |
| Rust | static | 100 |

- Steps:
  1. read <kbd>input</kbd>
  2. **parse** it
- [x] done

> Quoted *advice*.

```rust
fn main() { println!("hi"); } // a line long enough to scroll sideways in the fence here
```
"""


def _rich_app(theme: str) -> MixchatApp:
    store = ConversationStore.open()
    conv = store.create_conversation(model="m", system_prompt=None, settings={})
    store.append_message(conv.id, Message(Role.USER, "Compare Python and Rust."))
    reply = store.start_reply(conv.id)
    assert reply.id is not None
    store.finish_reply(reply.id, RICH_ANSWER, Status.COMPLETE)
    store.rename(conv.id, "Comparing Python and Rust for a command line tool")
    engine = ScriptedEngine()
    return MixchatApp(
        Settings(model="HuggingFaceTB/SmolLM2-135M-Instruct", theme=theme),
        lambda _s: engine,
        store,
        resume_id=conv.id,
    )


@pytest.mark.parametrize("theme", ["mixchat-dark", "mixchat-light", "mixchat-high-contrast"])
def test_rich_answer(snap_compare, theme: str) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(_rich_app(theme), terminal_size=(100, 36), run_before=_settle)


def test_settings_at_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def open_settings(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.press("ctrl+s")
        await _still(pilot)

    assert snap_compare(_rich_app("mixchat-dark"), terminal_size=(80, 24), run_before=open_settings)


def test_narrow_60x20_with_a_notification(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def notify(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        pilot.app.notify("Copied the last answer.", timeout=60)
        await pilot.pause()

    assert snap_compare(_rich_app("mixchat-dark"), terminal_size=(60, 20), run_before=notify)


def test_help_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def open_help(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.press("f1")
        await _still(pilot)

    assert snap_compare(_app("mixchat-dark"), terminal_size=(110, 40), run_before=open_help)
