"""Behaviour of the interactive app, driven with Pilot against a scripted engine."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Markdown, OptionList

from mixchat.config import Settings, read_toml
from mixchat.conversation import Message, Role, Status
from mixchat.engine.base import EngineError
from mixchat.engine.scripted import ScriptedEngine
from mixchat.paths import config_file
from mixchat.store import ConversationStore
from mixchat.tui.app import MixchatApp
from mixchat.tui.screens.chat import ChatScreen
from mixchat.tui.widgets import sidebar as sidebar_module
from mixchat.tui.widgets.chat_view import AssistantBlock, UserBlock
from mixchat.tui.widgets.prompt_input import PromptInput
from tests.tui.conftest import AppFactory
from tests.tui.helpers import only_conversation, ready, type_and_send, until, wait_reply

SIZE = (110, 36)


async def test_send_streams_and_saves(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    engine.queue("Hello", ", **world**", "!\n\n```python\nprint(1)\n```\n")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "Hi there")
        await wait_reply(pilot)
        conv = only_conversation(store)
        assert [(m.role, m.content, m.status) for m in conv.messages] == [
            (Role.USER, "Hi there", Status.COMPLETE),
            (Role.ASSISTANT, "Hello, **world**!\n\n```python\nprint(1)\n```\n", Status.COMPLETE),
        ]
        assert conv.title == "Hi there"
        blocks = list(screen.query(AssistantBlock))
        assert len(blocks) == 1 and blocks[0].source == conv.messages[1].content
        assert "print(1)" in blocks[0].query_one(Markdown).source
        assert app.query_one(PromptInput).text == ""
        assert screen.status.state == "ready"
        assert engine.requests[0][0][-1].content == "Hi there"


async def test_ctrl_j_and_shift_enter_insert_newlines(
    make_app: AppFactory, store: ConversationStore
) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        prompt = app.query_one(PromptInput)
        prompt.focus()
        await pilot.press("a", "ctrl+j", "b", "shift+enter", "c")
        assert prompt.text == "a\nb\nc"
        assert store.list_conversations() == []
        await pilot.press("enter")
        await wait_reply(pilot)
        assert only_conversation(store).messages[0].content == "a\nb\nc"


async def test_escape_stops_and_keeps_partial(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    gate = threading.Event()  # never set: the second piece waits until cancelled
    engine.queue("partial ", "never shown", gate=gate, gate_from=1)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "Tell me")
        await until(pilot, lambda: screen.streaming_text == "partial ", "the first piece")
        # The input stays usable while the answer streams.
        await pilot.press("x", "y")
        assert app.query_one(PromptInput).text == "xy"
        assert screen.generating
        await pilot.press("escape")
        await wait_reply(pilot)
        conv = only_conversation(store)
        reply = conv.messages[-1]
        assert reply.status is Status.INTERRUPTED
        assert reply.content == "partial "
        assert screen.status.state == "stopped"
        block = screen.query(AssistantBlock).last()
        assert "stopped" in str(block.query_one(".status").render())


async def test_regenerate_shows_a_new_answer_and_keeps_the_old_one(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    engine.queue("first answer")
    engine.queue("second answer")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "Question")
        await wait_reply(pilot)
        await pilot.press("ctrl+r")
        await wait_reply(pilot)
        conv = only_conversation(store)
        assert [m.content for m in conv.messages] == ["Question", "second answer"]
        assert [b.source for b in screen.query(AssistantBlock)] == ["second answer"]
        assert len(engine.requests) == 2
        assert [m.content for m in engine.requests[1][0]] == ["Question"]
        assert [m.content for m in store.siblings(conv.messages[-1].id)] == [  # type: ignore[arg-type]
            "first answer",
            "second answer",
        ]


async def test_edit_last_message_and_resend(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    engine.queue("answer one")
    engine.queue("answer two")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "Waht is 2+2")
        await wait_reply(pilot)
        await pilot.press("ctrl+l")
        await pilot.pause()
        prompt = app.query_one(PromptInput)
        assert prompt.text == "Waht is 2+2"
        # nothing is dropped until the edited message is sent
        assert [m.content for m in only_conversation(store).messages] == [
            "Waht is 2+2",
            "answer one",
        ]
        prompt.text = "What is 2+2?"
        await pilot.press("enter")
        await wait_reply(pilot)
        conv = only_conversation(store)
        assert [m.content for m in conv.messages] == ["What is 2+2?", "answer two"]
        assert len(screen.query(UserBlock)) == 1
        (old, new) = store.siblings(conv.messages[0].id)  # type: ignore[arg-type]
        assert (old.content, new.content) == ("Waht is 2+2", "What is 2+2?")
        assert [m.content for m in store.switch_to(old.id).messages] == [  # type: ignore[arg-type]
            "Waht is 2+2",
            "answer one",
        ]


async def test_new_and_switch_conversations(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "first conversation")
        await wait_reply(pilot)
        first_id = screen.conversation.id  # type: ignore[union-attr]
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert screen.conversation is None and not screen.query(UserBlock)
        await type_and_send(pilot, "second conversation")
        await wait_reply(pilot)
        assert len(store.list_conversations()) == 2
        options = screen.query_one(OptionList)
        ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
        assert ids[1] == first_id  # newest first
        options.focus()
        options.highlighted = 1
        await pilot.press("enter")
        await pilot.pause()
        assert screen.conversation is not None and screen.conversation.id == first_id
        assert [b.source for b in screen.query(UserBlock)] == ["first conversation"]
        await type_and_send(pilot, "follow-up")
        await wait_reply(pilot)
        assert [m.content for m in engine.requests[-1][0]] == [
            "first conversation",
            "echo: first conversation",
            "follow-up",
        ]


async def searched(pilot) -> None:  # type: ignore[no-untyped-def]
    """Let the sidebar's search workers finish and their results land."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def test_rename_delete_and_search(make_app: AppFactory, store: ConversationStore) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "about zebras")
        await wait_reply(pilot)
        await pilot.press("ctrl+n")
        await type_and_send(pilot, "about lions")
        await wait_reply(pilot)
        # search as you type filters the list (searches run on a worker thread)
        await pilot.press("ctrl+f")
        await pilot.press(*"zebra")
        await searched(pilot)
        options = screen.query_one(OptionList)
        assert options.option_count == 1
        zebra_id = options.get_option_at_index(0).id
        assert zebra_id is not None
        # message text is searched too, the unfinished last word as a prefix
        search_box = screen.query_one("#search", Input)
        search_box.value = ""
        await pilot.press(*"echo: zeb")
        await searched(pilot)
        assert options.option_count == 1 and options.get_option_at_index(0).id == zebra_id
        search_box.value = ""
        await pilot.press(*"ech")
        await searched(pilot)
        assert options.option_count == 2
        search_box.value = "zebra"
        await searched(pilot)
        # rename from the list
        options.focus()
        options.highlighted = 0
        await pilot.press("r")
        await pilot.pause()
        rename_input = app.screen.query_one("#title")
        rename_input.value = "Zebra facts"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await pilot.pause()
        assert store.get_conversation(zebra_id).title == "Zebra facts"
        # delete asks first; Cancel keeps it, y deletes it
        options.focus()
        await pilot.press("delete")
        await pilot.pause()
        await pilot.press("n")
        await pilot.pause()
        assert len(store.list_conversations()) == 2
        options.focus()
        await pilot.press("delete")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert [r.title for r in store.list_conversations()] == ["about lions"]


async def test_search_runs_off_the_ui_thread(
    make_app: AppFactory, store: ConversationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await type_and_send(pilot, "about zebras")
        await wait_reply(pilot)
        zebra_id = only_conversation(store).id
        release = threading.Event()
        on_ui_thread: list[bool] = []
        real_search = store.search

        def slow_search(query: str, limit: int = 50, *, typing: bool = False) -> list:  # type: ignore[type-arg]
            on_ui_thread.append(threading.current_thread() is threading.main_thread())
            release.wait(10)  # a search over a very long history
            return real_search(query, limit, typing=typing)

        monkeypatch.setattr(store, "search", slow_search)
        await pilot.press("ctrl+f")
        await pilot.press(*"zebra")
        # every key landed while the first searches were still stuck
        assert app.screen.query_one("#search", Input).value == "zebra"
        release.set()
        await searched(pilot)
        assert on_ui_thread and not any(on_ui_thread)
        options = app.screen.query_one(OptionList)
        assert options.option_count == 1
        assert options.get_option_at_index(0).id == zebra_id


async def test_search_reaches_conversations_older_than_the_list(
    make_app: AppFactory, store: ConversationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sidebar_module, "LIST_LIMIT", 2)  # the list shows the newest 2

    def conversation(title: str, text: str) -> str:
        first = Message(Role.USER, text)
        return store.create_conversation(
            model="m", system_prompt=None, settings={}, title=title, first_message=first
        ).id

    by_text = conversation("Animals", "tell me about okapis")
    by_title = conversation("Okapi facts", "more please")
    for i in range(3):
        conversation(f"newer {i}", "something else")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        options = screen.query_one(OptionList)
        assert options.option_count == 2
        await pilot.press("ctrl+f")
        await pilot.press(*"okapi")
        await searched(pilot)
        found = [options.get_option_at_index(i).id for i in range(options.option_count)]
        assert found == [by_title, by_text]  # title matches first, then message matches


async def test_theme_switch_persists(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.theme == "mixchat-dark"
        assert {"mixchat-dark", "mixchat-light", "mixchat-high-contrast"} <= set(
            app.available_themes
        )
        app.theme = "mixchat-light"
        await pilot.pause()
        await pilot.pause()
        assert read_toml(config_file())["theme"] == "mixchat-light"
        assert app.current_theme.dark is False


async def test_broken_user_theme_is_skipped_with_one_notice(make_app: AppFactory) -> None:
    from mixchat.paths import user_themes_dir

    user_themes_dir().mkdir(parents=True)
    (user_themes_dir() / "broken.tcss").write_text("$primary: #ff0000;\nUserBlock { color: ; {{")
    (user_themes_dir() / "mine.tcss").write_text("$primary: #00ff00;\n$dark: false;\n")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert "mine" in app.available_themes
        assert "broken" not in app.available_themes
        notes = [n.message for n in app._notifications]
        assert sum("broken.tcss" in n for n in notes) == 1


async def test_resume_shows_saved_messages(make_app: AppFactory, store: ConversationStore) -> None:
    conv = store.create_conversation(model="m", system_prompt=None, settings={})
    store.append_message(conv.id, Message(Role.USER, "earlier question"))
    reply = store.start_reply(conv.id)
    store.finish_reply(reply.id, "partial answ", Status.INTERRUPTED)  # type: ignore[arg-type]
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        assert screen.conversation is not None and screen.conversation.id == conv.id
        assert [b.source for b in screen.query(UserBlock)] == ["earlier question"]
        block = screen.query_one(AssistantBlock)
        assert block.source == "partial answ"
        assert "stopped" in str(block.query_one(".status").render())


async def test_generation_error_is_shown_and_conversation_kept(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    engine.queue("half an ans", fail_with="out of GPU memory: try --4bit")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "question")
        await wait_reply(pilot)
        assert screen.status.state == "error"
        assert any("out of GPU memory" in n.message for n in app._notifications)
        conv = only_conversation(store)
        assert conv.messages[-1].status is Status.ERROR
        assert conv.messages[-1].content == "half an ans"
        assert app.is_running


async def test_model_load_failure_is_shown_and_messages_still_saved(
    make_app: AppFactory, store: ConversationStore
) -> None:
    class Broken(ScriptedEngine):
        def load(self):  # type: ignore[no-untyped-def]
            raise EngineError("model 'x' is not in the local Hugging Face cache")
            yield

    app = make_app(engine_factory=lambda _s: Broken())
    async with app.run_test(size=SIZE) as pilot:
        await app.wait_for_model()
        await pilot.pause()
        screen = app.chat_screen
        assert screen.status.state == "no model"
        error = str(app.screen.query_one("#setup-error").render())
        assert "local Hugging Face cache" in error
        await pilot.press("escape")  # the setup screen gives way to the conversations
        assert app.screen is screen
        await type_and_send(pilot, "still saved")
        await pilot.pause()
        assert only_conversation(store).messages[0].content == "still saved"


async def test_message_sent_while_loading_waits_for_model(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    release = threading.Event()

    class Slow(ScriptedEngine):
        def load(self):  # type: ignore[no-untyped-def]
            release.wait(600)  # set by the test (always: see below)
            yield from super().load()

    slow = Slow()
    slow.queue("answered after loading")
    app = make_app(engine_factory=lambda _s: slow)
    async with app.run_test(size=SIZE) as pilot:
        try:
            await pilot.pause()
            screen = app.chat_screen
            await type_and_send(pilot, "early bird")
            await pilot.pause()
            assert screen.waiting_for_model
            assert only_conversation(store).messages[0].content == "early bird"
        finally:
            release.set()
        await app.wait_for_model()
        await wait_reply(pilot)
        assert [m.content for m in only_conversation(store).messages] == [
            "early bird",
            "answered after loading",
        ]


async def test_markup_and_escapes_are_literal(make_app: AppFactory, engine: ScriptedEngine) -> None:
    hostile = "[bold]b[/bold] [/INST] [link=file:///etc/passwd]x[/link] \x1b]52;c;aGk=\x07"
    engine.queue(hostile)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, hostile)
        await wait_reply(pilot)
        user_text = str(screen.query_one(UserBlock).render())
        assert "[bold]b[/bold] [/INST] [link=file:///etc/passwd]x[/link]" in user_text
        assert "\x1b" not in user_text and "\\x1b]52" in user_text
        md = screen.query_one(AssistantBlock).query_one(Markdown)
        assert "\x1b" not in md.source and "[bold]b[/bold]" in md.source


async def test_settings_modal_saves_per_conversation(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    from textual.widgets import Input, TextArea

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "hi")
        await wait_reply(pilot)
        await pilot.press("ctrl+s")
        await pilot.pause()
        modal = app.screen
        modal.query_one("#system", TextArea).text = "You are terse."
        modal.query_one("#temperature", Input).value = "0.1"
        modal.query_one("#max_new_tokens", Input).value = "77"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen
        conv = only_conversation(store)
        assert conv.system_prompt == "You are terse."
        assert conv.settings["temperature"] == 0.1 and conv.settings["max_new_tokens"] == 77
        await type_and_send(pilot, "again")
        await wait_reply(pilot)
        _, system, params = engine.requests[-1]
        assert system == "You are terse." and params.max_new_tokens == 77


async def _copied(pilot: Pilot[None], app: MixchatApp, count: int) -> list[str]:
    """The copy notifications, once ``count`` have arrived (copies run on a thread)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        notes = [n.message for n in app._notifications if "opied" in n.message]
        if len(notes) >= count:
            return notes
        await pilot.pause(0.02)
    raise AssertionError([n.message for n in app._notifications])


async def test_copy_answer_and_code_block_through_the_terminal(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    engine.queue("Run this:\n\n~~~sh\necho hi\n```\n~~~\n")  # the parser of ask --extract
    app = make_app(settings=Settings(model="m", clipboard="osc52"))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        await type_and_send(pilot, "how?")
        await wait_reply(pilot)
        await pilot.press("f4")
        assert (await _copied(pilot, app, 1))[-1].startswith("Copied the last code block (OSC")
        assert app.clipboard == "echo hi\n```\n"
        await pilot.press("f3")
        await _copied(pilot, app, 2)
        assert app.clipboard.startswith("Run this:")


async def test_copy_with_a_clipboard_tool(
    make_app: AppFactory,
    engine: ScriptedEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``clipboard = "system"``: a tool found on PATH gets the text on stdin; the app says
    which tool copied, and the terminal's clipboard is left alone."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    got = tmp_path / "copied"
    tool = bin_dir / "xclip"
    tool.write_text(f"#!/bin/sh\ncat > {got}\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    engine.queue("The answer [bold]x[/bold]")
    app = make_app(settings=Settings(model="m", clipboard="system"))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        await type_and_send(pilot, "q")
        await wait_reply(pilot)
        await pilot.press("f3")
        assert (await _copied(pilot, app, 1))[-1] == "Copied the last answer with xclip."
        assert got.read_text() == "The answer [bold]x[/bold]"
        assert app.clipboard == ""


async def test_copy_with_no_way_to_copy_says_nothing_was_copied(
    make_app: AppFactory, engine: ScriptedEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    engine.queue("an answer")
    app = make_app(settings=Settings(model="m", clipboard="system"))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        await type_and_send(pilot, "q")
        await wait_reply(pilot)
        await pilot.press("f3")
        (note,) = await _copied(pilot, app, 1)
        assert note.startswith("Nothing was copied") and app.clipboard == ""


async def test_help_screen_lists_keys(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f1")
        await pilot.pause()
        text = " ".join(str(w.render()) for w in app.screen.query(".key"))
        for key in ("Esc", "Ctrl+N", "Ctrl+R", "Ctrl+L", "F3", "F4", "Ctrl+S", "Ctrl+B"):
            assert key in text
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ChatScreen)


async def test_quit_while_streaming_saves_partial_as_stopped(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    engine.queue("so far ", "never", gate=threading.Event(), gate_from=1)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "long one")
        await until(pilot, lambda: screen.streaming_text == "so far ", "the first piece")
        assert screen.generating
        await pilot.press("ctrl+q")
        await app.workers.wait_for_complete()
        await pilot.pause()
    reply = only_conversation(store).messages[-1]
    assert reply.status is Status.INTERRUPTED and reply.content == "so far "


async def test_long_conversation_renders_newest_first_and_more_on_request(
    make_app: AppFactory, store: ConversationStore
) -> None:
    from textual.widgets import Button

    from mixchat.tui.widgets.chat_view import INITIAL_MESSAGES

    conv = store.create_conversation(model="m", system_prompt=None, settings={})
    for i in range(50):
        store.append_message(conv.id, Message(Role.USER, f"question {i}"))
        store.append_message(conv.id, Message(Role.ASSISTANT, f"answer {i}"))
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        assert len(screen.query(".message")) == INITIAL_MESSAGES
        assert screen.query(UserBlock).last().source == "question 49"
        button = screen.query_one("#earlier", Button)
        assert "60 earlier" in str(button.label)
        await screen.chat.show_earlier()
        await pilot.pause()
        assert len(screen.query(".message")) == 2 * INITIAL_MESSAGES
        await screen.chat.show_earlier()
        await pilot.pause()
        assert len(screen.query(".message")) == 100
        assert not screen.query("#earlier")
        assert [b.source for b in screen.query(UserBlock)][:2] == ["question 0", "question 1"]


@pytest.mark.timeout(60)
async def test_quit_while_the_model_loads_does_not_wait_for_it(
    make_app: AppFactory, store: ConversationStore
) -> None:
    never = threading.Event()

    class Stuck(ScriptedEngine):
        def load(self):  # type: ignore[no-untyped-def]
            never.wait(600)
            yield from super().load()

    app = make_app(engine_factory=lambda _s: Stuck())
    async with app.run_test(size=SIZE) as pilot:
        await type_and_send(pilot, "saved before quitting")
        await pilot.pause()
        await pilot.press("ctrl+q")
    assert only_conversation(store).messages[0].content == "saved before quitting"
    never.set()
