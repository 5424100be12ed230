"""The status bar: the context counted on open and on send, live speed, and a fresh state
for each conversation."""

from __future__ import annotations

import threading

from mixchat.conversation import Message, Role, Status
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from tests.tui.conftest import AppFactory
from tests.tui.helpers import ready, settle, type_and_send, until

SIZE = (140, 30)


def saved(store: ConversationStore, *texts: str, tokens: tuple[int, int] | None = None) -> str:
    conv = store.create_conversation(model="m", system_prompt="Be brief.", settings={})
    for i, text in enumerate(texts):
        store.append_message(conv.id, Message(Role.USER if i % 2 == 0 else Role.ASSISTANT, text))
    if tokens is not None:
        reply = store.start_reply(conv.id)
        store.finish_reply(reply.id, "last", Status.COMPLETE, *tokens)  # type: ignore[arg-type]
    return conv.id


async def test_context_is_counted_when_a_conversation_opens(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    conv_id = saved(store, "one two three", "four five", "six")
    app = make_app(resume_id=conv_id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await settle(pilot)
        conv = store.get_conversation(conv_id)
        expected = engine.count_tokens(conv.messages, conv.system_prompt)
        assert expected > 0 and engine.requests == []
        assert screen.status.context_used == expected
        assert f"ctx {expected:,}/32,768" in str(screen.status.render())


async def test_context_grows_when_a_message_is_sent(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    conv_id = saved(store, "one two three", "four five")
    gate = threading.Event()
    engine.queue("streaming ", "on", gate=gate, gate_from=1)
    app = make_app(resume_id=conv_id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await settle(pilot)
        before = screen.status.context_used
        await type_and_send(pilot, "a much longer question of nine words in it")
        await pilot.pause()
        try:
            question = store.get_conversation(conv_id).messages[:-1]  # without the reply
            expected = engine.count_tokens(question, "Be brief.")
            assert expected > before
            status = screen.status
            await until(pilot, lambda: status.context_used == expected, "counted on send")
            assert screen.generating
        finally:
            gate.set()
        await settle(pilot)


async def test_engines_that_cannot_count_fall_back_to_the_saved_usage(
    make_app: AppFactory, store: ConversationStore
) -> None:
    class NoCount(ScriptedEngine):
        count_tokens = None  # type: ignore[assignment]

    conv_id = saved(store, "q", tokens=(120, 30))
    app = make_app(resume_id=conv_id, engine_factory=lambda _s: NoCount())
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await settle(pilot)
        assert screen.status.context_used == 150


async def test_live_speed_while_streaming(make_app: AppFactory, engine: ScriptedEngine) -> None:
    gate = threading.Event()
    engine.queue("one ", "two ", "three ", "four", gate=gate, gate_from=3)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        try:
            await type_and_send(pilot, "count")
            await until(pilot, lambda: screen.status.tokens_per_s is not None, "a speed")
            assert screen.generating
            speed = screen.status.tokens_per_s
            assert speed is not None and speed > 0
            assert "tok/s" in str(screen.status.render())
        finally:
            gate.set()
        await settle(pilot)


async def test_a_new_or_other_conversation_starts_with_a_clean_status(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    other = saved(store, "just one question here")
    gate = threading.Event()
    engine.queue("partial ", "answer ", "never", gate=gate, gate_from=2)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "tell me")
        await until(pilot, lambda: screen.streaming_text == "partial answer ", "two pieces")
        await until(pilot, lambda: screen.status.tokens_per_s is not None, "a speed")
        await pilot.press("escape")
        await settle(pilot)
        status = screen.status
        assert status.state == "stopped" and status.tokens_per_s is not None
        assert status.context_used > 0
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert status.state == "ready" and status.tokens_per_s is None
        assert status.context_used == 0
        assert "tok/s" not in str(status.render()) and "stopped" not in str(status.render())
        await screen.open_conversation(store.list_conversations()[1].id)
        await screen.open_conversation(other)
        await settle(pilot)
        conv = store.get_conversation(other)
        assert status.state == "unanswered: Ctrl+R answers"  # its question has no answer
        assert status.tokens_per_s is None
        assert status.context_used == engine.count_tokens(conv.messages, conv.system_prompt)


async def test_context_drops_the_old_answer_when_regenerating(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    conv_id = saved(store, "short question", "a very long old answer " * 20)
    gate = threading.Event()
    engine.queue("new ", "answer", gate=gate, gate_from=1)
    app = make_app(resume_id=conv_id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await settle(pilot)
        with_old = screen.status.context_used
        await pilot.press("ctrl+r")
        try:
            question = store.get_conversation(conv_id).messages[:1]
            expected = engine.count_tokens(question, "Be brief.")
            assert expected < with_old
            status = screen.status
            await until(pilot, lambda: status.context_used == expected, "counted again")
            assert screen.generating
        finally:
            gate.set()
        await settle(pilot)


async def test_a_narrow_bar_keeps_the_state_speed_and_context(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    """At 80 columns a long model name and a long state left no room for ctx: the name
    shortens, then the dtype/attention/device go; a wide bar shows everything."""
    from mixchat.config import Settings

    engine.queue("a cut answer", finish="length")
    model = "mistralai/Mixtral-8x7B-Instruct-v0.1"
    for size, whole in (((80, 24), False), ((160, 30), True)):
        app = make_app(settings=Settings(model=model))
        async with app.run_test(size=size) as pilot:
            screen = await ready(pilot)
            if not whole:
                await type_and_send(pilot, "q")
                await settle(pilot)
                assert screen.status.state == "cut at the token limit"
            line = str(screen.status.render())
            assert "ctx " in line and "…" not in line, line
            assert (model in line) is whole, line
            assert "Mixtral-8x7B-Instruct-v0.1" in line
