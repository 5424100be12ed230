"""The real transformers engine on the tiny random-weight Mixtral."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mixchat.config import Settings
from mixchat.conversation import Message, Role
from mixchat.engine.base import (
    ContextTrimmed,
    EngineError,
    Failed,
    Finished,
    GenerationParams,
    LoadProgress,
    TextDelta,
    Usage,
)
from mixchat.engine.transformers import TransformersEngine


def user(text: str) -> Message:
    return Message(Role.USER, text)


@pytest.fixture(scope="module")
def engine(tiny_model: Path):  # type: ignore[no-untyped-def]
    eng = TransformersEngine(Settings(model=str(tiny_model)))
    events = list(eng.load())
    assert any(isinstance(e, LoadProgress) and e.stage == "weights" for e in events)
    last_weights = [e for e in events if isinstance(e, LoadProgress) and e.stage == "weights"][-1]
    assert last_weights.done == last_weights.total > 0
    yield eng
    eng.close()


def test_stream_equals_plain_generate_decoded(engine: TransformersEngine) -> None:
    import torch

    params = GenerationParams(temperature=0, max_new_tokens=40)
    messages = [user("Write a haiku about the sea 🌊 and 東京.")]
    events = list(engine.stream(messages, None, params, threading.Event()))
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    usage = next(e for e in events if isinstance(e, Usage))
    assert isinstance(events[-1], Finished) and events[-1].reason in ("stop", "length")

    tok = engine.load_tokenizer()
    prompt = tok.build(messages, None, 40)
    with torch.inference_mode():
        out = engine._model.generate(
            torch.tensor([prompt.ids]), max_new_tokens=40, do_sample=False, pad_token_id=2
        )
    generated = [i for i in out[0, len(prompt.ids) :].tolist() if i != 2]
    assert streamed == tok.decode(generated)
    assert usage.prompt_tokens == len(prompt.ids)
    assert usage.completion_tokens == out.shape[1] - len(prompt.ids)


def test_cancel_stops_within_a_token_and_engine_stays_usable(engine: TransformersEngine) -> None:
    cancel = threading.Event()
    params = GenerationParams(temperature=1.0, max_new_tokens=2000, seed=3)
    deltas_after_cancel = 0
    finished = None
    for event in engine.stream([user("go on forever")], None, params, cancel):
        if isinstance(event, TextDelta):
            if cancel.is_set():
                deltas_after_cancel += 1
            else:
                cancel.set()
        if isinstance(event, Finished):
            finished = event
    assert finished is not None and finished.reason == "cancelled"
    assert deltas_after_cancel <= 1  # at most the token already being decoded
    events = list(
        engine.stream([user("hello")], None, GenerationParams(max_new_tokens=5), threading.Event())
    )
    assert isinstance(events[-1], Finished) and events[-1].reason in ("stop", "length")


def test_seed_makes_sampling_repeatable(engine: TransformersEngine) -> None:
    def sample(seed: int) -> str:
        params = GenerationParams(temperature=1.0, top_p=0.9, max_new_tokens=15, seed=seed)
        events = engine.stream([user("pick a word")], None, params, threading.Event())
        return "".join(e.text for e in events if isinstance(e, TextDelta))

    assert sample(11) == sample(11)
    assert sample(11) != sample(12)


def test_prompt_too_long_fails_cleanly(engine: TransformersEngine) -> None:
    params = GenerationParams(max_new_tokens=32000)
    events = list(engine.stream([user("word " * 2000)], None, params, threading.Event()))
    assert isinstance(events[-1], Failed) and "context" in events[-1].message
    # and the engine still answers
    events = list(
        engine.stream([user("hi")], None, GenerationParams(max_new_tokens=3), threading.Event())
    )
    assert isinstance(events[-1], Finished)


def test_abandoning_a_stream_cancels_it(engine: TransformersEngine) -> None:
    cancel = threading.Event()
    gen = engine.stream([user("long")], None, GenerationParams(max_new_tokens=5000), cancel)
    for event in gen:
        if isinstance(event, TextDelta):
            break
    gen.close()
    assert cancel.is_set()
    events = list(
        engine.stream([user("hi")], None, GenerationParams(max_new_tokens=3), threading.Event())
    )
    assert isinstance(events[-1], Finished)


def test_old_turns_are_dropped_to_fit_a_small_context(tmp_path: Path) -> None:
    from mixchat.testing.models import build_tiny_mixtral

    model_dir = build_tiny_mixtral(tmp_path / "short", max_positions=160)
    eng = TransformersEngine(Settings(model=str(model_dir)))
    try:
        history: list[Message] = []
        for i in range(6):
            history += [user(f"question number {i} " * 4), Message(Role.ASSISTANT, "answer " * 8)]
        history.append(user("the newest question"))
        events = list(
            eng.stream(history, "Be brief.", GenerationParams(max_new_tokens=8), threading.Event())
        )
        trimmed = [e for e in events if isinstance(e, ContextTrimmed)]
        assert trimmed and trimmed[0].dropped_messages > 0
        assert trimmed[0].prompt_tokens + 8 <= 160
        assert isinstance(events[-1], Finished)
        shown = eng.load_tokenizer().build(history, "Be brief.", 8)
        assert shown.text.endswith("[INST] the newest question [/INST]")
        assert "Be brief." in shown.text
    finally:
        eng.close()


def test_missing_model_raises_engine_error(tmp_path: Path) -> None:
    eng = TransformersEngine(Settings(model=str(tmp_path / "nope")))
    try:
        with pytest.raises(EngineError, match="no such directory"):
            list(eng.load())
    finally:
        eng.close()


def test_remote_code_is_refused_unless_trusted(tmp_path: Path, tiny_model: Path) -> None:
    import json

    remote = tmp_path / "remote"
    remote.mkdir()
    for item in tiny_model.iterdir():
        (remote / item.name).write_bytes(item.read_bytes())
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (remote / "config.json").write_text(json.dumps(config))
    eng = TransformersEngine(Settings(model=str(remote)))
    try:
        with pytest.raises(EngineError, match="--trust-remote-code"):
            list(eng.load())
    finally:
        eng.close()


def test_flash_attention_falls_back_with_a_notice(tiny_model: Path) -> None:
    from mixchat.engine.base import Notice

    eng = TransformersEngine(Settings(model=str(tiny_model), attention="flash_attention_2"))
    try:
        events = list(eng.load())
        notices = [e.message for e in events if isinstance(e, Notice)]
        assert any("SDPA" in n for n in notices)
        assert eng.info().attention == "sdpa"
    finally:
        eng.close()


@pytest.mark.parametrize("temperature", [1e-300, 5e-324])
def test_tiny_temperature_is_greedy_not_nan(engine: TransformersEngine, temperature: float) -> None:
    """Sampling at a subnormal temperature divides logits into inf/nan ("probability tensor
    contains either inf, nan or element < 0"); such a temperature decodes greedily."""

    def reply(params: GenerationParams) -> str:
        events = list(engine.stream([user("hello")], None, params, threading.Event()))
        assert not [e for e in events if isinstance(e, Failed)], events
        return "".join(e.text for e in events if isinstance(e, TextDelta))

    tiny = reply(GenerationParams(temperature=temperature, max_new_tokens=12, seed=5))
    assert tiny == reply(GenerationParams(temperature=0, max_new_tokens=12))
