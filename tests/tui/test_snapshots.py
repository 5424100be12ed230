"""Snapshot tests of what the app looks like (pytest-textual-snapshot).

Update after an intended visual change with: pytest tests/tui/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

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
    await pilot.pause()


def test_main_screen_dark(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(_app("mixchat-dark"), terminal_size=(110, 40), run_before=_settle)


def test_main_screen_light(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(_app("mixchat-light"), terminal_size=(110, 40), run_before=_settle)


def test_help_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def open_help(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.press("f1")
        await pilot.pause()

    assert snap_compare(_app("mixchat-dark"), terminal_size=(110, 40), run_before=open_help)
