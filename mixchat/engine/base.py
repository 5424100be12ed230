"""The engine protocol: how the UI and the CLI talk to the thread that owns a model.

``Engine.stream(messages, system_prompt, params, cancel)`` yields events: ``LoadProgress``
while weights load, ``ContextTrimmed`` when old turns had to be dropped, ``TextDelta``
for each piece of text, then ``Usage`` and ``Finished`` (or ``Failed``). A
cancel is a ``threading.Event``; setting it stops generation within one token
and leaves the engine ready for the next request.

When the last message that reaches the prompt is an assistant message (see
``prompt.prompt_messages``), the engine continues that reply: the prompt ends with its text
and no end-of-turn marker, and the ``TextDelta`` events carry only the continuation.

Optionally an engine checks that a prompt fits before loading its weights:
``check_fits(messages, system_prompt, max_new_tokens)`` raises ``PromptError`` when it
cannot fit (``Turn.check_fits`` calls it on engines that have it).

Optionally an engine counts tokens without generating: ``count_tokens(messages,
system_prompt) -> int | None``, the tokens the prompt of ``messages`` fills (None when
it cannot tell, e.g. before loading). It may be called from any thread, alongside a
reply. ``count_context_tokens`` calls it on engines that have it.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Literal, Protocol

from mixchat.config import DEFAULTS, Settings
from mixchat.conversation import Message


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings for one reply. ``temperature`` below ``GREEDY_BELOW`` means greedy.
    The defaults and meanings are those of the same-named settings (``mixchat.config``)."""

    temperature: float = DEFAULTS.temperature
    top_p: float = DEFAULTS.top_p
    top_k: int = DEFAULTS.top_k
    repetition_penalty: float = DEFAULTS.repetition_penalty
    max_new_tokens: int = DEFAULTS.max_new_tokens
    seed: int | None = DEFAULTS.seed

    @classmethod
    def from_settings(cls, settings: Settings) -> GenerationParams:
        """The generation parameters of ``settings``."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class ModelInfo:
    """What is loaded and how; shown in the status bar and in ``ask --json``."""

    model_id: str
    dtype: str
    quantization: str
    attention: str
    device: str
    weight_bytes: int
    context_size: int


@dataclass(frozen=True)
class LoadProgress:
    """Loading advanced: ``stage`` is e.g. 'tokenizer', 'weights'; done/total in its units."""

    stage: str
    done: int
    total: int
    detail: str = ""


@dataclass(frozen=True)
class Notice:
    """Something the user should know that is not an error (e.g. a fallback)."""

    message: str


@dataclass(frozen=True)
class ContextTrimmed:
    """The oldest ``dropped_messages`` messages were left out to fit the context window."""

    dropped_messages: int
    prompt_tokens: int
    context_size: int


@dataclass(frozen=True)
class TextDelta:
    """New reply text."""

    text: str


@dataclass(frozen=True)
class Usage:
    """Token counts and timings of a reply."""

    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None
    duration_s: float
    tokens_per_s: float | None
    cached_tokens: int = 0  # prompt tokens not computed again: their KV cache was reused


FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class Finished:
    """The reply ended normally (``stop``/``length``) or was cancelled."""

    reason: FinishReason


class FailureKind(enum.StrEnum):
    """Why a reply failed."""

    PROMPT = "prompt"  # the conversation cannot become a prompt (too long): bad input
    ENGINE = "engine"  # the model or the server could not answer
    OUT_OF_MEMORY = "oom"  # the GPU ran out of memory


@dataclass(frozen=True)
class Failed:
    """The request failed; ``message`` is one line meant for the user."""

    message: str
    kind: FailureKind = FailureKind.ENGINE
    unsent: bool = False  # it failed before the request reached the model: nothing was asked


Event = LoadProgress | Notice | ContextTrimmed | TextDelta | Usage | Finished | Failed


def count_context_tokens(
    engine: object, messages: Sequence[Message], system_prompt: str | None
) -> int | None:
    """Tokens the context of ``messages`` fills, from the engine's optional
    ``count_tokens``; None for an engine without one."""
    count = getattr(engine, "count_tokens", None)
    if not callable(count):
        return None
    result = count(messages, system_prompt)
    return int(result) if result is not None else None


class EngineError(Exception):
    """A problem the user can fix (model missing, bad option); message is one line."""


class DownloadRefused(EngineError):
    """A model was not downloaded: it would not fit this machine in the mode chosen, or
    not fit the disk. ``offer`` holds the settings that would fit (e.g.
    ``{"quantization": "4bit"}``; empty when none would) and ``flags`` the same as
    command-line flags (``--4bit``)."""

    def __init__(self, message: str, offer: dict[str, str] | None = None, flags: str = "") -> None:
        super().__init__(message)
        self.offer = dict(offer or {})
        self.flags = flags


class Engine(Protocol):
    """What the UI and CLI need from a model backend."""

    def load(self) -> Iterator[LoadProgress | Notice]:
        """Load the model (idempotent), yielding progress; raises ``EngineError``."""
        ...

    def info(self) -> ModelInfo:
        """Describe the loaded model (only valid after ``load``)."""
        ...

    def stream(
        self,
        messages: Sequence[Message],
        system_prompt: str | None,
        params: GenerationParams,
        cancel: threading.Event,
    ) -> Iterator[Event]:
        """Generate a reply to ``messages``, yielding events.

        ``messages`` end with the user's message (a new reply) or with an assistant
        message whose reply is continued: the ``TextDelta`` events are then the rest of
        it only. An engine that cannot continue replies yields one ``Failed`` saying so.
        """
        ...

    def close(self) -> None:
        """Stop the model thread and free the model."""
        ...
