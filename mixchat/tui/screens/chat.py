"""The main screen: sidebar, conversation, input, status bar, and the chat actions.

Replies run in a thread worker that only posts messages; every widget and
state change happens here, in message handlers on the UI thread.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import replace
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen

from mixchat.config import Settings
from mixchat.conversation import Conversation, Message, Role, Status
from mixchat.engine.base import (
    ContextTrimmed,
    Engine,
    Event,
    GenerationParams,
    TextDelta,
    Usage,
)
from mixchat.prompt import prompt_messages
from mixchat.session import ReplyRecorder, stream_reply
from mixchat.store import ConversationStore, StoreError
from mixchat.tui.errors import notify_store_errors
from mixchat.tui.messages import ContextTrimmedNote, ReplyDone, ReplyText, ReplyUsage
from mixchat.tui.screens.modals import (
    ConfirmScreen,
    ConversationSettings,
    RenameScreen,
    SettingsScreen,
)
from mixchat.tui.widgets.chat_view import AssistantBlock, ChatView
from mixchat.tui.widgets.prompt_input import PromptInput
from mixchat.tui.widgets.sidebar import ConversationList, Sidebar
from mixchat.tui.widgets.status_bar import StatusBar

CODE_BLOCK = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
SETTING_KEYS = ("temperature", "top_p", "max_new_tokens")


class ChatScreen(Screen[None]):
    """Chat with the model; everything a session needs on one screen."""

    BINDINGS = [
        Binding("escape", "stop", "Stop", priority=True),
        Binding("ctrl+n", "new", "New"),
        Binding("ctrl+r", "regenerate", "Regenerate"),
        Binding("ctrl+l", "edit_last", "Edit last"),
        Binding("ctrl+s", "settings", "Settings"),
        Binding("ctrl+b", "toggle_sidebar", "Sidebar"),
        Binding("ctrl+f", "search", "Search", show=False),
        Binding("f2", "rename", "Rename", show=False),
        Binding("f3", "copy_answer", "Copy answer", show=False),
        Binding("f4", "copy_code", "Copy code", show=False),
    ]

    def __init__(
        self, store: ConversationStore, settings: Settings, resume_id: str | None = None
    ) -> None:
        super().__init__()
        self.store = store
        self.settings = settings
        self.resume_id = resume_id
        self.conversation: Conversation | None = None
        self.engine: Engine | None = None
        self.generating = False
        self.waiting_for_model = False
        self._cancel = threading.Event()
        self._reply_key = 0
        self._block: AssistantBlock | None = None
        self._buffer: list[str] = []
        self._buffer_lock = threading.Lock()
        self._flush_posted = False
        self._new_settings: ConversationSettings | None = None
        self.exit_after_reply = False

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Sidebar(self.store, id="sidebar")
            with Vertical(id="main"):
                yield ChatView(id="chat")
                yield PromptInput(id="input")
        yield StatusBar(self.settings.model, id="status")

    async def on_mount(self) -> None:
        if self.resume_id is not None:
            await self.open_conversation(self.resume_id)
        self.query_one(PromptInput).focus()

    # -- helpers ------------------------------------------------------------

    @property
    def chat(self) -> ChatView:
        return self.query_one(ChatView)

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    @property
    def sidebar(self) -> Sidebar:
        return self.query_one(Sidebar)

    def _setting_values(self) -> dict[str, Any]:
        """Temperature, top-p and max tokens in effect: the open conversation's saved ones,
        else those chosen for the next new conversation, else the configured defaults."""
        if self.conversation is not None:
            saved = self.conversation.settings
            return {k: saved.get(k, getattr(self.settings, k)) for k in SETTING_KEYS}
        source = self._new_settings or self.settings
        return {k: getattr(source, k) for k in SETTING_KEYS}

    def _params(self) -> GenerationParams:
        s = self.settings
        values = self._setting_values()
        return GenerationParams(
            temperature=float(values["temperature"]),
            top_p=float(values["top_p"]),
            top_k=s.top_k,
            repetition_penalty=s.repetition_penalty,
            max_new_tokens=int(values["max_new_tokens"]),
            seed=s.seed,
        )

    def _system_prompt(self) -> str | None:
        if self.conversation is not None:
            return self.conversation.system_prompt
        if self._new_settings is not None:
            return self._new_settings.system_prompt
        return self.settings.system_prompt

    def _reload_conversation(self) -> None:
        if self.conversation is not None:
            self.conversation = self.store.get_conversation(self.conversation.id)

    # -- model state (called by the app) ------------------------------------

    def model_ready(self, engine: Engine) -> None:
        """The engine is loaded; start a reply that was waiting for it."""
        self.engine = engine
        self.status.set_info(engine.info())
        self.status.state = "ready"
        if self.waiting_for_model:
            self.waiting_for_model = False
            self.call_later(self.start_reply)

    # -- sending and streaming ----------------------------------------------

    @on(PromptInput.Submitted)
    async def on_submitted(self, event: PromptInput.Submitted) -> None:
        await self.send(event.text)

    @notify_store_errors
    async def send(self, text: str) -> None:
        """Commit the user's message, show it, and ask for a reply."""
        if self.generating:
            self.notify("An answer is still streaming: Esc stops it.", severity="warning")
            return
        message = Message(Role.USER, text)
        if self.conversation is None:
            # One transaction: a conversation never exists without its first message.
            self.conversation = self.store.create_conversation(
                model=self.settings.model,
                system_prompt=self._system_prompt(),
                settings=self._setting_values(),
                first_message=message,
            )
            self._new_settings = None
            self.sidebar.current_id = self.conversation.id
        else:
            self.store.append_message(self.conversation.id, message)
        self._reload_conversation()
        self.query_one(PromptInput).clear()
        await self.chat.add_user(text)
        self.sidebar.reload()
        if self.engine is None:
            self.waiting_for_model = True
            self.status.state = "waiting for the model"
            return
        await self.start_reply()

    @notify_store_errors
    async def start_reply(self) -> None:
        """Stream a reply to the conversation as it stands."""
        if self.engine is None or self.conversation is None or self.generating:
            return
        self._reply_key += 1
        self._cancel = threading.Event()
        self.generating = True
        self.status.state = "generating"
        self.status.tokens_per_s = None
        self._block = await self.chat.add_assistant()
        recorder = ReplyRecorder(self.store, self.conversation.id)
        history = prompt_messages(self.conversation.messages)
        self._run_reply(
            self.engine,
            recorder,
            history,
            self._system_prompt(),
            self._params(),
            self._cancel,
            self._reply_key,
        )

    @work(thread=True, group="reply", exit_on_error=False)
    def _run_reply(
        self,
        engine: Engine,
        recorder: ReplyRecorder,
        history: list[Message],
        system_prompt: str | None,
        params: GenerationParams,
        cancel: threading.Event,
        key: int,
    ) -> None:
        def on_event(event: Event) -> None:
            if isinstance(event, TextDelta):
                with self._buffer_lock:
                    self._buffer.append(event.text)
                    if self._flush_posted:
                        return  # coalesce: one message drains everything pending
                    self._flush_posted = True
                self.post_message(ReplyText(key))
            elif isinstance(event, Usage):
                self.post_message(ReplyUsage(key, event))
            elif isinstance(event, ContextTrimmed):
                self.post_message(ContextTrimmedNote(event.dropped_messages))

        try:
            outcome = stream_reply(
                engine, recorder, history, system_prompt, params, cancel, on_event
            )
        except Exception as exc:  # the engine or the store broke: keep what we can, say why
            try:
                outcome = recorder.finish(Status.ERROR)
            except StoreError:
                outcome = recorder.outcome
                outcome.status = Status.ERROR
            outcome.error = (
                f"{type(exc).__name__}: {exc}" if not isinstance(exc, StoreError) else str(exc)
            )
        self.post_message(ReplyDone(key, outcome))

    def _drain(self) -> str:
        with self._buffer_lock:
            text = "".join(self._buffer)
            self._buffer.clear()
            self._flush_posted = False
        return text

    @on(ReplyText)
    async def on_reply_text(self, message: ReplyText) -> None:
        if message.reply_key == self._reply_key and self._block is not None:
            await self._block.append(self._drain())

    @on(ReplyUsage)
    def on_reply_usage(self, message: ReplyUsage) -> None:
        if message.reply_key == self._reply_key:
            self.status.tokens_per_s = message.usage.tokens_per_s
            self.status.context_used = message.usage.prompt_tokens + message.usage.completion_tokens

    @on(ContextTrimmedNote)
    def on_context_trimmed(self, message: ContextTrimmedNote) -> None:
        self.notify(f"The {message.dropped} oldest messages were left out to fit the context.")

    @on(ReplyDone)
    @notify_store_errors
    async def on_reply_done(self, message: ReplyDone) -> None:
        if message.reply_key != self._reply_key:
            return
        outcome = message.outcome
        block = self._block
        if block is not None:
            await block.append(self._drain())
            await block.finish()
            block.set_status(outcome.status, outcome.error or "")
        self.generating = False
        self._block = None
        if outcome.error:
            self.status.state = "error"
            self.notify(outcome.error, title="Generation failed", severity="error")
        elif outcome.status is Status.INTERRUPTED:
            self.status.state = "stopped"
        else:
            self.status.state = "ready"
        self._reload_conversation()
        self.sidebar.reload()
        if self.exit_after_reply:
            self.app.exit()

    # -- actions ------------------------------------------------------------

    def action_stop(self) -> None:
        """Stop the answer (the partial reply stays, marked stopped)."""
        if self.generating:
            self._cancel.set()
        elif self.waiting_for_model:
            self.waiting_for_model = False
            self.status.state = "loading"
            self.notify("The message is saved; it will not be answered automatically.")

    async def action_new(self) -> None:
        """Start a new conversation."""
        if self.generating:
            self.notify("Stop the answer first (Esc).", severity="warning")
            return
        self.conversation = None
        self._new_settings = None
        self.sidebar.current_id = None
        await self.chat.show_conversation([])
        self.status.context_used = 0
        self.query_one(PromptInput).focus()

    @notify_store_errors
    async def open_conversation(self, conversation_id: str) -> None:
        """Show a saved conversation and continue it."""
        if self.generating:
            self.notify("Stop the answer first (Esc).", severity="warning")
            return
        self.conversation = self.store.get_conversation(conversation_id)
        self.store.mark_used(self.conversation.id)  # `mixchat -c` / `ask -c` go on with it
        self.sidebar.current_id = self.conversation.id
        await self.chat.show_conversation(self.conversation.messages)
        last = self.conversation.messages[-1] if self.conversation.messages else None
        self.status.context_used = (
            (last.prompt_tokens or 0) + (last.completion_tokens or 0) if last else 0
        )
        self.query_one(PromptInput).focus()

    @on(Sidebar.Opened)
    async def on_sidebar_opened(self, event: Sidebar.Opened) -> None:
        await self.open_conversation(event.conversation_id)

    @notify_store_errors
    async def action_regenerate(self) -> None:
        """Drop the last answer and generate it again."""
        if self.generating or self.conversation is None or not self.conversation.messages:
            return
        last = self.conversation.messages[-1]
        if last.role is Role.ASSISTANT and last.id is not None:
            self.store.truncate_from(last.id)
            await self.chat.remove_last(1)
            self._reload_conversation()
        if self.engine is None:
            self.waiting_for_model = True
            return
        await self.start_reply()

    @notify_store_errors
    async def action_edit_last(self) -> None:
        """Put the last user message back in the input; its old answer is dropped."""
        if self.generating or self.conversation is None:
            return
        messages = self.conversation.messages
        index = max((i for i, m in enumerate(messages) if m.role is Role.USER), default=None)
        if index is None or messages[index].id is None:
            return
        text = messages[index].content
        self.store.truncate_from(messages[index].id)  # type: ignore[arg-type]
        await self.chat.remove_last(len(messages) - index)
        self._reload_conversation()
        prompt = self.query_one(PromptInput)
        prompt.text = text
        prompt.focus()
        self.notify("Editing the last message: the old answer was dropped. Enter resends.")

    def _last_answer(self) -> str | None:
        if self._block is not None:
            return self._block.source
        if self.conversation is None:
            return None
        answers = [m for m in self.conversation.messages if m.role is Role.ASSISTANT]
        return answers[-1].content if answers else None

    def action_copy_answer(self) -> None:
        """Copy the last answer to the clipboard (OSC 52)."""
        answer = self._last_answer()
        if not answer:
            self.notify("No answer to copy yet.", severity="warning")
            return
        self.app.copy_to_clipboard(answer)
        self.notify("Copied the last answer.")

    def action_copy_code(self) -> None:
        """Copy the last code block of the last answer."""
        blocks = CODE_BLOCK.findall(self._last_answer() or "")
        if not blocks:
            self.notify("The last answer has no code block.", severity="warning")
            return
        self.app.copy_to_clipboard(blocks[-1])
        self.notify("Copied the last code block.")

    def action_toggle_sidebar(self) -> None:
        """Show or hide the conversation list."""
        self.sidebar.display = not self.sidebar.display

    def action_search(self) -> None:
        """Focus the conversation search box."""
        self.sidebar.display = True
        self.sidebar.query_one("#search").focus()

    @notify_store_errors
    def action_settings(self) -> None:
        """Edit this conversation's system prompt and generation settings."""
        params = self._params()
        current = ConversationSettings(
            self._system_prompt(), params.temperature, params.top_p, params.max_new_tokens
        )

        @notify_store_errors
        def apply(self: ChatScreen, result: ConversationSettings | None) -> None:
            if result is None:
                return
            if self.conversation is None:
                self._new_settings = result
            else:
                values = {k: getattr(result, k) for k in SETTING_KEYS}
                self.store.update_settings(
                    self.conversation.id,
                    system_prompt=result.system_prompt,
                    settings={**self.conversation.settings, **values},
                )
                self._reload_conversation()
            self.notify("Settings saved for this conversation.")

        self.app.push_screen(SettingsScreen(current), functools.partial(apply, self))

    @notify_store_errors
    def _rename(self, conversation_id: str) -> None:
        conv = self.store.get_conversation(conversation_id)

        @notify_store_errors
        def apply(self: ChatScreen, title: str | None) -> None:
            if title:
                self.store.rename(conversation_id, title)
                if self.conversation is not None and self.conversation.id == conversation_id:
                    self.conversation = replace(self.conversation, title=title)
                self.sidebar.reload()

        self.app.push_screen(RenameScreen(conv.title), functools.partial(apply, self))

    def action_rename(self) -> None:
        """Rename the open conversation."""
        if self.conversation is not None:
            self._rename(self.conversation.id)

    @on(ConversationList.RenameRequested)
    def on_rename_requested(self, event: ConversationList.RenameRequested) -> None:
        self._rename(event.conversation_id)

    @on(ConversationList.DeleteRequested)
    @notify_store_errors
    def on_delete_requested(self, event: ConversationList.DeleteRequested) -> None:
        conv_id = event.conversation_id
        title = self.store.get_conversation(conv_id).title or "(untitled)"

        @notify_store_errors
        async def apply(self: ChatScreen, confirmed: bool | None) -> None:
            if not confirmed:
                return
            if self.conversation is not None and self.conversation.id == conv_id:
                if self.generating:
                    self.notify("Stop the answer first (Esc).", severity="warning")
                    return
                await self.action_new()
            self.store.delete(conv_id)
            self.sidebar.reload()
            self.notify("Conversation deleted.")

        question = f"Delete “{title}”? This cannot be undone."
        self.app.push_screen(ConfirmScreen(question), functools.partial(apply, self))
