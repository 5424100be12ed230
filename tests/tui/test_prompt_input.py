"""The message box survives Textual's TextArea undo bug, and keeps the draft."""

from __future__ import annotations

import pytest
from textual import events
from textual.widgets import TextArea

from mixchat.tui.widgets.prompt_input import PromptInput
from tests.tui.conftest import AppFactory
from tests.tui.helpers import ready

PASTE = "\n".join(f"line {i} of a long paste into the message box" for i in range(20))


async def _paste(pilot, prompt: PromptInput, text: str) -> None:  # type: ignore[no-untyped-def]
    # As the terminal driver delivers it: to the app, which forwards it to the focus.
    prompt.app.post_message(events.Paste(text))
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (60, 20), (120, 40)])
async def test_undo_after_a_large_paste_keeps_the_app_and_the_draft(
    size: tuple[int, int], make_app: AppFactory
) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        prompt = app.query_one(PromptInput)
        prompt.focus()
        await pilot.press(*"draft ")
        await _paste(pilot, prompt, PASTE)
        assert prompt.text == "draft " + PASTE
        await pilot.press("ctrl+z")
        await pilot.pause()
        assert app.is_running
        assert prompt.text == "draft "  # the paste is undone, the typing kept
        await pilot.press("ctrl+z", "ctrl+z")
        await pilot.pause()
        assert app.is_running and prompt.text == ""
        await pilot.press("ctrl+y")
        await pilot.pause()
        assert app.is_running and prompt.text.startswith("draft")
        # The cursor is usable afterwards: typing goes where it should.
        await pilot.press("end", "x")
        assert prompt.text.endswith("x") and app.is_running


async def test_guard_restores_the_draft_when_undo_fails_inside_textual(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = TextArea._undo_batch

    def failing(self: TextArea, edits: object) -> None:
        original(self, edits)  # type: ignore[arg-type]
        raise ValueError("The document line index 1 is out of bounds.")

    monkeypatch.setattr(TextArea, "_undo_batch", failing)
    app = make_app()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await ready(pilot)
        prompt = app.query_one(PromptInput)
        prompt.focus()
        await _paste(pilot, prompt, PASTE)
        await pilot.press("ctrl+z")
        await pilot.pause()
        assert app.is_running
        assert prompt.text == PASTE  # the draft as it was before the failed undo
        assert prompt.cursor_location == prompt.document.end
        assert any("Undo" in n.message for n in app._notifications)
        await pilot.press("x")
        assert prompt.text == PASTE + "x"
