"""Continuing a reply on the real transformers path: a last assistant message is continued.

Greedy decoding makes it checkable: a greedy reply cut at a token boundary and continued
greedily gives back the rest of the same reply, as long as the cut text encodes back to
the same tokens (the model must see what it saw when it wrote them).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixchat.config import Settings
from mixchat.conversation import Message, Role, Status
from mixchat.engine.base import Finished, GenerationParams, TextDelta, Usage
from mixchat.engine.generation import CONTEXT_IDS
from mixchat.engine.tokenizer import ChatTokenizer
from mixchat.engine.transformers import TransformersEngine

QUESTION = "Write a haiku about the sea and the moon."


def user(text: str) -> Message:
    return Message(Role.USER, text)


def partial(text: str) -> Message:
    return Message(Role.ASSISTANT, text, Status.INTERRUPTED)


def run(engine: TransformersEngine, messages: list[Message], tokens: int) -> tuple[str, Usage]:
    params = GenerationParams(temperature=0, max_new_tokens=tokens)
    events = list(engine.stream(messages, None, params, threading.Event()))
    assert isinstance(events[-1], Finished), events[-1]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    return text, next(e for e in events if isinstance(e, Usage))


def greedy_ids(engine: TransformersEngine, prompt_ids: list[int], tokens: int) -> list[int]:
    import torch

    tok = engine.load_tokenizer()
    with torch.inference_mode():
        out = engine._model.generate(
            torch.tensor([prompt_ids]),
            max_new_tokens=tokens,
            do_sample=False,
            pad_token_id=next(iter(tok.eos_ids)),
        )
    return [i for i in out[0, len(prompt_ids) :].tolist() if i not in tok.eos_ids]


def conversation(seed: str, reply_text: str) -> list[Message]:
    """The question, and the reply so far (the seed and what the model added) if any."""
    text = seed + reply_text
    return [user(QUESTION), partial(text)] if text else [user(QUESTION)]


def clean_cuts(tok: ChatTokenizer, seed: str, prompt: list[int], reply: list[int]) -> list[int]:
    """Token counts k where the seed and the reply's first k tokens, as text, encode back to
    the same tokens."""
    cuts = []
    for k in range(1, len(reply) - 1):
        head = head_of(tok, seed, prompt, reply, k)
        if not head.strip() or "\ufffd" in head:
            continue
        if tok.build(conversation(seed, head), None, 1).ids == prompt + reply[:k]:
            cuts.append(k)
    return cuts


def engine_for(model: Path) -> Iterator[TransformersEngine]:
    engine = TransformersEngine(Settings(model=str(model)))
    list(engine.load())
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def tiny(tiny_model: Path) -> Iterator[TransformersEngine]:
    yield from engine_for(tiny_model)


# Replies that start from scratch, or from a first few words (the model then continues
# them): a random model's text often does not encode back to the tokens it was written
# with (the model would see something else), so look for one that does, somewhere.
SEEDS = ["", "Once upon a time", "The sea", "Hello there", "Well,", "Yes"]


def check_continuations(engine: TransformersEngine, tokens: int) -> None:
    tok = engine.load_tokenizer()
    for seed in SEEDS:
        prompt = tok.build(conversation(seed, ""), None, tokens).ids
        reply = greedy_ids(engine, prompt, tokens)
        cuts = clean_cuts(tok, seed, prompt, reply)
        if len(cuts) >= 2:
            break
    else:
        raise AssertionError("no reply that can be cut cleanly")
    full, _ = run(engine, conversation(seed, ""), tokens)
    assert full == head_of(tok, seed, prompt, reply, len(reply))
    # Prefer cuts before a piece that starts with a space: the continuation must keep that
    # space though it is the first thing it decodes.
    spaced = [k for k in cuts if full[len(head_of(tok, seed, prompt, reply, k)) :][:1] == " "]
    assert spaced, "no cut before a space"
    for k in sorted({*spaced[:2], cuts[0], cuts[-1]}):
        head = head_of(tok, seed, prompt, reply, k)
        rest, usage = run(engine, conversation(seed, head), len(reply) - k)
        assert head + rest == full, (seed, k, head, rest)
        assert usage.prompt_tokens == len(prompt) + k
        # The cache holds the full reply's tokens (from the run before, or the previous
        # continuation): only the prompt's last token is computed again.
        assert usage.cached_tokens == len(prompt) + k - 1


def head_of(tok: ChatTokenizer, seed: str, prompt: list[int], reply: list[int], k: int) -> str:
    """The text the reply's first k tokens add after the seed."""
    if not seed:
        return tok.decode(reply[:k])
    before = tok.decode(prompt[-CONTEXT_IDS:])
    return tok.decode(prompt[-CONTEXT_IDS:] + reply[:k])[len(before) :]


def test_greedy_continuation_gives_the_rest_of_the_greedy_reply(tiny: TransformersEngine) -> None:
    assert tiny.load_tokenizer().format == "mistral-v1"
    check_continuations(tiny, 24)


def test_continuation_on_a_chat_template_model(real_model: Path) -> None:
    for engine in engine_for(real_model):
        assert engine.load_tokenizer().format == "chat-template"
        check_continuations(engine, 12)


def test_remote_engine_refuses_to_continue_in_one_line() -> None:
    from mixchat.engine.base import Failed
    from mixchat.engine.remote import RemoteEngine

    # Port 9 (discard) on loopback: nothing is contacted, the refusal comes first.
    engine = RemoteEngine(Settings(model="m"), "http://127.0.0.1:9")
    events = list(
        engine.stream(
            [user("q"), partial("half an answ")], None, GenerationParams(), threading.Event()
        )
    )
    assert events == [Failed("continuing a reply needs a local model", kind="prompt")]
