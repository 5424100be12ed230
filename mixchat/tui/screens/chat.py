"""The main screen: sidebar, conversation, input, status bar, and the chat's keys.

The screen composes the widgets and routes keys and messages; the work is done by its
parts, each in its own module: the open conversation and its commands
(``ConversationController``), the reply streaming in (``ReplyStream``, fed by a thread
worker that only posts messages), the pending edit (``edit``), what the view shows
(``shown``), following the store (``chat_sync``) and the dialogs (``chat_commands``).
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen

from mixchat.config import Settings, SettingsSources
from mixchat.conversation import Conversation
from mixchat.engine.base import Engine, LoadProgress
from mixchat.store import ConversationStore
from mixchat.tui.actions import Where, bindings
from mixchat.tui.edit import LastMessageEdit
from mixchat.tui.messages import ContextTrimmedNote, ReplyDone, ReplyText, ReplyUsage
from mixchat.tui.screens.attach import AttachmentBar, Attachments
from mixchat.tui.screens.chat_commands import ChatCommands
from mixchat.tui.screens.chat_conversation import ConversationController
from mixchat.tui.screens.chat_reply import ReplyStream
from mixchat.tui.screens.chat_selection import MessageSelection
from mixchat.tui.screens.chat_sync import StoreSync
from mixchat.tui.screens.preset_picker import PresetPicker
from mixchat.tui.shown import ShownConversation, left_out
from mixchat.tui.widgets.chat_view import ChatView
from mixchat.tui.widgets.prompt_input import PromptInput
from mixchat.tui.widgets.sidebar import ConversationList, Sidebar
from mixchat.tui.widgets.status_bar import ModelState, StatusBar


class ChatScreen(Screen[None]):
    """Chat with the model; everything a session needs on one screen."""

    BINDINGS = bindings(Where.CHAT)

    def __init__(
        self, store: ConversationStore, sources: SettingsSources, resume_id: str | None = None
    ) -> None:
        super().__init__()
        self.store = store
        self.settings = sources.effective()
        self.resume_id = resume_id
        self.engine: Engine | None = None
        self.model_error: str | None = None  # why no model could be loaded
        self.control = ConversationController(self, sources)
        self.reply = ReplyStream(self)
        self.commands = ChatCommands(self)
        self.store_sync = StoreSync(self)
        self.attachments = Attachments(self)
        self.presets = PresetPicker(self)
        self.selection = MessageSelection(self)

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Sidebar(self.store, id="sidebar")
            with Vertical(id="main"):
                yield ChatView(id="chat")
                yield AttachmentBar(id="attachments")
                yield PromptInput(self.settings.model, id="input")
        yield StatusBar(self.settings.model, id="status")

    async def on_mount(self) -> None:
        self.shown = ShownConversation(self.chat)
        self.edit = LastMessageEdit(self.chat, self.prompt)
        self.store_sync.start()
        if self.resume_id is not None:
            await self.open_conversation(self.resume_id)
        self.prompt.focus()

    # -- parts and state ----------------------------------------------------

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
    def conversation(self) -> Conversation | None:
        """The open conversation (None: a new one, not saved yet)."""
        return self.control.conversation

    @conversation.setter
    def conversation(self, conversation: Conversation | None) -> None:
        self.control.conversation = conversation

    @property
    def generating(self) -> bool:
        """A reply is streaming."""
        return self.reply.generating

    @property
    def waiting_for_model(self) -> bool:
        """A message is saved and will be answered once the model has loaded."""
        return self.control.pending is not None

    @property
    def streaming_text(self) -> str | None:
        """The text of the reply streaming now, if any."""
        return self.reply.text

    def effective_settings(self) -> Settings:
        """The settings in effect for the open conversation, or for the next new one."""
        return self.control.effective_settings()

    # -- model state (called by the app) ------------------------------------

    def model_loading(self, event: LoadProgress | None) -> None:
        """Loading (again, if ``event`` is None) advanced."""
        self.model_error = None
        self.status.show_load(event)

    def model_ready(self, engine: Engine) -> None:
        """The engine is loaded; start a reply that was waiting for it."""
        self.engine = engine
        self.model_error = None
        self.status.set_info(engine.info())
        self.status.model_state = ModelState.READY
        self.control.model_ready()

    def model_failed(self, error: str) -> None:
        """No model could be loaded: say so, and drop a reply that was waiting for it."""
        self.model_error = error
        self.status.model_state = ModelState.NO_MODEL
        self.control.model_failed()

    # -- messages -------------------------------------------------------------

    @on(PromptInput.Submitted)
    async def on_submitted(self, event: PromptInput.Submitted) -> None:
        await self.control.send(event.text)

    @on(ReplyText)
    async def on_reply_text(self, message: ReplyText) -> None:
        await self.reply.on_text(message)

    @on(ReplyUsage)
    def on_reply_usage(self, message: ReplyUsage) -> None:
        self.reply.on_usage(message)

    @on(ContextTrimmedNote)
    def on_context_trimmed(self, message: ContextTrimmedNote) -> None:
        self.notify(
            f"The {message.dropped} oldest messages were left out to fit the context "
            "(dimmed in the chat)."
        )
        self.dim_left_out(message.dropped)

    def dim_left_out(self, dropped: int) -> None:
        """Dim the messages that the ``dropped`` oldest of the prompt were (0: none)."""
        messages = list(self.conversation.messages) if self.conversation is not None else []
        self.chat.dim_first(left_out(messages, dropped))

    @on(ReplyDone)
    async def on_reply_done(self, message: ReplyDone) -> None:
        outcome = await self.reply.finish(message)
        if outcome is None:
            return
        await self.control.reply_ended(outcome)
        self.dim_left_out(outcome.dropped_messages)  # they fit again: nothing dimmed
        if self.reply.exit_after:
            self.app.exit()

    @on(Sidebar.Opened)
    async def on_sidebar_opened(self, event: Sidebar.Opened) -> None:
        await self.open_conversation(event.conversation_id)

    @on(ConversationList.RenameRequested)
    def on_rename_requested(self, event: ConversationList.RenameRequested) -> None:
        self.commands.rename(event.conversation_id)

    @on(ConversationList.DeleteRequested)
    def on_delete_requested(self, event: ConversationList.DeleteRequested) -> None:
        self.commands.delete(event.conversation_id)

    async def open_conversation(self, conversation_id: str) -> None:
        """Show a saved conversation and continue it."""
        self.selection.leave()
        await self.control.open(conversation_id)

    def quit_after_reply(self) -> bool:
        """Stop the reply and leave the app once it is saved; False if none streams."""
        self.reply.exit_after = self.reply.stop()
        return self.reply.exit_after

    # -- actions (the keys of ``Where.CHAT`` in ``mixchat.tui.actions``) -------

    def action_escape(self) -> None:
        """Esc: leave the message selection; clear the search box, then leave it; cancel an
        edit; else stop the answer."""
        if self.selection.leave():
            return
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
        if not self.reply.stop():
            self.control.stop_waiting()

    async def action_new(self) -> None:
        """Start a new conversation."""
        self.selection.leave()
        await self.control.new()

    async def action_regenerate(self) -> None:
        """Answer the last message of the user's again, dropping the answer after it."""
        await self.control.regenerate()

    async def action_continue_reply(self) -> None:
        """Go on with the last answer where it ended (cut by the token limit, or stopped)."""
        await self.control.continue_reply()

    async def action_sibling(self, by: int) -> None:
        """Show the previous (-1) or next (1) version of a regenerated answer or an edited
        question; nothing is deleted by either."""
        await self.control.sibling(by)

    def action_edit_last(self) -> None:
        """Put the last user message back in the input; nothing is dropped until it is sent."""
        self.control.edit_last()

    async def action_select_messages(self) -> None:
        """Select the last message, to act on it (``Where.MESSAGES``'s keys)."""
        await self.selection.enter()

    def action_copy_answer(self) -> None:
        """Copy the last answer to the clipboard (OSC 52)."""
        self.commands.copy_answer()

    def action_copy_code(self) -> None:
        """Copy the last code block of the last answer."""
        self.commands.copy_code()

    def action_attach_file(self) -> None:
        """Ask for a file to put into the next message."""
        self.attachments.ask()

    def action_detach_file(self) -> None:
        """Remove the last file attached to the next message."""
        self.attachments.remove_last()

    def action_pick_preset(self) -> None:
        """Apply a preset to the open conversation (or to new ones)."""
        self.presets.open()

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

    def action_export(self, fmt: str) -> None:
        """Save the open conversation as Markdown (``md``) or JSON and say where."""
        self.commands.export(fmt)
