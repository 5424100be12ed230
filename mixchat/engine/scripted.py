"""A scripted engine for tests and demos: queued replies, controllable timing.

It follows the same protocol as the real engine, including cancel, so UI and
session behaviour can be tested without a model.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from mixchat.conversation import Message
from mixchat.engine.base import (
    ContextTrimmed,
    EngineError,
    Event,
    Failed,
    Finished,
    FinishReason,
    GenerationParams,
    LoadProgress,
    ModelInfo,
    Notice,
    TextDelta,
    Usage,
)
from mixchat.prompt import PromptError, prompt_messages


@dataclass
class ScriptedReply:
    """One reply: text pieces streamed with ``delay_s`` between them, or a failure."""

    pieces: list[str]
    delay_s: float = 0.0
    fail_with: str | None = None
    gate: threading.Event | None = None  # if set, waits for it before each piece...
    gate_from: int = 0  # ...from this piece on
    finish: FinishReason = "stop"  # "length": as if cut by the token limit
    trimmed: int = 0  # reports this many oldest messages left out (ContextTrimmed)


@dataclass
class ScriptedEngine:
    """Replays queued replies; records what it was asked.

    Loading yields ``load_events`` (four 'weights' steps by default), each only once
    ``load_gate`` (if set) is released for it, then fails with ``load_error`` if set.
    """

    replies: deque[ScriptedReply] = field(default_factory=deque)
    load_delay_s: float = 0.0
    requests: list[tuple[list[Message], str | None, GenerationParams]] = field(default_factory=list)
    load_events: list[LoadProgress | Notice] | None = None
    load_gate: threading.Semaphore | None = None
    load_error: str | None = None
    # With a context size, ``check_fits`` refuses a prompt whose ``count_tokens`` and
    # ``max_new_tokens`` exceed it (None: every prompt fits).
    context_size: int | None = None

    def queue(
        self,
        *pieces: str,
        delay_s: float = 0.0,
        fail_with: str | None = None,
        gate: threading.Event | None = None,
        gate_from: int = 0,
        finish: FinishReason = "stop",
        trimmed: int = 0,
    ) -> None:
        """Add a reply to the script."""
        reply = ScriptedReply(list(pieces), delay_s, fail_with, gate, gate_from, finish, trimmed)
        self.replies.append(reply)

    def load(self) -> Iterator[LoadProgress | Notice]:
        """Pretend to load: the scripted events, or four steps."""
        events = self.load_events
        if events is None:
            events = [LoadProgress("weights", step, 4) for step in range(1, 5)]
        for event in events:
            if self.load_gate is not None:
                self.load_gate.acquire()
            time.sleep(self.load_delay_s / len(events))
            yield event
        if self.load_error is not None:
            raise EngineError(self.load_error)

    def count_tokens(self, messages: Sequence[Message], system_prompt: str | None) -> int:
        """A stand-in count: words, plus three per message and for the system prompt."""
        texts = [m.content for m in prompt_messages(messages)]
        texts += [system_prompt] if system_prompt else []
        return sum(len(text.split()) + 3 for text in texts)

    def check_fits(
        self, messages: Sequence[Message], system_prompt: str | None, max_new_tokens: int
    ) -> None:
        """``PromptError`` when the counted prompt and the reply exceed ``context_size``."""
        if self.context_size is None:
            return
        needed = self.count_tokens(messages, system_prompt) + max_new_tokens
        if needed > self.context_size:
            raise PromptError(
                f"the prompt needs {needed:,} tokens with the reply; the context holds "
                f"{self.context_size:,}"
            )

    def info(self) -> ModelInfo:
        """A fixed description."""
        return ModelInfo("scripted", "none", "none", "none", "cpu", 0, 32768)

    def stream(
        self,
        messages: Sequence[Message],
        system_prompt: str | None,
        params: GenerationParams,
        cancel: threading.Event,
    ) -> Iterator[Event]:
        """Stream the next queued reply (or an echo of the last message)."""
        self.requests.append((list(messages), system_prompt, params))
        reply = (
            self.replies.popleft()
            if self.replies
            else ScriptedReply([f"echo: {messages[-1].content}"])
        )
        if reply.trimmed:
            yield ContextTrimmed(reply.trimmed, 0, self.context_size or 0)
        started = time.perf_counter()
        count = 0
        for index, piece in enumerate(reply.pieces):
            if reply.gate is not None and index >= reply.gate_from:
                while not reply.gate.wait(0.01):
                    if cancel.is_set():
                        break
            if cancel.is_set():
                yield Finished("cancelled")
                return
            if reply.delay_s:
                time.sleep(reply.delay_s)
            count += 1
            yield TextDelta(piece)
        if reply.fail_with is not None:
            yield Failed(reply.fail_with)
            return
        elapsed = time.perf_counter() - started
        yield Usage(len(messages), count, 0.0, elapsed, None)
        yield Finished(reply.finish)

    def close(self) -> None:
        """Nothing to free."""
