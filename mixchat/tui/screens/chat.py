"""The main screen: sidebar, conversation, input, status bar, and the chat actions.

Replies run in a thread worker that only posts messages; every widget and
state change happens here, in message handlers on the UI thread. The pending edit
(``edit``), what the view shows (``shown``), following the store (``chat_sync``) and
the dialogs (``chat_commands``) live in their own modules.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen

from mixchat.config import Settings, SettingsSources
from mixchat.conversation import Conversation, Message, Role, Status
from mixchat.engine.base import (
    Engine,
    GenerationParams,
    LoadProgress,
)
from mixchat.prompt import prompt_messages
from mixchat.store import ConversationStore
from mixchat.tui import branches
from mixchat.tui.edit import LastMessageEdit, last_user_index
from mixchat.tui.errors import notify_store_errors
from mixchat.tui.messages import (
    ContextTrimmedNote,
    ReplyDone,
    ReplyText,
    ReplyUsage,
)
from mixchat.tui.reply import ReplyBuffer, run_reply
from mixchat.tui.screens.chat_commands import ChatCommands
from mixchat.tui.screens.chat_sync import StoreSync
from mixchat.tui.shown import ShownConversation
from mixchat.tui.widgets.chat_view import CUT_NOTE, AssistantBlock, ChatView
from mixchat.tui.widgets.prompt_input import PromptInput
from mixchat.tui.widgets.sidebar import ConversationList, Sidebar
from mixchat.tui.widgets.status_bar import StatusBar
from mixchat.turn import Ending, Turn

BUSY = "An answer is streaming: Esc stops it."
# What the status bar says after a reply, by how it ended (nothing: complete).
REPLY_STATE = {
    Ending.LENGTH: "cut at the token limit",
    Ending.STOPPED: "stopped",
    Ending.INTERRUPTED: "stopped",
}
UNANSWERED = "unanswered: Ctrl+R answers"


class ChatScreen(Screen[None]):
    """Chat with the model; everything a session needs on one screen."""

    BINDINGS = [
        Binding("escape", "escape", "Stop", priority=True),
        Binding("ctrl+n", "new", "New"),
        Binding("ctrl+r", "regenerate", "Regenerate"),
        Binding("ctrl+l", "edit_last", "Edit last"),
        Binding("ctrl+o", "continue_reply", "Continue", show=False),
        Binding("ctrl+s", "settings", "Settings"),
        Binding("ctrl+b", "toggle_sidebar", "Sidebar"),
        Binding("ctrl+f", "search", "Search", show=False),
        Binding("f2", "rename", "Rename", show=False),
        Binding("f3", "copy_answer", "Copy answer", show=False),
        Binding("f4", "copy_code", "Copy code", show=False),
        Binding("alt+left", "sibling(-1)", "Older branch", show=False),
        Binding("alt+right", "sibling(1)", "Newer branch", show=False),
    ]

    def __init__(
        self, store: ConversationStore, sources: SettingsSources, resume_id: str | None = None
    ) -> None:
        super().__init__()
        self.store = store
        self.sources = sources
        self.settings = sources.effective()
        self.resume_id = resume_id
        self.conversation: Conversation | None = None
        self.engine: Engine | None = None
        self.model_error: str | None = None  # why no model could be loaded
        self.generating = False
        self._on_ready: Callable[[], Awaitable[None]] | None = None  # waits for the model
        self._cancel = threading.Event()
        self._reply_key = 0
        self._block: AssistantBlock | None = None
        self._buffer = ReplyBuffer()
        # Settings chosen in the settings window for the next new conversation.
        self.new_settings: dict[str, Any] = {}
        self.exit_after_reply = False
        self.commands = ChatCommands(self)
        self.store_sync = StoreSync(self)

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Sidebar(self.store, id="sidebar")
            with Vertical(id="main"):
                yield ChatView(id="chat")
                yield PromptInput(self.settings.model, id="input")
        yield StatusBar(self.settings.model, id="status")

    async def on_mount(self) -> None:
        self.shown = ShownConversation(self.chat)
        self.edit = LastMessageEdit(self.chat, self.prompt)
        self.store_sync.start()
        if self.resume_id is not None:
            await self.open_conversation(self.resume_id)
        self.prompt.focus()

    # -- helpers ------------------------------------------------------------

    @property
    def chat(self) -> ChatView:
        return self.query_one(ChatView)

    @property
    def prompt(self) -> PromptInput:
        return self.query_one(PromptInput)

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    @property
    def sidebar(self) -> Sidebar:
        return self.query_one(Sidebar)

    @property
    def waiting_for_model(self) -> bool:
        """A message is saved and will be answered once the model has loaded."""
        return self._on_ready is not None

    def effective_settings(self) -> Settings:
        """The settings in effect for the open conversation, or for the next new one:
        defaults < config < environment < the conversation's saved settings < flags."""
        if self.conversation is not None:
            return self.sources.effective(self.conversation)
        return replace(self.sources.effective(), **self.new_settings)

    def params(self) -> GenerationParams:
        """Sampling settings for the next reply."""
        return GenerationParams.from_settings(self.effective_settings())

    def system_prompt(self) -> str | None:
        """The system prompt of the open (or the next new) conversation."""
        return self.effective_settings().system_prompt

    @property
    def streaming_text(self) -> str | None:
        """The text of the reply streaming now, if any."""
        return self._block.source if self._block is not None else None

    def reload_conversation(self) -> None:
        """Read the open conversation again from the store."""
        if self.conversation is not None:
            self.conversation = self.store.get_conversation(self.conversation.id)

    def offer_answer(self, say: bool) -> None:
        """Mark an open conversation whose last message has no answer (and say so)."""
        usable = prompt_messages(self.conversation.messages) if self.conversation else []
        unanswered = bool(usable) and usable[-1].role is Role.USER
        if not unanswered and self.status.reply_state == UNANSWERED:
            self.status.reply_state = ""  # answered since (from elsewhere, say)
        if self.generating or self.waiting_for_model or not unanswered:
            return
        self.status.reply_state = UNANSWERED
        if say and self.engine is not None:
            self.notify("Your last message has no answer yet: Ctrl+R answers it.")

    # -- model state (called by the app) ------------------------------------

    def model_loading(self, event: LoadProgress | None) -> None:
        """Loading (again, if ``event`` is None) advanced."""
        self.model_error = None
        if event is None:
            self.status.model_state = "loading"
        else:
            self.status.show_load(event)

    def model_ready(self, engine: Engine) -> None:
        """The engine is loaded; start a reply that was waiting for it."""
        self.engine = engine
        self.model_error = None
        self.status.set_info(engine.info())
        self.status.model_state = "ready"
        action, self._on_ready = self._on_ready, None
        if action is not None:
            self.call_later(action)
            return
        self.count_context()
        self.offer_answer(say=True)

    def model_failed(self, error: str) -> None:
        """No model could be loaded: say so, and drop a reply that was waiting for it."""
        self.model_error = error
        self.status.model_state = "no model"
        if self._on_ready is not None:
            self._on_ready = None
            self.status.reply_state = "unanswered"

    def count_context(self) -> None:
        """Count the open conversation's tokens for the status bar (if the engine can)."""
        conv = self.conversation
        if self.engine is not None and conv is not None:
            self.status.count_context(self.engine, list(conv.messages), self.system_prompt())

    # -- sending and streaming ----------------------------------------------

    @on(PromptInput.Submitted)
    async def on_submitted(self, event: PromptInput.Submitted) -> None:
        await self.send(event.text)

    @notify_store_errors
    async def send(self, text: str) -> None:
        """Commit the user's message (in place of the edited one), show it, get a reply."""
        if self.generating:
            self.notify(BUSY, severity="warning")
            return
        editing, open_before = self.edit.pending is not None, self.conversation is not None
        await self.store_sync.check()  # the prompt never holds a turn the view does not show
        if (editing and self.edit.pending is None) or (open_before and self.conversation is None):
            return  # changed or deleted under the user's eyes: the text waits in the box
        message = Message(Role.USER, text)
        edit = self.edit.pending
        turn = self._turn()
        if edit is not None and self.conversation is not None:
            turn.ask(message, replacing=edit.message_id)
            self.edit.end(restore_draft=False)
            await self.shown.drop_from(edit.index)
        else:
            turn.ask(message)
        if self.conversation is None:
            self.new_settings = {}
            assert turn.conversation is not None
            self.sidebar.current_id = turn.conversation.id
        self.conversation = turn.conversation
        self.prompt.take(text)
        if edit is not None:  # what the box held before the edit comes back
            self.prompt.recall(edit.draft + self.prompt.text)
        await self.chat.add_user(text)
        self.shown.appended(message)
        self.sidebar.reload()
        self.status.reset(self.status.context_used)
        self.count_context()
        await self._answer()

    async def _answer(self) -> None:
        if self.engine is not None:
            await self.start_reply()
        elif self.model_error is not None:
            self.status.reply_state = "unanswered"
            self.notify(
                "No model is loaded, so nothing will answer: your message is saved. "
                "Load a model (Ctrl+P, Model setup), then Ctrl+R answers it.",
                severity="warning",
            )
        else:
            self._on_ready = self.start_reply
            self.status.reply_state = "waiting for the model"

    def _turn(self) -> Turn:
        """A turn in the open conversation (or a new one) with the settings in effect."""
        return Turn(self.store, self.sources, self.conversation, self.new_settings)

    @notify_store_errors
    async def start_reply(self, turn: Turn | None = None) -> None:
        """Stream a reply to the conversation as it stands (or to ``turn``'s)."""
        if self.engine is None or self.conversation is None or self.generating:
            return
        turn = turn or self._turn()
        recorder = turn.start()
        self._reply_key += 1
        self._cancel = threading.Event()
        self.generating = True
        self.status.reply_state = "generating"
        self.status.tokens_per_s = None
        self._buffer.reset()
        self._block = await self.chat.add_assistant()
        if recorder.text:  # a reply being continued: it goes on from its text
            await self._block.append(recorder.text)
        reply_id = recorder.outcome.message_id
        self.shown.appended(Message(Role.ASSISTANT, "", Status.INTERRUPTED, id=reply_id))
        self._run_reply(self._reply_key, self.engine, turn, self._cancel)

    @work(thread=True, group="reply", exit_on_error=False)
    def _run_reply(self, *args: Any) -> None:
        run_reply(self.post_message, self._buffer, *args)

    @on(ReplyText)
    async def on_reply_text(self, message: ReplyText) -> None:
        if message.reply_key == self._reply_key and self._block is not None:
            await self._block.append(self._buffer.drain())
            self.status.tokens_per_s = self._buffer.tokens_per_s

    @on(ReplyUsage)
    def on_reply_usage(self, message: ReplyUsage) -> None:
        if message.reply_key == self._reply_key:
            self.status.show_usage(message.usage, self._buffer.tokens_per_s)

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
            await block.append(self._buffer.drain())
            await block.finish()
            cut = CUT_NOTE if outcome.ending is Ending.LENGTH else ""
            block.set_status(outcome.status, outcome.error or cut)
        self.generating = False
        self._block = None
        if outcome.error:
            self.status.reply_state = "error"
            self.notify(outcome.error, title="Generation failed", severity="error", markup=False)
        else:
            self.status.reply_state = REPLY_STATE.get(outcome.ending, "")
        if self.conversation is not None:
            self.reload_conversation()
            assert self.conversation is not None
            for saved in self.conversation.messages:
                if saved.id == outcome.message_id:
                    self.shown.settled(saved)
            await self.shown.follow(self.conversation.messages)  # and what came from elsewhere
            branches.mark(self.store, self.conversation, self.chat)
        self.sidebar.reload()
        if self.exit_after_reply:
            self.app.exit()

    # -- actions ------------------------------------------------------------

    def action_escape(self) -> None:
        """Esc: clear the search box, then leave it; cancel an edit; else stop the answer."""
        if self.sidebar.clear_search():
            return
        if self.focused is self.sidebar.query_one("#search"):
            self.prompt.focus()
        elif self.edit.pending is not None:
            self.edit.end(restore_draft=True)
        else:
            self.action_stop()

    def action_stop(self) -> None:
        """Stop the answer (the partial reply stays, marked stopped)."""
        if self.generating:
            self._cancel.set()
        elif self._on_ready is not None:
            self._on_ready = None
            self.status.reply_state = "unanswered"
            self.notify("The message is saved; it will not be answered automatically.")

    async def action_new(self) -> None:
        """Start a new conversation."""
        if self.generating:
            self.notify("Stop the answer first (Esc).", severity="warning")
            return
        self.edit.end(restore_draft=True)
        self._on_ready = None
        self.conversation = None
        self.new_settings = {}
        self.sidebar.current_id = None
        await self.shown.show([])
        self.status.reset()
        self.prompt.focus()

    @notify_store_errors
    async def open_conversation(self, conversation_id: str) -> None:
        """Show a saved conversation and continue it."""
        if self.generating:
            self.notify("Stop the answer first (Esc).", severity="warning")
            return
        conversation = self.store.get_conversation(conversation_id)
        self.edit.end(restore_draft=True)
        self._on_ready = None
        self.conversation = conversation
        self.store.mark_used(conversation.id)  # `mixchat -c` / `ask -c` go on with it
        self.sidebar.current_id = conversation.id
        await self.shown.show(conversation.messages)
        branches.mark(self.store, conversation, self.chat)
        last = conversation.messages[-1] if conversation.messages else None
        self.status.reset((last.prompt_tokens or 0) + (last.completion_tokens or 0) if last else 0)
        self.count_context()
        self.offer_answer(say=True)
        self.prompt.focus()

    @on(Sidebar.Opened)
    async def on_sidebar_opened(self, event: Sidebar.Opened) -> None:
        await self.open_conversation(event.conversation_id)

    @notify_store_errors
    async def action_regenerate(self) -> None:
        """Answer the last message of the user's again, dropping the answer after it."""
        if self.generating:
            self.notify(BUSY, severity="warning")
            return
        await self.store_sync.check()
        conv = self.conversation
        index = last_user_index(conv.messages) if conv is not None else None
        if conv is None or index is None:
            self.notify("Nothing to regenerate: no message of yours to answer.", severity="warning")
            return
        if self.model_error is not None:
            self.notify("No model is loaded: nothing was changed.", severity="warning")
            return
        self.edit.end(restore_draft=True)
        if self.engine is None:
            self._on_ready = self.action_regenerate  # nothing is dropped before it can answer
            self.status.reply_state = "waiting for the model"
            return
        turn = self._turn()
        turn.again(conv.messages[index])
        if turn.conversation is not None and len(turn.conversation.messages) < len(conv.messages):
            await self.shown.drop_from(index + 1)
        self.conversation = turn.conversation
        self.status.reset(self.status.context_used)
        self.count_context()  # without the dropped answer
        await self.start_reply(turn)

    @notify_store_errors
    async def action_sibling(self, by: int) -> None:
        """Alt+Left/Right: show the previous or next sibling of the latest message with
        siblings (another answer, another version of an edited question)."""
        if self.generating:
            self.notify(BUSY, severity="warning")
            return
        if self.conversation is None or self.edit.pending is not None:
            return
        shown = branches.step(self.store, self.conversation, by)
        if shown is None:
            return
        self.conversation = shown
        await self.shown.follow(shown.messages)
        branches.mark(self.store, shown, self.chat)
        self.count_context()

    @notify_store_errors
    async def action_continue_reply(self) -> None:
        """Go on with the last answer where it ended (cut by the token limit, or stopped):
        the continuation is added to the same message."""
        if self.generating:
            self.notify(BUSY, severity="warning")
            return
        await self.store_sync.check()
        conv = self.conversation
        last = conv.messages[-1] if conv is not None and conv.messages else None
        if last is None or last.role is not Role.ASSISTANT or not last.content:
            self.notify(
                "No answer to continue: the conversation must end with one.", severity="warning"
            )
            return
        if last.status is Status.COMPLETE and last.finish_reason != "length":
            self.notify("The last answer is complete; Ctrl+R answers again.", severity="warning")
            return
        if self.engine is None:
            self.notify("No model is loaded: nothing can continue the answer.", severity="warning")
            return
        assert conv is not None
        turn = self._turn()
        turn.continue_reply(last)
        self.edit.end(restore_draft=True)
        await self.shown.drop_from(len(conv.messages) - 1)  # it is streamed again, longer
        await self.start_reply(turn)

    def action_edit_last(self) -> None:
        """Put the last user message back in the input; nothing is dropped until it is sent."""
        if self.generating:
            self.notify(BUSY, severity="warning")
            return
        if self.conversation is None or not self.edit.begin(self.conversation.messages):
            self.notify("No message of yours to edit here.", severity="warning")
            return
        if self._on_ready is not None:  # it is being rewritten: do not answer the old text
            self._on_ready = None
            self.status.reply_state = ""

    def action_copy_answer(self) -> None:
        """Copy the last answer to the clipboard (OSC 52)."""
        self.commands.copy_answer()

    def action_copy_code(self) -> None:
        """Copy the last code block of the last answer."""
        self.commands.copy_code()

    def action_toggle_sidebar(self) -> None:
        """Show or hide the conversation list."""
        self.sidebar.display = not self.sidebar.display

    def action_search(self) -> None:
        """Focus the conversation search box."""
        self.sidebar.display = True
        self.sidebar.query_one("#search").focus()

    def action_settings(self) -> None:
        """Edit this conversation's system prompt and generation settings."""
        self.commands.settings()

    def action_rename(self) -> None:
        """Rename the open conversation."""
        if self.conversation is not None:
            self.commands.rename(self.conversation.id)

    def action_delete(self) -> None:
        """Delete the open conversation (asks first)."""
        if self.conversation is None:
            self.notify("No conversation is open.", severity="warning")
            return
        self.commands.delete(self.conversation.id)

    @on(ConversationList.RenameRequested)
    def on_rename_requested(self, event: ConversationList.RenameRequested) -> None:
        self.commands.rename(event.conversation_id)

    @on(ConversationList.DeleteRequested)
    def on_delete_requested(self, event: ConversationList.DeleteRequested) -> None:
        self.commands.delete(event.conversation_id)
