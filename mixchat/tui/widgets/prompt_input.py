"""The message input: Enter sends, Shift+Enter or Ctrl+J inserts a newline."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea

from mixchat.tui.widgets.keys import run_binding_now

NEWLINE_KEYS = ("shift+enter", "ctrl+j")


class PromptInput(TextArea):
    """A multi-line input that submits on Enter."""

    @dataclass
    class Submitted(Message):
        """The user pressed Enter with this text."""

        text: str

    def __init__(self, **kwargs: object) -> None:
        super().__init__(
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            placeholder="Message Mixtral  (Enter sends, Shift+Enter or Ctrl+J for a newline)",
            **kwargs,  # type: ignore[arg-type]
        )

    async def _on_key(self, event: events.Key) -> None:
        # Handled here rather than by a binding: bindings run only after the key has
        # bubbled up to the app, so a fast typist's next keys would land first.
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.action_newline()
            return
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            text = self.text
            if text.strip():
                self.post_message(self.Submitted(text))
            return
        if await run_binding_now(self, event):  # Backspace & co. in typing order
            return
        await super()._on_key(event)

    def take(self, sent: str) -> None:
        """Remove ``sent`` (the text just sent) from the box, keeping whatever was typed
        after Enter while the message was being saved."""
        current = self.text
        self.recall(current[len(sent) :] if current.startswith(sent) else current)

    def recall(self, text: str) -> None:
        """Replace the text with ``text``, the cursor at its end, ready to type on."""
        self.text = text
        self.move_cursor(self.document.end)

    def action_newline(self) -> None:
        """Insert a line break at the cursor."""
        self.insert("\n")
