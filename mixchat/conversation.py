"""Plain conversation data: roles, messages and conversations. No I/O here."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any


class Role(enum.StrEnum):
    """Who wrote a message."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class Status(enum.StrEnum):
    """How a message ended.

    An assistant reply is stored as INTERRUPTED while it streams and becomes
    COMPLETE only when generation finishes, so a killed process leaves it
    correctly marked.
    """

    COMPLETE = "complete"
    INTERRUPTED = "interrupted"
    ERROR = "error"


@dataclass(frozen=True)
class Attachment:
    """A file that was put into a message: its name as given, its size in bytes and the
    SHA-256 of its bytes (the text itself is part of the message)."""

    name: str
    size: int
    sha256: str


@dataclass
class Message:
    """One message of a conversation."""

    role: Role
    content: str
    status: Status = Status.COMPLETE
    id: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None
    duration_s: float | None = None
    created_at: float = field(default_factory=time.time)
    # Why a reply ended, when known: "stop", or "length" (cut by the token limit).
    finish_reason: str | None = None
    attachments: list[Attachment] = field(default_factory=list)  # files in ``content``
    # The message this one follows (answers, or comes after); None for a first message.
    # Messages form a tree: a regenerated answer or an edited question is a sibling.
    parent_id: int | None = None


@dataclass
class Conversation:
    """A conversation and its messages (oldest first).

    ``messages`` is the path the conversation shows, from a first message down to its last
    (every caller reads a conversation as this straight line). ``branches`` holds the
    messages off that path (older answers, earlier versions of an edited question), parents
    before children; it is filled only where the whole tree is asked for.
    """

    id: str
    title: str
    created_at: float
    updated_at: float
    model: str = ""
    system_prompt: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    branches: list[Message] = field(default_factory=list)


TITLE_MAX_CHARS = 60


def make_title(first_user_message: str, max_chars: int = TITLE_MAX_CHARS) -> str:
    """Derive a one-line title from the first user message.

    Whitespace runs (newlines included) collapse to one space; control
    characters are dropped; long titles are cut at a word boundary with an
    ellipsis.
    """
    cleaned = "".join(ch if ch.isprintable() else " " for ch in first_user_message)
    words = cleaned.split()
    if not words:
        return "(untitled)"
    title = " ".join(words)
    if len(title) <= max_chars:
        return title
    cut = title[: max_chars - 1]
    if " " in cut[max_chars // 2 :]:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip() + "…"


class TreeError(ValueError):
    """Messages that do not form a tree (see ``tree_order``)."""


def tree_order(conv: Conversation) -> list[Message]:
    """Every message of ``conv`` (its path, then its branches) in an order to store them in:
    each after its parent, and otherwise by id, so siblings keep their order.

    Without ids (an older export, a plain message list) the path is a straight line and there
    are no branches. With ids, every message needs a distinct one, a parent among them (or
    none: a first message), and the path must run from a first message, each message the
    parent of the next. Raises ``TreeError`` saying what is wrong.
    """
    path, branches = conv.messages, conv.branches
    everything = [*path, *branches]
    if all(m.id is None for m in everything):
        if branches:
            raise TreeError("branches need message ids and parent ids")
        return list(path)
    ids: set[int] = set()
    for index, message in enumerate(everything):
        if message.id is None:
            raise TreeError(f"message {index} has no id while others have one")
        if message.id in ids:
            raise TreeError(f"message id {message.id} is used twice")
        ids.add(message.id)
    for before, message in zip([None, *path], path, strict=False):
        expected = None if before is None else before.id
        if message.parent_id != expected:
            raise TreeError(
                f"the shown path is broken at message id {message.id}: its parent is"
                f" {message.parent_id}, the message before it is {expected}"
            )
    for message in branches:
        if message.parent_id is not None and message.parent_id not in ids:
            raise TreeError(f"message id {message.id} has an unknown parent {message.parent_id}")
    return _parents_first(everything)


def _parents_first(messages: list[Message]) -> list[Message]:
    """``messages`` with each after its parent, smallest id first among those ready."""
    import heapq

    children: dict[int | None, list[Message]] = {}
    for message in messages:
        children.setdefault(message.parent_id, []).append(message)
    ready = [(m.id, i, m) for i, m in enumerate(children.get(None, []))]
    heapq.heapify(ready)
    ordered: list[Message] = []
    while ready:
        _, _, message = heapq.heappop(ready)
        ordered.append(message)
        for child in children.get(message.id, []):
            heapq.heappush(ready, (child.id, len(ordered) + len(ready), child))
    if len(ordered) < len(messages):
        raise TreeError("some messages are their own ancestors (their parents form a cycle)")
    return ordered
