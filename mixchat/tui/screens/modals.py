"""Small modal screens: confirm, rename, per-conversation settings, help."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, TextArea


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no question; Enter or y confirms, Esc or n cancels."""

    BINDINGS = [
        Binding("escape,n", "dismiss(False)", "No"),
        Binding("y", "dismiss(True)", "Yes"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.question))
            with Horizontal(classes="buttons"):
                yield Button("Delete", variant="error", id="yes")
                yield Button("Cancel", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class RenameScreen(ModalScreen[str | None]):
    """Ask for a new title."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("New title (Enter saves, Esc cancels)")
            yield Input(self.current, id="title")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        self.dismiss(value or None)


def _shown(value: Any) -> str:
    return "" if value is None else str(value)


class SettingsScreen(ModalScreen[dict[str, Any] | None]):
    """A conversation's system prompt and generation settings: one field per
    conversation-scoped setting of ``mixchat.config``, validated by its parser."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
    ]

    def __init__(self, current: dict[str, Any]) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        from mixchat.config import CONVERSATION_KEYS, OPTIONS

        with Vertical(classes="dialog wide", id="settings-dialog"):
            # The fields scroll on a short terminal; the error line and buttons stay put.
            with VerticalScroll(id="settings-fields"):
                yield Label("System prompt")
                yield TextArea(self.current.get("system_prompt") or "", id="system", soft_wrap=True)
                with Grid(classes="fields"):
                    for key in CONVERSATION_KEYS:
                        option = OPTIONS[key]
                        yield Label(Text(option.label))
                        field = Input(_shown(self.current.get(key)), id=key)
                        field.tooltip = Text(option.doc.capitalize())
                        yield field
            yield Label("", id="error", classes="error-line")
            with Horizontal(classes="buttons"):
                yield Button("Save (Ctrl+S)", variant="primary", id="save")
                yield Button("Cancel (Esc)", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

    def action_save(self) -> None:
        """Validate and return the new settings (system prompt included)."""
        from mixchat.config import CONVERSATION_KEYS, ConfigError, Settings, apply_values

        values = {key: self.query_one(f"#{key}", Input).value for key in CONVERSATION_KEYS}
        try:
            parsed = apply_values(Settings(), values, "settings")
        except ConfigError as exc:
            self.query_one("#error", Label).update(Text(str(exc)))
            return
        system = self.query_one("#system", TextArea).text
        result = {key: getattr(parsed, key) for key in CONVERSATION_KEYS}
        self.dismiss({"system_prompt": system if system.strip() else None, **result})


HELP_ROWS = [
    ("Enter", "send the message"),
    ("Shift+Enter, Ctrl+J", "new line in the message"),
    ("Esc", "stop the answer (in the search box: clear it, then leave it)"),
    ("Ctrl+N", "new conversation"),
    ("Ctrl+R", "answer your last message again (replaces the answer after it)"),
    ("Ctrl+L", "edit your last message: Enter sends it in place of the old turn, Esc cancels"),
    ("F3", "copy the last answer"),
    ("F4", "copy the last code block"),
    ("Ctrl+S", "conversation settings: system prompt, temperature, top-p, max tokens"),
    ("Ctrl+B", "show or hide the conversation list"),
    ("Ctrl+F", "search conversations"),
    ("Enter (in the list)", "open the conversation"),
    ("R (in the list), F2", "rename the conversation"),
    ("Delete, D (in the list)", "delete the conversation (asks first)"),
    ("Ctrl+T", "choose a theme"),
    ("Ctrl+P", "command palette: every action"),
    ("F1", "this help"),
    ("Ctrl+Q", "quit"),
]


class HelpScreen(ModalScreen[None]):
    """Every key, in one place."""

    BINDINGS = [Binding("escape,f1,q", "dismiss(None)", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide"):
            yield Label("Keys", classes="title")
            for key, what in HELP_ROWS:
                with Horizontal(classes="help-row"):
                    yield Static(Text(key), classes="key")
                    yield Static(Text(what), classes="what")
            yield Label("Esc closes this help", classes="hint")
