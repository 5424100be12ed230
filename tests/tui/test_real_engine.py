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
        assert "ready" in screen.status.state
        conv = store.get_conversation(store.list_conversations()[0].id)
        assert [m.role for m in conv.messages] == [Role.USER, Role.ASSISTANT]
        reply = conv.messages[1]
        assert reply.status is Status.COMPLETE and reply.completion_tokens == 16
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
