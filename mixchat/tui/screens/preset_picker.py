"""The preset picker: the presets ``mixchat presets`` lists, in a searchable list; the one
chosen is applied to the open conversation (its saved settings are written, as
``ask -c --preset`` does), or, with none open, to the new conversations started from now on.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from textual.command import SimpleCommand
from textual.markup import escape

from mixchat import presets
from mixchat.config import ConfigError
from mixchat.presets import Preset
from mixchat.tui.errors import notify_store_errors

if TYPE_CHECKING:
    from mixchat.tui.screens.chat import ChatScreen


class PresetPicker:
    """Lists the user's presets and applies the chosen one."""

    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen

    def open(self) -> None:
        """Show the presets; a file that cannot be read is one notification each."""
        screen = self.screen
        try:
            found = presets.load_presets()
        except ConfigError as exc:
            screen.notify(str(exc), title="Presets", severity="error", markup=False)
            return
        for _name, line in found.errors:
            screen.notify(line, title="A preset was skipped", severity="error", markup=False)
        if not found.presets:
            if not found.errors:
                screen.notify(
                    "No presets: add [presets.NAME] tables to config.toml or NAME.toml files "
                    "to the presets directory (`mixchat presets` says where).",
                    markup=False,
                )
            return
        # The palette reads names and help as markup: both are escaped.
        commands = [
            SimpleCommand(
                escape(preset.name),
                functools.partial(self.apply, preset),
                escape(preset.description or presets.summary(preset)),
            )
            for preset in found.presets
        ]
        screen.app.search_commands(commands, placeholder="Apply a preset…")

    @notify_store_errors
    def apply(self, preset: Preset) -> None:
        """Apply ``preset`` to the open conversation, or to new ones when none is open.
        What the user chooses now wins over a flag given when the app started."""
        control = self.screen.control
        control.sources = control.sources.without_flags(preset.values)
        if control.conversation is None:
            control.sources = control.sources.with_preset(preset)
            for key in preset.values:
                control.new_settings.pop(key, None)
            where = "new conversations"
        else:
            control.conversation = presets.apply_preset(
                self.screen.store, control.conversation, preset
            )
            control.reload()
            where = "this conversation"
        self.screen.notify(f"Preset {preset.name} applied to {where}.", markup=False)

    def notify(self, message: str, **kwargs: object) -> None:
        """For ``notify_store_errors``: a failure is shown on the screen."""
        self.screen.notify(message, **kwargs)  # type: ignore[arg-type]
