"""The open conversation of the chat screen and what can be done to it: open, new, send,
answer, regenerate, continue, edit the last message, delete.

Each command is a ``Turn`` (``mixchat.turn``) over the store; this controller decides
what the screen shows around it. A reply asked for while the model is still loading is
kept (``pending``) and started once it has loaded. The reply itself streams in through
``ReplyStream`` (``chat_reply``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mixchat import attachments
from mixchat.config import Settings, SettingsSources
from mixchat.conversation import Conversation, Message, Role, Status
from mixchat.prompt import PromptError, prompt_messages
from mixchat.tui import branches
from mixchat.tui.edit import last_user_index
from mixchat.tui.errors import notify_store_errors
from mixchat.tui.keymap import keymap_of
from mixchat.tui.widgets.status_bar import ReplyState
from mixchat.turn import Turn, TurnOutcome

if TYPE_CHECKING:
    from mixchat.tui.screens.chat import ChatScreen


class ConversationController:
    """The conversation open in a ``ChatScreen`` (None: a new one, not saved yet)."""

    def __init__(self, screen: ChatScreen, sources: SettingsSources) -> None:
        self.screen = screen
        self.store = screen.store
        self.sources = sources
        self.conversation: Conversation | None = None
        # Settings chosen in the settings window for the next new conversation.
        self.new_settings: dict[str, Any] = {}
        self.pending: Callable[[], Awaitable[None]] | None = None  # waits for the model

    # -- what is in effect ------------------------------------------------------

    def effective_settings(self) -> Settings:
        """The settings in effect for the open conversation, or for the next new one:
        defaults < config < environment < the conversation's saved settings < flags."""
        if self.conversation is not None:
            return self.sources.effective(self.conversation)
        return replace(self.sources.effective(), **self.new_settings)

    def system_prompt(self) -> str | None:
        """The system prompt of the open (or the next new) conversation."""
        return self.effective_settings().system_prompt

    def turn(self) -> Turn:
        """A turn in the open conversation (or a new one) with the settings in effect."""
        return Turn(self.store, self.sources, self.conversation, self.new_settings)

    def reload(self) -> None:
        """Read the open conversation again from the store."""
        if self.conversation is not None:
            self.conversation = self.store.get_conversation(self.conversation.id)

    def count_context(self) -> None:
        """Count the open conversation's tokens for the status bar (if the engine can)."""
        engine, conv = self.screen.engine, self.conversation
        if engine is not None and conv is not None:
            self.screen.status.count_context(engine, list(conv.messages), self.system_prompt())

    def offer_answer(self, say: bool) -> None:
        """Mark an open conversation whose last message has no answer (and say so)."""
        status = self.screen.status
        usable = prompt_messages(self.conversation.messages) if self.conversation else []
        unanswered = bool(usable) and usable[-1].role is Role.USER
        if not unanswered and status.reply_state is ReplyState.ANSWERABLE:
            status.reply_state = ReplyState.NONE  # answered since (from elsewhere, say)
        if self.screen.generating or self.pending is not None or not unanswered:
            return
        status.reply_state = ReplyState.ANSWERABLE
        if say and self.screen.engine is not None:
            key = keymap_of(self.screen).say("regenerate")
            self.screen.notify(f"Your last message has no answer yet: {key} answers it.")

    def _busy(self) -> bool:
        """Say so if a reply is streaming (the command then does nothing)."""
        if self.screen.generating:
            stop = keymap_of(self.screen).say("stop")
            self.screen.notify(f"An answer is streaming: {stop} stops it.", severity="warning")
        return self.screen.generating

    # -- the model ----------------------------------------------------------------

    def model_ready(self) -> None:
        """The model has loaded: start the reply that waited for it, else offer one."""
        action, self.pending = self.pending, None
        if action is not None:
            self.screen.call_later(action)
            return
        self.count_context()
        self.offer_answer(say=True)

    def model_failed(self) -> None:
        """No model: a reply that waited for one will not come."""
        if self.pending is not None:
            self.pending = None
            self.screen.status.reply_state = ReplyState.UNANSWERED

    def stop_waiting(self) -> None:
        """Do not answer automatically what waits for the model."""
        if self.pending is not None:
            self.pending = None
            self.screen.status.reply_state = ReplyState.UNANSWERED
            self.screen.notify("The message is saved; it will not be answered automatically.")

    # -- opening ------------------------------------------------------------------

    async def new(self) -> None:
        """Start a new conversation."""
        screen = self.screen
        if screen.generating:
            stop = keymap_of(screen).say("stop")
            screen.notify(f"Stop the answer first ({stop}).", severity="warning")
            return
        screen.edit.end(restore_draft=True)
        self.pending = None
        self.conversation = None
        self.new_settings = {}
        screen.sidebar.current_id = None
        await screen.shown.show([])
        screen.status.reset()
        screen.prompt.focus()

    @notify_store_errors
    async def open(self, conversation_id: str) -> None:
        """Show a saved conversation and continue it."""
        screen = self.screen
        if screen.generating:
            stop = keymap_of(screen).say("stop")
            screen.notify(f"Stop the answer first ({stop}).", severity="warning")
            return
        conversation = self.store.get_conversation(conversation_id)
        screen.edit.end(restore_draft=True)
        self.pending = None
        self.conversation = conversation
        self.store.mark_used(conversation.id)  # `mixchat -c` / `ask -c` go on with it
        screen.sidebar.current_id = conversation.id
        await screen.shown.show(conversation.messages)
        self.mark_branches()
        last = conversation.messages[-1] if conversation.messages else None
        screen.status.reset(
            (last.prompt_tokens or 0) + (last.completion_tokens or 0) if last else 0
        )
        self.count_context()
        self.offer_answer(say=True)
        screen.prompt.focus()

    @notify_store_errors
    async def delete(self, conversation_id: str) -> None:
        """Delete a conversation (the user has confirmed); a new one opens in its place."""
        screen = self.screen
        if self.conversation is not None and self.conversation.id == conversation_id:
            if screen.generating:
                stop = keymap_of(screen).say("stop")
                screen.notify(f"Stop the answer first ({stop}).", severity="warning")
                return
            await self.new()
        self.store.delete(conversation_id)
        screen.sidebar.reload()
        screen.notify("Conversation deleted.")

    # -- turns ----------------------------------------------------------------------

    @notify_store_errors
    async def send(self, text: str) -> None:
        """Commit the user's message (in place of the edited one), show it, get a reply."""
        screen = self.screen
        if self._busy():
            return
        editing, open_before = screen.edit.pending is not None, self.conversation is not None
        # The prompt never holds a turn the view does not show.
        async with screen.store_sync.caught_up():
            if (editing and screen.edit.pending is None) or (
                open_before and self.conversation is None
            ):
                return  # changed or deleted under the user's eyes: the text waits in the box
            files = screen.attachments.files
            content = attachments.compose_message(text, files)
            message = Message(Role.USER, content, attachments=[f.record() for f in files])
            edit = screen.edit.pending
            turn = self.turn()
            if edit is not None and self.conversation is not None:
                turn.ask(message, replacing=edit.message_id)
                screen.edit.end(restore_draft=False)
                await screen.shown.drop_from(edit.index)
            else:
                if not self._fits(turn, message):
                    return
                turn.ask(message, title=attachments.title_for(text, files))
            screen.attachments.sent()
            if self.conversation is None:
                self.new_settings = {}
                assert turn.conversation is not None
                screen.sidebar.current_id = turn.conversation.id
            self.conversation = turn.conversation
            screen.prompt.take(text)
            if edit is not None:  # what the box held before the edit comes back
                screen.prompt.recall(edit.draft + screen.prompt.text)
            await screen.chat.add_user(content)
            screen.shown.appended(message)
            screen.sidebar.reload()
            screen.status.reset(screen.status.context_used)
            self.count_context()
            await self._answer()

    def _fits(self, turn: Turn, message: Message) -> bool:
        """Check, where the loaded engine can tell, that the prompt with ``message`` fits
        the context; if not, say so (one notification) and save nothing."""
        if self.screen.engine is None:
            return True
        try:
            turn.check_fits(self.screen.engine, message)
        except PromptError as exc:
            self.screen.notify(
                f"Not sent: {exc}", title="Too big for the context", severity="error",
                markup=False,
            )  # fmt: skip
            return False
        return True

    async def _answer(self) -> None:
        screen = self.screen
        if screen.engine is not None:
            await self.answer()
        elif screen.model_error is not None:
            screen.status.reply_state = ReplyState.UNANSWERED
            keys = keymap_of(screen)
            screen.notify(
                "No model is loaded, so nothing will answer: your message is saved. Load a "
                f"model ({keys.say('palette')}, Model setup), then {keys.say('regenerate')} "
                "answers it.",
                severity="warning",
            )
        else:
            self.pending = self.answer
            screen.status.reply_state = ReplyState.WAITING

    @notify_store_errors
    async def answer(self, turn: Turn | None = None) -> None:
        """Stream a reply to the conversation as it stands (or to ``turn``'s)."""
        screen = self.screen
        if screen.engine is None or self.conversation is None or screen.generating:
            return
        await screen.reply.start(screen.engine, turn or self.turn())

    @notify_store_errors
    async def regenerate(self) -> None:
        """Answer the last message of the user's again, dropping the answer after it."""
        screen = self.screen
        if self._busy():
            return
        # The prompt never holds a turn the view does not show.
        async with screen.store_sync.caught_up():
            conv = self.conversation
            index = last_user_index(conv.messages) if conv is not None else None
            if conv is None or index is None:
                screen.notify(
                    "Nothing to regenerate: no message of yours to answer.", severity="warning"
                )
                return
            if screen.model_error is not None:
                screen.notify("No model is loaded: nothing was changed.", severity="warning")
                return
            screen.edit.end(restore_draft=True)
            if screen.engine is None:
                self.pending = self.regenerate  # nothing is dropped before it can answer
                screen.status.reply_state = ReplyState.WAITING
                return
            turn = self.turn()
            turn.again(conv.messages[index])
            if turn.conversation is not None and len(turn.conversation.messages) < len(
                conv.messages
            ):
                await screen.shown.drop_from(index + 1)
            self.conversation = turn.conversation
            screen.status.reset(screen.status.context_used)
            self.count_context()  # without the dropped answer
            await self.answer(turn)

    @notify_store_errors
    async def continue_reply(self) -> None:
        """Go on with the last answer where it ended (cut by the token limit, or stopped):
        the continuation is added to the same message."""
        screen = self.screen
        if self._busy():
            return
        # The prompt never holds a turn the view does not show.
        async with screen.store_sync.caught_up():
            conv = self.conversation
            last = conv.messages[-1] if conv is not None and conv.messages else None
            if last is None or last.role is not Role.ASSISTANT or not last.content:
                screen.notify(
                    "No answer to continue: the conversation must end with one.", severity="warning"
                )
                return
            if last.status is Status.COMPLETE and last.finish_reason != "length":
                key = keymap_of(screen).say("regenerate")
                screen.notify(
                    f"The last answer is complete; {key} answers again.", severity="warning"
                )
                return
            if screen.engine is None:
                screen.notify(
                    "No model is loaded: nothing can continue the answer.", severity="warning"
                )
                return
            assert conv is not None
            turn = self.turn()
            turn.continue_reply(last)
            screen.edit.end(restore_draft=True)
            await screen.shown.drop_from(len(conv.messages) - 1)  # it is streamed again, longer
            await self.answer(turn)

    def edit_last(self) -> None:
        """Put the last user message back in the input; nothing is dropped until it is sent."""
        screen = self.screen
        if self._busy():
            return
        if self.conversation is None or not screen.edit.begin(self.conversation.messages):
            screen.notify("No message of yours to edit here.", severity="warning")
            return
        if self.pending is not None:  # it is being rewritten: do not answer the old text
            self.pending = None
            screen.status.reply_state = ReplyState.NONE

    @notify_store_errors
    async def reply_ended(self, outcome: TurnOutcome) -> None:
        """A reply has been saved: show the conversation as the store holds it now."""
        screen = self.screen
        if self.conversation is not None:
            self.reload()
            assert self.conversation is not None
            for saved in self.conversation.messages:
                if saved.id == outcome.message_id:
                    screen.shown.settled(saved)
            await screen.shown.follow(self.conversation.messages)  # and what came from elsewhere
            self.mark_branches()
        screen.sidebar.reload()

    def mark_branches(self) -> None:
        """Show "2/3" and the keys on each shown message that has other versions."""
        keys = keymap_of(self.screen)
        hint = f"{keys.say('older_version')}/{keys.say('newer_version')}"
        branches.mark(self.store, self.conversation, self.screen.chat, hint)

    @notify_store_errors
    async def sibling(self, by: int) -> None:
        """Show the previous (-1) or next (1) version of the latest message that has
        others (a regenerated answer, an edited question)."""
        screen = self.screen
        if self._busy() or self.conversation is None or screen.edit.pending is not None:
            return
        shown = branches.step(self.store, self.conversation, by)
        if shown is None:
            return
        self.conversation = shown
        await screen.shown.follow(shown.messages)
        self.mark_branches()
        self.count_context()

    def notify(self, message: str, **kwargs: object) -> None:
        """For ``notify_store_errors``: a failure is shown on the screen."""
        self.screen.notify(message, **kwargs)  # type: ignore[arg-type]
