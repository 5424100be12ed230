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


@dataclass
class Conversation:
    """A conversation and its messages (oldest first)."""

    id: str
    title: str
    created_at: float
    updated_at: float
    model: str = ""
    system_prompt: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)


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
