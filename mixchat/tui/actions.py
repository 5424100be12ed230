"""Every action of the app and its keys, in one table.

The key bindings of the app, the chat screen, the conversation list, the dialogs and the
no-model screen, the command palette's entries and the help screen are all generated from
``ACTIONS``; the user's ``[keymap]`` in ``config.toml`` (``mixchat.tui.keymap``) changes the
keys by action id. Nothing else in the app names a key: texts that mention one ask the
keymap for its label (``Keymap.label``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from textual.binding import Binding, BindingType


class Where(enum.Enum):
    """Where an action's keys apply. The value is the help screen's heading."""

    MESSAGE_BOX = "In the message box"
    CHAT = "In the chat"
    MESSAGES = "When a message is selected"
    SIDEBAR = "In the conversation list"
    APP = "Everywhere"
    CONFIRM = "When asked to confirm"
    RENAME = "When renaming"
    ATTACH = "When attaching a file"
    SETTINGS = "In the settings"
    HELP = "In this help"
    SETUP = "When no model is loaded"

    @property
    def modal(self) -> bool:
        """A dialog over the chat: only its own keys and the app's priority keys apply."""
        return self in {Where.CONFIRM, Where.RENAME, Where.SETTINGS, Where.HELP, Where.ATTACH}


@dataclass(frozen=True)
class Action:
    """One thing a user can do, and the keys that do it.

    ``description`` may name other actions' keys as ``{action_id}``: they are filled in
    with the keys in effect (``Keymap.describe``).
    """

    id: str  # the name in [keymap], and the Textual binding id
    keys: str  # the default keys, comma-separated Textual key names; "" for none
    where: Where
    title: str  # the palette's entry
    description: str  # the help screen's row and the palette's help text
    action: str | None = None  # the Textual action (default: ``id``); None: a widget's own key
    palette: bool = False
    priority: bool = False  # runs before the focused widget sees the key
    command: str | None = None  # what the palette runs, when not ``action``

    @property
    def textual_action(self) -> str | None:
        """The action string the key runs (None: the widget handles the key itself)."""
        if self.where is Where.MESSAGE_BOX:
            return None
        return self.action or self.id

    @property
    def palette_action(self) -> str:
        """The action string the palette runs."""
        return self.command or self.textual_action or self.id


W = Where
ACTIONS: tuple[Action, ...] = (
    Action("send", "enter", W.MESSAGE_BOX, "Send", "send the message"),
    Action("newline", "shift+enter,ctrl+j", W.MESSAGE_BOX, "New line", "new line in the message"),
    Action(
        "stop", "escape", W.CHAT, "Stop answer",
        "stop the answer (in the search box: clear it, then leave it; while editing a "
        "message: cancel the edit; when a message is selected: leave the selection)",
        action="escape", palette=True, priority=True, command="stop",
    ),
    Action("new", "ctrl+n", W.CHAT, "New conversation", "start a new conversation", palette=True),
    Action(
        "regenerate", "ctrl+r", W.CHAT, "Regenerate",
        "answer your last message again (the old answer stays: {older_version} shows it)",
        palette=True,
    ),
    Action(
        "edit_last", "ctrl+l", W.CHAT, "Edit last message",
        "edit your last message: {send} sends it as a new version beside the old one "
        "({older_version} shows the old), {stop} cancels",
        palette=True,
    ),
    Action(
        "continue_reply", "ctrl+o", W.CHAT, "Continue answer",
        "go on with an answer cut by the token limit, or stopped, in the same message",
        palette=True,
    ),
    Action(
        "older_version", "alt+left", W.CHAT, "Previous version",
        "show the previous version of the latest regenerated answer or edited question",
        action="sibling(-1)", palette=True,
    ),
    Action(
        "newer_version", "alt+right", W.CHAT, "Next version",
        "show the next version of the latest regenerated answer or edited question",
        action="sibling(1)", palette=True,
    ),
    Action(
        "settings", "ctrl+s", W.CHAT, "Conversation settings",
        "conversation settings: system prompt, temperature, top-p, top-k, max tokens, seed",
        palette=True,
    ),
    Action(
        "attach_file", "ctrl+g", W.CHAT, "Attach a file",
        "put a text file into your next message (a path, with completion); the attached "
        "files are listed above the message box",
        palette=True,
    ),
    Action(
        "detach_file", "", W.CHAT, "Remove attached file",
        "remove the last file attached to your next message", palette=True,
    ),
    Action(
        "pick_preset", "f12", W.CHAT, "Preset",
        "apply a preset (system prompt and settings) to the open conversation, or to new "
        "ones when none is open",
        palette=True,
    ),
    Action(
        "toggle_sidebar", "ctrl+b", W.CHAT, "Toggle sidebar",
        "show or hide the conversation list", palette=True,
    ),
    Action(
        "search", "ctrl+f", W.CHAT, "Search conversations",
        "search the conversations (filters the list)", palette=True,
    ),
    Action(
        "rename", "f2", W.CHAT, "Rename conversation", "rename the open conversation",
        palette=True,
    ),
    Action(
        "copy_answer", "f3", W.CHAT, "Copy last answer", "copy the last answer", palette=True
    ),
    Action(
        "copy_code", "f4", W.CHAT, "Copy last code block",
        "copy the last code block of the last answer", palette=True,
    ),
    Action(
        "select_messages", "ctrl+up", W.CHAT, "Select a message",
        "select a message (the last one) to copy, edit, regenerate, fork or delete it; "
        "{stop} leaves", palette=True,
    ),
    Action(
        "delete", "", W.CHAT, "Delete conversation",
        "delete the open conversation (asks first)", palette=True,
    ),
    Action(
        "export_markdown", "", W.CHAT, "Export conversation as Markdown",
        "save the open conversation as a .md file in the current directory",
        action="export('md')", palette=True,
    ),
    Action(
        "export_json", "", W.CHAT, "Export conversation as JSON",
        "save the open conversation as a .json file (mixchat import reads it) in the "
        "current directory",
        action="export('json')", palette=True,
    ),
    Action("select_previous", "up,k", W.MESSAGES, "Previous message", "select the one above"),
    Action("select_next", "down,j", W.MESSAGES, "Next message", "select the one below"),
    Action("copy_message", "c", W.MESSAGES, "Copy message", "copy the selected message"),
    *(
        Action(
            f"copy_block_{n}", str(n), W.MESSAGES, f"Copy code block {n}",
            f"copy the selected message's code block marked [{n}]",
            action=f"copy_block({n})",
        )
        for n in range(1, 10)
    ),
    Action(
        "edit_message", "e", W.MESSAGES, "Edit message",
        "edit the selected message of yours: {send} sends it as a new version beside the "
        "old one ({older_version} shows the old), {stop} cancels",
    ),
    Action(
        "regenerate_from", "r", W.MESSAGES, "Regenerate from here",
        "answer the question of the selected answer again (the old answer stays beside it)",
    ),
    Action(
        "fork_from", "f", W.MESSAGES, "Fork from here",
        "a new conversation with the messages up to and including the selected one",
    ),
    Action(
        "delete_from", "d,delete", W.MESSAGES, "Delete from here",
        "delete the selected message and everything under it (asks first)",
    ),
    Action("open_selected", "enter", W.SIDEBAR, "Open", "open the conversation", action="select"),
    Action("rename_selected", "r", W.SIDEBAR, "Rename", "rename the conversation"),
    Action(
        "delete_selected", "delete,d", W.SIDEBAR, "Delete",
        "delete the conversation (asks first)",
    ),
    Action(
        "palette", "ctrl+p", W.APP, "Command palette", "command palette: every action by name",
        action="command_palette", priority=True,
    ),
    Action("help", "f1", W.APP, "Keys", "this help: every key", palette=True),
    Action(
        "pick_theme", "ctrl+t", W.APP, "Theme",
        "choose a theme (mixchat's, Textual's and your own)", palette=True,
    ),
    Action(
        "screenshot", "", W.APP, "Screenshot",
        "save an SVG of the screen in the current directory",
        action="take_screenshot", palette=True,
    ),
    Action(
        "model_setup", "", W.APP, "Model setup",
        "what is missing and how to get a model (when none is loaded)", palette=True,
    ),
    Action(
        "quit", "ctrl+q", W.APP, "Quit",
        "quit (an answer being written is stopped and kept)", palette=True, priority=True,
    ),
    Action("confirm_yes", "y", W.CONFIRM, "Yes", "yes", action="dismiss(True)"),
    Action(
        "confirm_no", "escape,n", W.CONFIRM, "No",
        "no (so does Enter on Cancel, which has the focus)", action="dismiss(False)",
    ),
    Action(
        "rename_cancel", "escape", W.RENAME, "Cancel", "cancel (Enter saves the new title)",
        action="dismiss(None)",
    ),
    Action("settings_save", "ctrl+s", W.SETTINGS, "Save", "save the settings", action="save"),
    Action(
        "settings_cancel", "escape", W.SETTINGS, "Cancel", "close without saving",
        action="dismiss(None)",
    ),
    Action(
        "attach_cancel", "escape", W.ATTACH, "Cancel",
        "cancel (Enter attaches the file)", action="dismiss(None)",
    ),
    Action("help_close", "escape,f1,q", W.HELP, "Close", "close this help", action="dismiss(None)"),
    Action(
        "setup_back", "escape", W.SETUP, "Conversations",
        "your conversations (messages are saved)", action="app.pop_screen",
    ),
    Action("setup_retry", "r", W.SETUP, "Try again", "try to load the model again", action="retry"),
    Action(
        "setup_accept_offer", "o", W.SETUP, "Load what fits",
        "download and load the model with the settings that fit this machine (when offered)",
        action="accept_offer",
    ),
)  # fmt: skip

BY_ID: dict[str, Action] = {action.id: action for action in ACTIONS}


def unbound_key(action: Action) -> str:
    """The key of an action that has none by default: a name no terminal sends.

    Textual's keymap only gives new keys to existing bindings, so every action gets a
    binding; this one never fires until ``[keymap]`` gives the action a real key.
    """
    return f"unbound_{action.id}"


def bindings(where: Where) -> list[BindingType]:
    """The ``BINDINGS`` of the screen or widget where ``where``'s actions apply."""
    found: list[BindingType] = []
    for action in ACTIONS:
        name = action.textual_action
        if action.where is where and name is not None:
            found.append(
                Binding(
                    action.keys or unbound_key(action),
                    name,
                    action.title,
                    show=False,
                    priority=action.priority,
                    id=action.id,
                )
            )
    return found
