"""What the chat screen offers besides chatting: the settings in effect and their dialog,
rename, delete (asks first), export, and copying to the clipboard.

The dialogs open a modal and apply its answer through the store and the chat screen.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixchat.config import Settings
from mixchat.conversation import Conversation, Role
from mixchat.engine.base import GenerationParams
from mixchat.store import StoreError
from mixchat.transcript import to_json, to_markdown
from mixchat.tui.errors import notify_store_errors
from mixchat.tui.files import save_text
from mixchat.tui.screens.modals import (
    ConfirmScreen,
    ConversationSettings,
    RenameScreen,
    SettingsScreen,
)

if TYPE_CHECKING:
    from mixchat.tui.screens.chat import ChatScreen

SETTING_KEYS = ("temperature", "top_p", "max_new_tokens")
CODE_BLOCK = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def setting_values(
    settings: Settings, conversation: Conversation | None, new: ConversationSettings | None
) -> dict[str, Any]:
    """Temperature, top-p and max tokens in effect: the open conversation's saved ones,
    else those chosen for the next new conversation, else the configured defaults."""
    if conversation is not None:
        saved = conversation.settings
        return {k: saved.get(k, getattr(settings, k)) for k in SETTING_KEYS}
    source = new or settings
    return {k: getattr(source, k) for k in SETTING_KEYS}


def generation_params(
    settings: Settings, conversation: Conversation | None, new: ConversationSettings | None
) -> GenerationParams:
    """Sampling settings for the next reply."""
    values = setting_values(settings, conversation, new)
    return GenerationParams(
        temperature=float(values["temperature"]),
        top_p=float(values["top_p"]),
        top_k=settings.top_k,
        repetition_penalty=settings.repetition_penalty,
        max_new_tokens=int(values["max_new_tokens"]),
        seed=settings.seed,
    )


def system_prompt(
    settings: Settings, conversation: Conversation | None, new: ConversationSettings | None
) -> str | None:
    """The system prompt of the open conversation, or of the next new one."""
    if conversation is not None:
        return conversation.system_prompt
    return new.system_prompt if new is not None else settings.system_prompt


class ChatCommands:
    """Settings, rename, delete, export and copy for a ``ChatScreen``."""

    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen

    @notify_store_errors
    def settings(self) -> None:
        """Edit the open conversation's (or the next new one's) system prompt and sampling."""
        screen = self.screen
        params = screen.params()
        current = ConversationSettings(
            screen.system_prompt(), params.temperature, params.top_p, params.max_new_tokens
        )
        screen.app.push_screen(SettingsScreen(current), self._apply_settings)

    @notify_store_errors
    def _apply_settings(self, result: ConversationSettings | None) -> None:
        screen = self.screen
        if result is None:
            return
        if screen.conversation is None:
            screen.new_settings = result
        else:
            values = {k: getattr(result, k) for k in SETTING_KEYS}
            screen.store.update_settings(
                screen.conversation.id,
                system_prompt=result.system_prompt,
                settings={**screen.conversation.settings, **values},
            )
            screen.reload_conversation()
        screen.notify("Settings saved for this conversation.")

    @notify_store_errors
    def rename(self, conversation_id: str) -> None:
        """Ask for a new title."""
        conv = self.screen.store.get_conversation(conversation_id)

        @notify_store_errors
        def apply(self: ChatCommands, title: str | None) -> None:
            screen = self.screen
            if title:
                screen.store.rename(conversation_id, title)
                if screen.conversation is not None and screen.conversation.id == conversation_id:
                    screen.conversation = replace(screen.conversation, title=title)
                screen.sidebar.reload()

        self.screen.app.push_screen(RenameScreen(conv.title), lambda t: apply(self, t))

    @notify_store_errors
    def delete(self, conversation_id: str) -> None:
        """Delete a conversation after asking."""
        title = self.screen.store.get_conversation(conversation_id).title or "(untitled)"

        @notify_store_errors
        async def apply(self: ChatCommands, confirmed: bool | None) -> None:
            screen = self.screen
            if not confirmed:
                return
            if screen.conversation is not None and screen.conversation.id == conversation_id:
                if screen.generating:
                    screen.notify("Stop the answer first (Esc).", severity="warning")
                    return
                await screen.action_new()
            screen.store.delete(conversation_id)
            screen.sidebar.reload()
            screen.notify("Conversation deleted.")

        question = f"Delete “{title}”? This cannot be undone."
        self.screen.app.push_screen(ConfirmScreen(question), lambda ok: apply(self, ok))

    def export(self, fmt: str) -> Path | None:
        """Save the open conversation as Markdown (``md``) or JSON and say where."""
        screen = self.screen
        if screen.conversation is None:
            screen.notify("No conversation is open to export.", severity="warning")
            return None
        try:
            conv = screen.store.get_conversation(screen.conversation.id)
        except StoreError as exc:
            screen.notify(str(exc), title="The conversation store failed", severity="error")
            return None
        slug = "-".join(re.findall(r"[a-z0-9]+", conv.title.lower()))[:40].strip("-")
        name = f"mixchat-{slug or 'conversation'}-{conv.id[:8]}.{fmt}"
        text = (
            json.dumps(to_json(conv), ensure_ascii=False, indent=2)
            if fmt == "json"
            else to_markdown(conv)
        )
        return save_text(screen.app, name, text + "\n", "Conversation exported")

    def _last_answer(self) -> str | None:
        screen = self.screen
        if screen.streaming_text is not None:
            return screen.streaming_text
        if screen.conversation is None:
            return None
        answers = [m for m in screen.conversation.messages if m.role is Role.ASSISTANT]
        return answers[-1].content if answers else None

    def copy_answer(self) -> None:
        """Copy the last answer to the clipboard (OSC 52)."""
        answer = self._last_answer()
        if not answer:
            self.screen.notify("No answer to copy yet.", severity="warning")
            return
        self.screen.app.copy_to_clipboard(answer)
        self.screen.notify("Copied the last answer.")

    def copy_code(self) -> None:
        """Copy the last code block of the last answer."""
        blocks = CODE_BLOCK.findall(self._last_answer() or "")
        if not blocks:
            self.screen.notify("The last answer has no code block.", severity="warning")
            return
        self.screen.app.copy_to_clipboard(blocks[-1])
        self.screen.notify("Copied the last code block.")
