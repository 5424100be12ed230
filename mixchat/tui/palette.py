"""The app's entries in the command palette (Ctrl+P): every action, by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from textual.app import SystemCommand

if TYPE_CHECKING:
    from mixchat.tui.app import MixchatApp
    from mixchat.tui.screens.chat import ChatScreen


def palette_commands(app: MixchatApp, chat: ChatScreen) -> Iterator[SystemCommand]:
    """The palette entries of the chat (Textual adds Theme, Quit and Maximize)."""
    commands: list[tuple[str, str, Callable[[], Any]]] = [
        ("New conversation", "Start a new conversation (Ctrl+N)", chat.action_new),
        ("Stop answer", "Stop the answer being generated (Esc)", chat.action_stop),
        ("Regenerate", "Answer your last message again (Ctrl+R)", chat.action_regenerate),
        (
            "Edit last message",
            "Change your last message and send it again; nothing is dropped before (Ctrl+L)",
            chat.action_edit_last,
        ),
        ("Copy last answer", "To the clipboard (F3)", chat.action_copy_answer),
        ("Copy last code block", "To the clipboard (F4)", chat.action_copy_code),
        (
            "Conversation settings",
            "System prompt, temperature, top-p, max tokens (Ctrl+S)",
            chat.action_settings,
        ),
        ("Rename conversation", "Give the open conversation a title (F2)", chat.action_rename),
        ("Delete conversation", "Delete the open conversation (asks first)", chat.action_delete),
        (
            "Export conversation as Markdown",
            "Save it as a .md file in the current directory",
            lambda: chat.commands.export("md"),
        ),
        (
            "Export conversation as JSON",
            "Save it as a .json file (mixchat import reads it) in the current directory",
            lambda: chat.commands.export("json"),
        ),
        (
            "Toggle sidebar",
            "Show or hide the conversation list (Ctrl+B)",
            chat.action_toggle_sidebar,
        ),
        ("Search conversations", "Filter the conversation list (Ctrl+F)", chat.action_search),
        ("Keys", "Every key of the app (F1)", app.action_help),
        (
            "Screenshot",
            "Save an SVG of the screen in the current directory",
            lambda: app.set_timer(0.1, app.action_save_screenshot),  # once the palette closed
        ),
    ]
    if app.model_error is not None:
        commands.append(
            ("Model setup", "What is missing and how to get a model", app.action_model_setup)
        )
    for title, help_text, callback in commands:
        yield SystemCommand(title, help_text, callback)
