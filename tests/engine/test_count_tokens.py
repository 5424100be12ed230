"""Engines count a conversation's context without generating: the local engine on the tiny
Mixtral (Mistral v1 format) and the real instruct model (chat template), the remote one
with Mixtral's vocabulary."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mixchat.config import Settings
from mixchat.conversation import Message, Role, Status
from mixchat.engine.base import GenerationParams, TextDelta, Usage, count_context_tokens
from mixchat.engine.remote import RemoteEngine
from mixchat.engine.transformers import TransformersEngine


def _reply(engine: TransformersEngine, messages: list[Message], system: str | None) -> Usage:
    """Generate a short reply; its usage counts the prompt the engine really built."""
    params = GenerationParams(temperature=0, max_new_tokens=12)
    events = list(engine.stream(messages, system, params, threading.Event()))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    messages.append(Message(Role.ASSISTANT, text))
    return next(e for e in events if isinstance(e, Usage))


@pytest.mark.parametrize("model", ["tiny_model", "real_model"])
def test_count_matches_the_prompt_a_reply_uses(model: str, request: pytest.FixtureRequest) -> None:
    directory: Path = request.getfixturevalue(model)
    engine = TransformersEngine(Settings(model=str(directory)))
    system = "Answer in one short sentence."
    messages = [Message(Role.USER, "What is the capital of France?")]
    try:
        assert engine.count_tokens(messages, system) is None  # nothing loaded yet
        list(engine.load())
        counted = count_context_tokens(engine, messages, system)
        usage = _reply(engine, messages, system)
        assert counted == usage.prompt_tokens > 0
        # a conversation ending with a reply counts up to the next question's prompt
        after = engine.count_tokens(messages, system)
        assert after is not None and after > usage.prompt_tokens
        messages.append(Message(Role.USER, "And of Italy?"))
        assert (
            engine.count_tokens(messages, system) == _reply(engine, messages, system).prompt_tokens
        )
        # error replies do not reach a prompt, so they do not count
        failed = [*messages, Message(Role.ASSISTANT, "boom", Status.ERROR)]
        assert engine.count_tokens(failed, system) == engine.count_tokens(messages, system)
    finally:
        engine.close()


def test_counting_beside_a_reply(tiny_model: Path) -> None:
    """Counted on another thread while the model thread generates: same numbers."""
    engine = TransformersEngine(Settings(model=str(tiny_model)))
    try:
        list(engine.load())
        messages = [Message(Role.USER, "Count the stars " * 40)]
        alone = engine.count_tokens(messages, None)
        counts: list[int | None] = []
        started = threading.Event()

        def generate() -> None:
            params = GenerationParams(temperature=0, max_new_tokens=64)
            for event in engine.stream(messages, None, params, threading.Event()):
                if isinstance(event, TextDelta):
                    started.set()

        worker = threading.Thread(target=generate)
        worker.start()
        started.wait(60)
        for _ in range(20):
            counts.append(engine.count_tokens(messages, None))
        worker.join(120)
        assert counts == [alone] * 20
    finally:
        engine.close()


def test_remote_counts_with_mixtral_vocabulary() -> None:
    engine = RemoteEngine(Settings(model="mixtral"), "http://127.0.0.1:9")  # never contacted
    messages = [Message(Role.USER, "Hello there")]
    short = engine.count_tokens(messages, None)
    assert short is not None and short == engine.fit(messages, None, 0).prompt_tokens
    longer = engine.count_tokens([*messages, Message(Role.ASSISTANT, "General Kenobi")], None)
    assert longer is not None and longer > short
    assert engine.count_tokens([Message(Role.ASSISTANT, "only a reply")], None) is None
