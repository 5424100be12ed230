"""Messages that worker threads post to the UI. Workers never touch widgets."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from mixchat.engine.base import Engine, LoadProgress, ModelInfo, Usage
from mixchat.turn import TurnOutcome


@dataclass
class ModelLoading(Message):
    """Load progress, as the engine reported it."""

    progress: LoadProgress


@dataclass
class ModelNotice(Message):
    """A non-fatal note from the engine (e.g. a fallback)."""

    text: str


@dataclass
class ModelReady(Message):
    """The model is loaded: the engine, handed from the loading thread to the app."""

    engine: Engine
    info: ModelInfo


@dataclass
class ModelFailed(Message):
    """The model could not be loaded; ``error`` is one line. A download refused before it
    began carries the settings that would fit (``offer``) and their flags."""

    error: str
    offer: dict[str, str] | None = None
    flags: str = ""


@dataclass
class ReplyText(Message):
    """New reply text is waiting in the reply buffer (coalesced; drain it)."""

    reply_key: int


@dataclass
class ReplyUsage(Message):
    """Usage figures of the reply so far."""

    reply_key: int
    usage: Usage


@dataclass
class ContextTrimmedNote(Message):
    """Old turns were left out of the prompt."""

    dropped: int


@dataclass
class ReplyDone(Message):
    """The reply ended (complete, stopped or failed)."""

    reply_key: int
    outcome: TurnOutcome


@dataclass
class ContextCounted(Message):
    """The context of a conversation was counted: ``tokens`` (None: the engine cannot)."""

    count_key: int
    tokens: int | None


@dataclass
class MachineReport(Message):
    """What ``mixchat doctor`` says about this machine, a few lines (or why it could not)."""

    lines: list[str]
