"""The app's entries in the command palette (Ctrl+P): the action table's, by name."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING

from textual.app import SystemCommand

from mixchat.tui.actions import ACTIONS, Action, Where
from mixchat.tui.keymap import keymap_of

if TYPE_CHECKING:
    from mixchat.tui.app import MixchatApp
    from mixchat.tui.screens.chat import ChatScreen


def palette_actions() -> list[Action]:
    """The actions the palette offers, in the table's order."""
    return [action for action in ACTIONS if action.palette]


def replaced_system_commands() -> set[str]:
    """Textual's own palette entries that an action of the table replaces (its Keys panel,
    its Screenshot in ~/Downloads, its Theme and Quit)."""
    return {action.title for action in palette_actions()}


def palette_commands(app: MixchatApp, chat: ChatScreen) -> Iterator[SystemCommand]:
    """The palette entries of the table: its title, its description with its keys, and
    the action it runs (on the chat screen or the app). Model setup is offered only
    when no model is loaded (``MixchatApp.check_action``)."""
    keymap = keymap_of(app)
    for action in palette_actions():
        if not app.check_action(action.id, ()):
            continue
        node = chat if action.where is Where.CHAT else app
        keys = keymap.label(action.id)
        help_text = keymap.describe(action)
        help_text = help_text[:1].upper() + help_text[1:] + (f" ({keys})" if keys else "")
        run = functools.partial(app.run_action, action.palette_action, node)
        yield SystemCommand(action.title, help_text, run)
