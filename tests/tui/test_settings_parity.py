"""`mixchat ask` and the app decide settings the same way: defaults < config < environment <
the conversation's saved settings < flags given now; both save the same keys."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from mixchat import cli
from mixchat.config import CONVERSATION_KEYS, OPTIONS, Scope, Settings, load_sources
from mixchat.engine import factory
from mixchat.engine.base import GenerationParams
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from tests.tui.conftest import AppFactory
from tests.tui.helpers import ready, type_and_send, wait_reply
from tests.tui.test_app import SIZE

SAVED = {"temperature": 0.1, "top_p": 0.5, "max_new_tokens": 64, "top_k": 7, "seed": 5}


def _ask(monkeypatch: pytest.MonkeyPatch, engine: ScriptedEngine, *args: str) -> Any:
    monkeypatch.setattr(factory, "make_engine", lambda settings: engine)
    # A pipe, not a terminal: CliRunner's stdin is empty.
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    return CliRunner().invoke(cli.app, ["ask", *args])


def _saved_conversation(store: ConversationStore) -> str:
    conv = store.create_conversation(model="m", system_prompt="Saved system.", settings=SAVED)
    return conv.id


def test_the_table_drives_generation_params_and_saved_keys() -> None:
    generation = {f for f in GenerationParams.__dataclass_fields__}
    assert generation == set(CONVERSATION_KEYS)
    assert {k for k, o in OPTIONS.items() if o.scope is Scope.CONVERSATION} == {
        *CONVERSATION_KEYS,
        "system_prompt",
    }
    defaults = GenerationParams()
    assert all(getattr(defaults, k) == getattr(Settings(), k) for k in CONVERSATION_KEYS)


def test_ask_continue_uses_the_conversations_saved_settings(
    monkeypatch: pytest.MonkeyPatch, store: ConversationStore
) -> None:
    conv_id = _saved_conversation(store)
    engine = ScriptedEngine()
    result = _ask(monkeypatch, engine, "--conversation", conv_id, "more")
    assert result.exit_code == 0, result.output
    _, system, params = engine.requests[-1]
    assert system == "Saved system."
    assert (params.temperature, params.top_p, params.max_new_tokens) == (0.1, 0.5, 64)
    assert (params.top_k, params.seed) == (7, 5)


def test_flags_given_now_beat_saved_settings_and_saved_beat_env(
    monkeypatch: pytest.MonkeyPatch, store: ConversationStore
) -> None:
    _saved_conversation(store)
    monkeypatch.setenv("MIXCHAT_TOP_P", "0.9")  # below the saved 0.5
    monkeypatch.setenv("MIXCHAT_REPETITION_PENALTY", "1.3")  # nothing saved: env applies
    engine = ScriptedEngine()
    result = _ask(monkeypatch, engine, "-c", "-t", "0.4", "-s", "New system.", "more")
    assert result.exit_code == 0, result.output
    _, system, params = engine.requests[-1]
    assert system == "New system."
    assert (params.temperature, params.top_p) == (0.4, 0.5)
    assert params.repetition_penalty == 1.3


def test_a_flag_error_names_the_flag_that_was_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _ask(monkeypatch, ScriptedEngine(), "--max-tokens", "0", "hi")
    assert result.exit_code == 2
    assert "--max-tokens must be >= 1" in result.output
    assert "--max-new-tokens" not in result.output
    result = _ask(monkeypatch, ScriptedEngine(), "--4bit", "--8bit", "hi")
    assert result.exit_code == 2 and "--4bit" in result.output and "--8bit" in result.output


async def test_ask_and_the_app_save_the_same_settings(
    monkeypatch: pytest.MonkeyPatch,
    make_app: AppFactory,
    engine: ScriptedEngine,
    store: ConversationStore,
) -> None:
    monkeypatch.setenv("MIXCHAT_TEMPERATURE", "0.2")
    flags = {"top_k": "3", "system_prompt": "Be brief."}
    sources = load_sources(flags)
    result = _ask(monkeypatch, ScriptedEngine(), "--top-k", "3", "-s", "Be brief.", "from ask")
    assert result.exit_code == 0, result.output
    app = make_app(settings=sources.base, flags=sources.flags)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await type_and_send(pilot, "from the app")
        await wait_reply(pilot)
    by_title = {row.title: store.get_conversation(row.id) for row in store.list_conversations()}
    from_ask, from_app = by_title["from ask"], by_title["from the app"]
    assert from_ask.settings == from_app.settings
    assert set(from_app.settings) == set(CONVERSATION_KEYS)
    assert from_app.settings["temperature"] == 0.2 and from_app.settings["top_k"] == 3
    assert from_ask.system_prompt == from_app.system_prompt == "Be brief."


async def test_the_app_honours_saved_settings_then_flags(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    conv_id = _saved_conversation(store)
    sources = load_sources({"max_new_tokens": "9"})
    app = make_app(resume_id=conv_id, settings=sources.base, flags=sources.flags)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await type_and_send(pilot, "more")
        await wait_reply(pilot)
    _, system, params = engine.requests[-1]
    assert system == "Saved system."
    assert (params.temperature, params.top_p, params.max_new_tokens) == (0.1, 0.5, 9)
