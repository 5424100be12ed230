"""Message selection: the keyboard's way to act on any message of the open conversation.

``select_messages`` (Ctrl+Up by default) selects the last message and gives the chat view
the focus; its keys (``Where.MESSAGES`` in ``mixchat.tui.actions``) then move the
selection and act on the selected message: copy it or its Nth code block (the blocks are
numbered "[1]", "[2]"... on screen while it is selected, in the order of
``mixchat.codeblocks.code_blocks``, which is what is copied), edit it (a message of the
user's: sent as a new version beside the old one), answer it again, fork the conversation
there, or delete it and everything under it. ``stop`` (Esc) leaves the selection.

The selection holds the message's id: when the conversation changes under it (a reply
ends, another window writes), it is found again or the selection ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.content import Content
from textual.widget import Widget

from mixchat.codeblocks import code_blocks
from mixchat.conversation import Message, Role, Status
from mixchat.tui.errors import notify_store_errors
from mixchat.tui.keymap import keymap_of
from mixchat.tui.screens.modals import ConfirmScreen
from mixchat.tui.widgets.code_stream import CodeFence

if TYPE_CHECKING:
    from mixchat.tui.screens.chat import ChatScreen

SELECTED = "selected"  # CSS class of the selected message's block


def block_label(number: int, language: str) -> Content:
    """The "[1] python" that numbers a code block of the selected message."""
    return Content(f"[{number}] {language}".rstrip())


class MessageSelection:
    """The selected message of a ``ChatScreen`` (None: no selection)."""

    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen
        self.message_id: int | None = None

    # -- where it is ----------------------------------------------------------

    @property
    def active(self) -> bool:
        """A message is selected."""
        return self.message_id is not None

    def _messages(self) -> list[Message]:
        conv = self.screen.conversation
        if conv is None:
            return []
        drawn = self.screen.chat.hidden_count + len(self.screen.chat.query(".message"))
        return list(conv.messages[:drawn])  # not a reply streaming in, nor one not drawn

    def current(self) -> tuple[int, Message] | None:
        """The selected message and its index in the conversation (None: none, or it is
        no longer shown: the selection then ends)."""
        if self.message_id is None:
            return None
        for index, message in enumerate(self._messages()):
            if message.id == self.message_id:
                return index, message
        self.leave()
        self.screen.notify("The selected message is no longer shown.", severity="warning")
        return None

    def _block(self, index: int) -> Widget | None:
        chat = self.screen.chat
        blocks = list(chat.query(".message"))
        offset = index - chat.hidden_count
        return blocks[offset] if 0 <= offset < len(blocks) else None

    def _unmark(self) -> None:
        for block in self.screen.chat.query(f".{SELECTED}"):
            block.remove_class(SELECTED)
            block.border_title = None
            block.border_subtitle = None
        for fence in self.screen.chat.query(CodeFence):
            fence.border_title = None

    def _hint(self, message: Message) -> Content:
        keys = keymap_of(self.screen)
        names = ["copy_message"]
        names.append("edit_message" if message.role is Role.USER else "regenerate_from")
        names += ["fork_from", "delete_from"]
        words = {
            "copy_message": "copy",
            "edit_message": "edit",
            "regenerate_from": "again",
            "fork_from": "fork",
            "delete_from": "delete",
        }
        parts = [f"{keys.say(n)} {words[n]}" for n in names if keys.keys(n)]
        return Content(" · ".join([*parts, f"{keys.say('stop')} back"]))

    async def _mark(self, index: int, message: Message) -> None:
        chat = self.screen.chat
        while index < chat.hidden_count:
            await chat.show_earlier()
        self._unmark()
        block = self._block(index)
        if block is None:
            return
        block.add_class(SELECTED)
        block.border_title = self._hint(message)
        blocks = code_blocks(message.content)
        if blocks:
            block.border_subtitle = Content(
                "code: "
                + "  ".join(str(block_label(n, b.language)) for n, b in enumerate(blocks, 1))
            )
            fences = list(block.query(CodeFence))
            if len(fences) == len(blocks):  # the view drew the same blocks: number them too
                for number, (fence, code) in enumerate(zip(fences, blocks, strict=True), 1):
                    fence.border_title = block_label(number, code.language)
        chat.release_anchor()
        chat.scroll_to_widget(block, animate=False, top=block.outer_size.height > chat.size.height)

    # -- entering, moving, leaving ----------------------------------------------

    async def enter(self) -> None:
        """Select the last shown message and give the chat view the keys."""
        messages = self._messages()
        if not messages or messages[-1].id is None:
            self.screen.notify("No message to select.", severity="warning")
            return
        self.message_id = messages[-1].id
        self.screen.chat.focus()
        await self._mark(len(messages) - 1, messages[-1])

    def leave(self) -> bool:
        """End the selection (the message box gets the keys back); False if none."""
        if self.message_id is None:
            return False
        self.message_id = None
        self._unmark()
        self.screen.chat.anchor()
        self.screen.prompt.focus()
        return True

    async def move(self, by: int) -> None:
        """Select the message ``by`` places below (negative: above) the selected one."""
        found = self.current()
        if found is None:
            return
        messages = self._messages()
        index = min(max(found[0] + by, 0), len(messages) - 1)
        self.message_id = messages[index].id
        await self._mark(index, messages[index])

    # -- acting on the selected message ----------------------------------------------

    def _refused(self) -> bool:
        """Say so if a reply is streaming: nothing is changed while it does."""
        if self.screen.generating:
            stop = keymap_of(self.screen).say("stop")
            self.screen.notify(
                f"An answer is streaming: {stop} stops it first.", severity="warning"
            )
            return True
        return False

    async def copy(self) -> None:
        """Copy the selected message's text."""
        found = self.current()
        if found is not None:
            self.screen.app.copy_text(found[1].content, "the selected message")  # type: ignore[attr-defined]

    async def copy_block(self, number: int) -> None:
        """Copy the selected message's code block ``number`` (as numbered on screen)."""
        found = self.current()
        if found is None:
            return
        blocks = code_blocks(found[1].content)
        if not 1 <= number <= len(blocks):
            count = f"{len(blocks)} code block{'s' if len(blocks) != 1 else ''}"
            self.screen.notify(
                f"The selected message has {count}: no [{number}].", severity="warning"
            )
            return
        self.screen.app.copy_text(blocks[number - 1].code, f"code block [{number}]")  # type: ignore[attr-defined]

    async def edit(self) -> None:
        """Put the selected message of the user's in the message box: sent, it becomes a
        new version beside the old one, which stays (``older_version``)."""
        screen = self.screen
        found = self.current()
        if found is None or self._refused():
            return
        index, message = found
        if message.role is not Role.USER:
            screen.notify("Only your own messages can be edited.", severity="warning")
            return
        conv = screen.conversation
        assert conv is not None
        self.leave()
        screen.edit.end(restore_draft=True)
        screen.edit.begin_at(list(conv.messages), index)
        screen.control.pending = None  # the text is being rewritten: do not answer it
        screen.control.offer_answer(say=False)

    @notify_store_errors
    async def regenerate(self) -> None:
        """Answer again the question of the selected answer (or the selected question): the
        new answer goes beside the old ones, which stay."""
        screen = self.screen
        found = self.current()
        if found is None or self._refused():
            return
        index, message = found
        question = index if message.role is Role.USER else index - 1
        messages = self._messages()
        if question < 0 or messages[question].role is not Role.USER:
            screen.notify("This answer has no question of yours to answer.", severity="warning")
            return
        if messages[question].status is Status.ERROR:
            screen.notify("That message failed: edit it instead.", severity="warning")
            return
        if screen.engine is None:
            screen.notify("No model is loaded yet: nothing was changed.", severity="warning")
            return
        self.leave()
        screen.edit.end(restore_draft=True)
        control = screen.control
        turn = control.turn()
        turn.again(messages[question])
        await screen.shown.drop_from(question + 1)
        control.conversation = turn.conversation
        screen.status.reset(screen.status.context_used)
        control.count_context()
        await control.answer(turn)

    @notify_store_errors
    async def fork(self) -> None:
        """Open a new conversation holding the messages up to the selected one."""
        screen = self.screen
        found = self.current()
        if found is None or self._refused():
            return
        assert found[1].id is not None
        forked = screen.store.fork(found[1].id)
        self.leave()
        await screen.open_conversation(forked.id)
        screen.sidebar.reload()
        count = len(forked.messages)
        screen.notify(f"Forked: “{forked.title}”, {count} message{'s' if count != 1 else ''}.")

    async def delete(self) -> None:
        """Delete the selected message and everything under it, after asking."""
        screen = self.screen
        found = self.current()
        if found is None or self._refused():
            return
        index, message = found
        count = len(self._messages()) - index - 1
        under = f" and the {count} under it" if count else ""
        question = f"Delete this message{under}? Versions beside it stay."

        async def apply(confirmed: bool | None) -> None:
            if confirmed:
                await self._delete(message, index)

        screen.app.push_screen(ConfirmScreen(question), apply)

    @notify_store_errors
    async def _delete(self, message: Message, index: int) -> None:
        screen, control = self.screen, self.screen.control
        if self._refused() or message.id is None:
            return
        screen.edit.end(restore_draft=True)
        count = screen.store.truncate_from(message.id)
        control.reload()
        assert control.conversation is not None
        await screen.shown.follow(control.conversation.messages)
        control.mark_branches()
        control.count_context()
        control.offer_answer(say=False)
        screen.sidebar.reload()
        screen.notify(f"Deleted {count} message{'s' if count != 1 else ''}.")
        messages = self._messages()
        if not messages:
            self.leave()
            return
        place = min(index, len(messages) - 1)  # a version beside it, else the one above
        self.message_id = messages[place].id
        screen.chat.focus()
        await self._mark(place, messages[place])

    def notify(self, message: str, **kwargs: object) -> None:
        """For ``notify_store_errors``: a failure is shown on the screen."""
        self.screen.notify(message, **kwargs)  # type: ignore[arg-type]
