"""The message input: Enter sends, Shift+Enter or Ctrl+J inserts a newline (the keys of
``send`` and ``newline`` in the keymap in effect)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual import events
from textual.content import Content
from textual.message import Message
from textual.widgets import TextArea

from mixchat.textsafe import neutralize
from mixchat.tui.keymap import keymap_of
from mixchat.tui.widgets.keys import run_binding_now


def model_display_name(model: str) -> str:
    """A model's short name: the last part of a hub id or path, controls neutralised."""
    parts = [part for part in model.replace("\\", "/").split("/") if part]
    return neutralize(parts[-1]) if parts else ""


class PromptInput(TextArea):
    """A multi-line input that submits on Enter."""

    @dataclass
    class Submitted(Message):
        """The user pressed Enter with this text."""

        text: str

    # The keymap's, once mounted (``on_mount``); these are the defaults.
    _send_keys: frozenset[str] = frozenset({"enter"})
    _newline_keys: frozenset[str] = frozenset({"shift+enter", "ctrl+j"})

    def __init__(self, model: str = "", **kwargs: object) -> None:
        self.model_name = model_display_name(model)
        self.allow_empty = False  # files are attached: Enter sends without text
        super().__init__(
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            **kwargs,  # type: ignore[arg-type]
        )

    def on_mount(self) -> None:
        keys = keymap_of(self)
        send, newline = keys.keys("send"), keys.keys("newline")
        self._send_keys = frozenset(send)
        self._newline_keys = frozenset(newline)
        hint = f"({keys.label('send')} sends"
        hint += (
            f", {' or '.join(keys.label('newline').split(', '))} for a newline)" if newline else ")"
        )
        name = self.model_name
        self.placeholder = Content(f"Message {name}  {hint}" if name else f"Message  {hint}")

    async def _on_key(self, event: events.Key) -> None:
        # Handled here rather than by a binding: bindings run only after the key has
        # bubbled up to the app, so a fast typist's next keys would land first.
        if event.key in self._newline_keys:
            event.stop()
            event.prevent_default()
            self.action_newline()
            return
        if event.key in self._send_keys:
            event.stop()
            event.prevent_default()
            text = self.text
            if text.strip() or self.allow_empty:
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

    def _recompute_cursor_offset(self) -> None:
        # Textual bug: undoing a multi-line paste restores the shorter document, then
        # refreshes the scrollbars, which scroll to the cursor before the selection is
        # restored, so its row is out of bounds ("The document line index 1 is out of
        # bounds"). Reported upstream as Textualize/textual#6686; the proposed fix
        # (Textualize/textual#6687, open) clamps the location the same way.
        self._cursor_offset = self.wrapped_document.location_to_offset(
            self.clamp_visitable(self.cursor_location)
        )

    def undo(self) -> None:
        """Undo the last batch of edits; should Textual fail half-way, keep the draft."""
        self._guarded(super().undo)

    def redo(self) -> None:
        """Redo the last undone batch of edits; should Textual fail, keep the draft."""
        self._guarded(super().redo)

    def _guarded(self, edit: Callable[[], None]) -> None:
        text = self.text
        try:
            edit()
        except (ValueError, IndexError):
            # The document may be half-changed: put the draft back as it was. Its undo
            # history goes with it (Textual cannot replay a batch that failed).
            self.load_text(text)
            self.move_cursor(self.document.end)
            self.notify("Undo failed inside the text box; your text is kept.", severity="warning")

    def action_newline(self) -> None:
        """Insert a line break at the cursor."""
        self.insert("\n")
