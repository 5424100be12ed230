"""What the chat screen offers besides chatting: the settings in effect and their dialog,
rename, delete (asks first), export, and copying to the clipboard.

The dialogs open a modal and apply its answer through the store and the conversation
controller (``chat_conversation``).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixchat.config import CONVERSATION_KEYS, conversation_settings
from mixchat.conversation import Role
from mixchat.store import StoreError
from mixchat.transcript import to_json, to_markdown
from mixchat.tui.errors import notify_store_errors
from mixchat.tui.files import save_text
from mixchat.tui.screens.modals import ConfirmScreen, RenameScreen, SettingsScreen

if TYPE_CHECKING:
    from mixchat.tui.screens.chat import ChatScreen


class ChatCommands:
    """Settings, rename, delete, export and copy for a ``ChatScreen``."""

    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen

    @notify_store_errors
    def settings(self) -> None:
        """Edit the open conversation's (or the next new one's) system prompt and sampling:
        every conversation-scoped setting of ``mixchat.config``."""
        settings = self.screen.control.effective_settings()
        current = {"system_prompt": settings.system_prompt, **conversation_settings(settings)}
        self.screen.app.push_screen(
            SettingsScreen(current), lambda result: self._apply_settings(current, result)
        )

    @notify_store_errors
    def _apply_settings(self, current: dict[str, Any], result: dict[str, Any] | None) -> None:
        control = self.screen.control
        if result is None:
            return
        changed = {k: v for k, v in result.items() if v != current[k]}
        # What the user just chose wins over a flag given when the app started.
        control.sources = control.sources.without_flags(changed)
        if control.conversation is None:
            control.new_settings.update(changed)
        else:
            saved = {k: result[k] for k in CONVERSATION_KEYS}
            self.screen.store.update_settings(
                control.conversation.id,
                system_prompt=result["system_prompt"],
                settings={**control.conversation.settings, **saved},
            )
            control.reload()
        self.screen.notify("Settings saved for this conversation.")

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

        async def apply(confirmed: bool | None) -> None:
            if confirmed:
                await self.screen.control.delete(conversation_id)

        question = f"Delete “{title}”? This cannot be undone."
        self.screen.app.push_screen(ConfirmScreen(question), apply)

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
        """Copy the last answer to the clipboard (as the ``clipboard`` setting says)."""
        answer = self._last_answer()
        if not answer:
            self.screen.notify("No answer to copy yet.", severity="warning")
            return
        self.screen.app.copy_text(answer, "the last answer")  # type: ignore[attr-defined]

    def copy_code(self) -> None:
        """Copy the last code block of the last answer (the parser ``ask --extract`` uses)."""
        from mixchat.codeblocks import code_blocks

        blocks = code_blocks(self._last_answer() or "")
        if not blocks:
            self.screen.notify("The last answer has no code block.", severity="warning")
            return
        self.screen.app.copy_text(blocks[-1].code, "the last code block")  # type: ignore[attr-defined]
