"""Small modal screens: confirm, rename, per-conversation settings, help."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, TextArea

from mixchat.tui.actions import Where, bindings
from mixchat.tui.keymap import Keymap, keymap_of


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; Cancel has the focus. Its keys are ``Where.CONFIRM``'s (Y, Esc, N)."""

    BINDINGS = bindings(Where.CONFIRM)

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

    BINDINGS = bindings(Where.RENAME)

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            cancel = keymap_of(self).say("rename_cancel")
            yield Label(Text(f"New title (Enter saves, {cancel} cancels)"))
            yield Input(self.current, id="title")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        self.dismiss(value or None)


def _shown(value: Any) -> str:
    return "" if value is None else str(value)


class SettingsScreen(ModalScreen[dict[str, Any] | None]):
    """A conversation's system prompt and generation settings: one field per
    conversation-scoped setting of ``mixchat.config``, validated by its parser."""

    BINDINGS = bindings(Where.SETTINGS)

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
                keys = keymap_of(self)
                save, cancel = keys.say("settings_save"), keys.say("settings_cancel")
                yield Button(Text(f"Save ({save})"), variant="primary", id="save")
                yield Button(Text(f"Cancel ({cancel})"), id="cancel")

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


class HelpScreen(ModalScreen[None]):
    """Every key, in one place: the rows of the action table, with the keys in effect."""

    BINDINGS = bindings(Where.HELP)

    def __init__(self, keymap: Keymap | None = None) -> None:
        super().__init__()
        self.keymap = keymap

    def compose(self) -> ComposeResult:
        keymap = self.keymap or keymap_of(self)
        with VerticalScroll(classes="dialog wide"):
            yield Label("Keys", classes="title")
            heading = None
            for where, keys, what in keymap.help_rows():
                if where is not heading:
                    heading = where
                    yield Label(Text(where.value), classes="help-heading")
                with Horizontal(classes="help-row"):
                    yield Static(Text(keys), classes="key")
                    yield Static(Text(what), classes="what")
            close = keymap.say("help_close")
            yield Label(
                Text(f"{close} closes this help; {keymap.say('palette')}: every action by name"),
                classes="hint",
            )
