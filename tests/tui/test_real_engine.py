"""The app on the real transformers path, against the tiny random-weight Mixtral."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mixchat.config import Settings
from mixchat.conversation import Role, Status
from mixchat.engine.factory import make_engine
from mixchat.store import ConversationStore
from mixchat.tui.app import MixchatApp
from mixchat.tui.widgets.chat_view import AssistantBlock
from mixchat.tui.widgets.prompt_input import PromptInput


async def test_chat_with_the_tiny_mixtral(tiny_model: Path) -> None:
    store = ConversationStore.open()
    settings = Settings(model=str(tiny_model), max_new_tokens=16, temperature=0)
    app = MixchatApp(settings, make_engine, store)
    async with app.run_test(size=(100, 30)) as pilot:
        # The app takes input while the model is still loading.
        prompt = app.query_one(PromptInput)
        prompt.focus()
        prompt.text = "Hello Mixtral"
        await pilot.press("enter")
        await app.wait_for_model()
        for _ in range(3):  # the reply worker the loaded model starts
            await pilot.pause()
            await app.workers.wait_for_complete()
        screen = app.chat_screen
        assert screen.engine is not None
        info = screen.engine.info()
        assert info.device == "cpu" and info.attention == "sdpa"
        # 16 tokens of random weights never end on their own: the status says the cut.
        assert screen.status.state == "cut at the token limit"
        conv = store.get_conversation(store.list_conversations()[0].id)
        assert [m.role for m in conv.messages] == [Role.USER, Role.ASSISTANT]
        reply = conv.messages[1]
        assert reply.status is Status.COMPLETE and reply.completion_tokens == 16
        assert reply.finish_reason == "length"
        assert screen.query_one(AssistantBlock).source == reply.content
    store.close()


def test_first_paint_imports_no_torch() -> None:
    code = """
import asyncio, sys
from mixchat.config import Settings
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from mixchat.tui.app import MixchatApp

async def main():
    app = MixchatApp(Settings(model="m"), lambda s: ScriptedEngine(), ConversationStore.open())
    async with app.run_test() as pilot:
        await pilot.pause()
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
        print("HEAVY", heavy)

asyncio.run(main())
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


async def test_real_model_status_edit_and_regenerate(real_model: Path) -> None:
    """On a real instruct model (chat template): the context is counted on open and on send,
    the speed shows, an abandoned edit keeps the turn, regenerate replaces only the answer."""
    from mixchat.conversation import Message

    store = ConversationStore.open()
    conv = store.create_conversation(
        model="smol",
        system_prompt="Answer briefly.",
        settings={},
        first_message=Message(Role.USER, "Name a colour."),
    )
    reply = store.start_reply(conv.id)
    store.finish_reply(reply.id, "Blue.", Status.COMPLETE)  # type: ignore[arg-type]
    settings = Settings(model=str(real_model), max_new_tokens=12, temperature=0)
    app = MixchatApp(settings, make_engine, store, resume_id=conv.id)
    async with app.run_test(size=(100, 30)) as pilot:
        await app.wait_for_model()
        screen = app.chat_screen
        engine = screen.engine
        assert engine is not None
        for _ in range(3):
            await app.workers.wait_for_complete()
            await pilot.pause()
        saved = store.get_conversation(conv.id)
        opened = engine.count_tokens(saved.messages, saved.system_prompt)  # type: ignore[attr-defined]
        assert opened and screen.status.context_used == opened
        prompt = app.query_one(PromptInput)
        prompt.focus()
        prompt.text = "And a fruit?"
        await pilot.press("enter")
        for _ in range(3):
            await app.workers.wait_for_complete()
            await pilot.pause()
        saved = store.get_conversation(conv.id)
        assert [m.role for m in saved.messages] == [Role.USER, Role.ASSISTANT] * 2
        answer = saved.messages[-1]
        assert answer.status is Status.COMPLETE and answer.content
        assert screen.status.context_used == (answer.prompt_tokens or 0) + (
            answer.completion_tokens or 0
        )
        assert screen.status.tokens_per_s and "tok/s" in str(screen.status.render())
        # Ctrl+L then Esc: the turn is still there
        await pilot.press("ctrl+l")
        assert prompt.text == "And a fruit?"
        await pilot.press("escape")
        assert [m.content for m in store.get_conversation(conv.id).messages] == [
            m.content for m in saved.messages
        ]
        # Ctrl+R: only the last answer is generated again
        await pilot.press("ctrl+r")
        for _ in range(3):
            await app.workers.wait_for_complete()
            await pilot.pause()
        again = store.get_conversation(conv.id).messages
        assert [m.content for m in again[:3]] == [m.content for m in saved.messages[:3]]
        assert len(again) == 4 and again[-1].status is Status.COMPLETE
        assert again[-1].content == answer.content  # greedy: the same answer
    store.close()
