"""Edit last message (Ctrl+L by default): the user's last message back in the input box,
to change and send again.

The edit is a pending state: nothing is deleted until the edited message is sent (then
the old message and everything after it are replaced in one transaction). Until then
the messages it would replace are marked in the view and the input box says which keys
send and cancel (the keymap's); leaving the edit (cancelling it, a new or another
conversation, quitting) leaves the conversation exactly as it was and gives the box back
what it held before.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from mixchat.conversation import Message, Role, Status
from mixchat.tui.keymap import keymap_of
from mixchat.tui.widgets.chat_view import ChatView
from mixchat.tui.widgets.prompt_input import PromptInput

SUPERSEDED = "superseded"  # CSS class of the blocks an edit would replace


def edit_title(send: str, cancel: str) -> str:
    """The input box's title while editing (the default keys' fits an 80-column box)."""
    return f"editing · {send} resends · {cancel} cancels"


@dataclass(frozen=True)
class PendingEdit:
    """The message being edited and what the box held before."""

    message_id: int
    index: int  # of the edited message in the conversation
    draft: str
    earlier: bool = False  # an earlier message than the last of the user's (selected)


def last_user_index(messages: list[Message]) -> int | None:
    """Index of the last message of the user's that can be answered (not an error)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.role is Role.USER and message.status is not Status.ERROR:
            return index
    return None


class LastMessageEdit:
    """The pending edit of the open conversation, if any."""

    def __init__(self, chat: ChatView, prompt: PromptInput) -> None:
        self._chat = chat
        self._prompt = prompt
        self.pending: PendingEdit | None = None

    def begin(self, messages: list[Message]) -> bool:
        """Recall the last user message into the box; False if there is none."""
        index = last_user_index(messages)
        if index is None:
            return False
        return self.begin_at(messages, index)

    def begin_at(self, messages: list[Message], index: int) -> bool:
        """Recall the user message at ``index`` (any of them: message selection) into the
        box; sent, it goes beside it as a new version. False if it has no id."""
        if messages[index].id is None:
            return False
        if self.pending is None:
            earlier = index != last_user_index(messages)
            self.pending = PendingEdit(messages[index].id, index, self._prompt.text, earlier)  # type: ignore[arg-type]
        blocks = list(self._chat.query(".message"))
        for block in blocks[max(0, len(blocks) - (len(messages) - index)) :]:
            block.add_class(SUPERSEDED)
        self._prompt.recall(messages[index].content)
        keys = keymap_of(self._prompt)
        self._prompt.border_title = Text(edit_title(keys.say("send"), keys.say("stop")))
        self._prompt.focus()
        return True

    def still_applies(self, messages: list[Message]) -> bool:
        """Whether the edited message is still the last of the user's in ``messages`` (an
        earlier one: still shown where it was)."""
        if self.pending is None:
            return False
        if self.pending.earlier:
            at = self.pending.index
            return at < len(messages) and messages[at].id == self.pending.message_id
        index = last_user_index(messages)
        return index is not None and messages[index].id == self.pending.message_id

    def end(self, *, restore_draft: bool) -> PendingEdit | None:
        """Leave the edit: unmark the view, and give the box back its earlier text if
        ``restore_draft`` (else the edited text stays, to send or keep)."""
        pending, self.pending = self.pending, None
        if pending is None:
            return None
        for block in self._chat.query(f".{SUPERSEDED}"):
            block.remove_class(SUPERSEDED)
        self._prompt.border_title = None
        if restore_draft:
            self._prompt.recall(pending.draft)
        return pending
