"""Siblings in the chat: "2/3" on a message that has siblings (older answers of a
regenerated question, earlier versions of an edited one), and stepping between them.

Kept apart from the chat screen: the screen only calls ``mark`` after it draws and
``step`` from its key action. The store owns the tree (``sibling_places``, ``switch_to``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mixchat.store import ConversationStore

if TYPE_CHECKING:
    from mixchat.conversation import Conversation
    from mixchat.tui.widgets.chat_view import ChatView


def branch_label(place: int, count: int, keys: str) -> str:
    """What a message with siblings shows: its place among them and the ``keys`` that step
    between them (from the keymap in effect)."""
    return f"{place}/{count} · {keys}"


def mark(
    store: ConversationStore, conversation: Conversation | None, chat: ChatView, keys: str
) -> None:
    """Show "2/3" on each drawn message of ``conversation`` that has siblings."""
    if conversation is None:
        return
    places = store.sibling_places(conversation.id)
    index = {m.id: i for i, m in enumerate(conversation.messages)}
    chat.mark_branches(
        {index[mid]: branch_label(*place, keys) for mid, place in places.items() if mid in index}
    )


def step(store: ConversationStore, conversation: Conversation, by: int) -> Conversation | None:
    """Show the sibling ``by`` places from the last message of the shown path that has
    siblings (the latest branch point: a regenerated answer, an edited question). Returns
    the conversation as now shown; None when it has no siblings to step to."""
    places = store.sibling_places(conversation.id)
    at = [m for m in conversation.messages if m.id in places]
    if not at or at[-1].id is None:
        return None
    siblings = store.siblings(at[-1].id)
    place, _ = places[at[-1].id]
    target = place - 1 + by
    if not 0 <= target < len(siblings) or siblings[target].id is None:
        return None
    return store.switch_to(siblings[target].id)  # type: ignore[arg-type]
