"""KV-cache reuse between turns: same greedy replies as a full prefill, far less prefill.

Every reply of an engine that keeps its cache (``reuse``) is compared with a fresh engine
that prefills every prompt in full (``reuse_cache=False``). Cached and full prefills are not
bit-identical in float32 (the attention and expert matmuls run over different shapes and
differ by ~1e-7), but the tiny model's top-2 logit margins are orders of magnitude wider, so
greedy decoding picks the same tokens and the texts must be exactly equal.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixchat.config import Settings
from mixchat.conversation import Message, Role, Status
from mixchat.engine.base import (
    ContextTrimmed,
    Failed,
    Finished,
    GenerationParams,
    TextDelta,
    Usage,
)
from mixchat.engine.kvcache import common_prefix_length
from mixchat.engine.transformers import TransformersEngine

Engines = tuple[TransformersEngine, TransformersEngine]  # (reusing, prefilling in full)
SYSTEM = "Answer briefly."
GREEDY = GenerationParams(temperature=0, max_new_tokens=24)


@dataclass
class Reply:
    text: str
    usage: Usage
    finished: Finished
    trimmed: ContextTrimmed | None


def reply(
    engine: TransformersEngine,
    messages: list[Message],
    params: GenerationParams = GREEDY,
    cancel_after_deltas: int | None = None,
) -> Reply:
    """Run one turn; with ``cancel_after_deltas`` cancel once that many deltas arrived."""
    cancel = threading.Event()
    parts: list[str] = []
    usage = finished = trimmed = None
    for event in engine.stream(messages, SYSTEM, params, cancel):
        if isinstance(event, TextDelta):
            parts.append(event.text)
            if cancel_after_deltas is not None and len(parts) >= cancel_after_deltas:
                cancel.set()
        elif isinstance(event, Usage):
            usage = event
        elif isinstance(event, Finished):
            finished = event
        elif isinstance(event, ContextTrimmed):
            trimmed = event
        elif isinstance(event, Failed):
            pytest.fail(event.message)
    assert usage is not None and finished is not None
    return Reply("".join(parts), usage, finished, trimmed)


def user(text: str) -> Message:
    return Message(Role.USER, text)


def assistant(text: str, status: Status = Status.COMPLETE) -> Message:
    return Message(Role.ASSISTANT, text, status=status)


@pytest.fixture(scope="module")
def engines(tiny_model: Path) -> Iterator[Engines]:
    reuse = TransformersEngine(Settings(model=str(tiny_model)))
    fresh = TransformersEngine(Settings(model=str(tiny_model)), reuse_cache=False)
    yield reuse, fresh
    reuse.close()
    fresh.close()


def same_reply(engines: Engines, messages: list[Message]) -> Reply:
    """Ask both engines; the replies must be identical. Returns the reusing engine's."""
    reuse, fresh = engines
    got, want = reply(reuse, messages), reply(fresh, messages)
    assert want.usage.cached_tokens == 0
    assert got.text == want.text
    assert got.usage.completion_tokens == want.usage.completion_tokens
    assert got.usage.prompt_tokens == want.usage.prompt_tokens
    assert got.finished == want.finished
    return got


@pytest.mark.slow
def test_multi_turn_with_regenerate_edit_and_cancel_matches_full_prefill(engines: Engines) -> None:
    reuse, _ = engines
    reuse.reset_cache()
    tok = reuse.load_tokenizer()

    def prompt_len(messages: list[Message]) -> int:
        return len(tok.build(messages, SYSTEM, GREEDY.max_new_tokens).ids)

    # Turn 1: nothing cached yet.
    history = [user("Tell me about the tides and the moon, in some detail please.")]
    first = same_reply(engines, history)
    assert first.usage.cached_tokens == 0

    # Turn 2: the whole first prompt comes from the cache.
    history += [assistant(first.text), user("Why are there two high tides a day?")]
    previous = prompt_len(history[:1])
    second = same_reply(engines, history)
    assert second.usage.cached_tokens >= previous

    # Regenerate: the same prompt again reuses all of it but the last token.
    again = same_reply(engines, history)
    assert again.text == second.text
    assert again.usage.cached_tokens == again.usage.prompt_tokens - 1

    # Edit the last user message: reuse stops where the edit begins.
    before_edit = list(history)
    history[-1] = user("Why are there two low tides a day, and how long apart are they?")
    edited = same_reply(engines, history)
    common = common_prefix_length(
        tok.build(before_edit, SYSTEM, 24).ids, tok.build(history, SYSTEM, 24).ids
    )
    assert edited.usage.cached_tokens == common
    assert previous <= common < edited.usage.prompt_tokens

    # Turn 3, cancelled after a few deltas; its partial text stays in the history.
    history += [assistant(edited.text), user("Write a long poem about the tides.")]
    long = GenerationParams(temperature=0, max_new_tokens=2000)
    cancelled = reply(reuse, history, long, cancel_after_deltas=3)
    assert cancelled.finished.reason == "cancelled"
    assert 3 <= cancelled.usage.completion_tokens < 2000
    cancelled_prompt = cancelled.usage.prompt_tokens

    # Turn 4 after the cancelled answer: exact, and the cancelled turn's prompt is reused.
    history += [assistant(cancelled.text, Status.INTERRUPTED), user("Thanks. And the sun?")]
    fourth = same_reply(engines, history)
    assert fourth.usage.cached_tokens >= cancelled_prompt

    # Turn 5: the prompt has grown, yet only the newest exchange is prefilled.
    history += [assistant(fourth.text), user("Summarise everything in one line.")]
    fifth = same_reply(engines, history)
    prefilled = fifth.usage.prompt_tokens - fifth.usage.cached_tokens
    assert fifth.usage.cached_tokens >= prompt_len(history[:-2])
    assert prefilled * 4 < fifth.usage.prompt_tokens

    # Another conversation on the same engine shares only the opening tokens.
    other = same_reply(engines, [user("Quite a different question about volcanoes.")])
    assert other.usage.cached_tokens < 10


@pytest.mark.slow
def test_trimmed_context_reuses_only_the_common_prefix(tmp_path: Path) -> None:
    from mixchat.testing.models import build_tiny_mixtral

    model_dir = build_tiny_mixtral(tmp_path / "short", max_positions=200)
    reuse = TransformersEngine(Settings(model=str(model_dir)))
    fresh = TransformersEngine(Settings(model=str(model_dir)), reuse_cache=False)
    pair = (reuse, fresh)
    try:
        history: list[Message] = []
        first_trim: Reply | None = None
        for i in range(6):
            history.append(user(f"Question {i}: what about the number {i}?"))
            got = same_reply(pair, history)
            if got.trimmed is not None and first_trim is None:
                first_trim = got
            history.append(assistant(got.text))
        # The opening turn was dropped: the prompt now differs right after the system
        # prompt, so only "<s> [INST] Answer briefly." and a few more tokens are reused.
        assert first_trim is not None
        assert 0 < first_trim.usage.cached_tokens < 20
    finally:
        reuse.close()
        fresh.close()


def test_reset_cache_prefills_in_full(engines: Engines) -> None:
    reuse, _ = engines
    history = [user("Hello there, how are you?")]
    same_reply(engines, history)
    assert reply(reuse, history).usage.cached_tokens > 0
    reuse.reset_cache()
    assert same_reply(engines, history).usage.cached_tokens == 0


def test_a_failure_mid_reply_discards_the_cache(engines: Engines) -> None:
    reuse, _ = engines
    history = [user("Count the waves on the shore.")]
    first = same_reply(engines, history)
    history += [assistant(first.text), user("And now the stars?")]

    model: Any = reuse._model
    forward = model.forward
    calls = {"n": 0}

    def failing_forward(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:  # after the prefill and two decode steps grew the cache
            raise RuntimeError("simulated device failure")
        return forward(*args, **kwargs)

    model.forward = failing_forward  # nn.Module.__call__ looks it up on the instance
    try:
        events = list(reuse.stream(history, SYSTEM, GREEDY, threading.Event()))
    finally:
        del model.forward
    assert isinstance(events[-1], Failed) and "simulated" in events[-1].message
    assert calls["n"] == 4

    after = same_reply(engines, history)
    assert after.usage.cached_tokens == 0  # nothing half-written was trusted
    assert same_reply(engines, history).usage.cached_tokens > 0  # and reuse resumes


ids = st.lists(st.integers(0, 3), max_size=50)


@given(ids, st.lists(st.integers(0, 3), max_size=3000), ids, ids)
def test_common_prefix_length_matches_a_plain_loop(
    noise: list[int], shared: list[int], a: list[int], b: list[int]
) -> None:
    for x, y in ((noise, shared), (shared + a, shared + b), (shared, shared + a)):
        n = 0
        while n < min(len(x), len(y)) and x[n] == y[n]:
            n += 1
        assert common_prefix_length(x, y) == n
