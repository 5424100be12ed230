"""Pilot helpers shared by the app's behaviour tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual import events
from textual.pilot import Pilot

from mixchat.store import ConversationStore
from mixchat.tui.app import MixchatApp
from mixchat.tui.screens.chat import ChatScreen
from mixchat.tui.widgets.prompt_input import PromptInput


async def ready(pilot: Pilot[None]) -> ChatScreen:
    """Wait until the model is loaded (and what it started has run); the chat screen."""
    app = pilot.app
    assert isinstance(app, MixchatApp)
    await app.wait_for_model()
    await app.workers.wait_for_complete()
    await pilot.pause()
    screen = app.chat_screen
    assert screen.engine is not None
    return screen


async def settle(pilot: Pilot[None]) -> None:
    """Let every worker finish and the messages they posted be handled."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def type_and_send(pilot: Pilot[None], text: str) -> None:
    prompt = pilot.app.query_one(PromptInput)
    prompt.focus()
    prompt.text = text
    await pilot.press("enter")


async def wait_reply(pilot: Pilot[None]) -> None:
    """Wait for the reply worker and the messages it posted."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def until(pilot: Pilot[None], condition: Callable[[], bool], what: str) -> None:
    """Let the app handle its messages until ``condition`` holds (posted from a thread)."""
    deadline = time.monotonic() + 60  # by the clock: a loaded machine is slow at times
    while time.monotonic() < deadline:
        if condition():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"never happened: {what}")


async def burst(pilot: Pilot[None], *keys: str) -> None:
    """Queue ``keys`` all at once, as a fast typist or a paste of keys does (``press``
    waits for each key to be handled before sending the next)."""
    app = pilot.app
    assert app._driver is not None
    for key in keys:
        char = key if len(key) == 1 else (" " if key == "space" else None)
        event = events.Key(key, char)
        event.set_sender(app)
        app._driver.send_message(event)
    await settle(pilot)


def screen_text(app: MixchatApp) -> list[str]:
    """What the terminal shows, line by line."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def only_conversation(store: ConversationStore):  # type: ignore[no-untyped-def]
    rows = store.list_conversations()
    assert len(rows) == 1
    return store.get_conversation(rows[0].id)
