"""Keys: typing order in bursts, Esc in the search box, the list's highlight."""

from __future__ import annotations

import threading

from textual.widgets import Input, OptionList

from mixchat.conversation import Message, Role, Status
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from mixchat.tui.widgets.prompt_input import PromptInput
from tests.tui.conftest import AppFactory
from tests.tui.helpers import burst, only_conversation, ready, settle, type_and_send

SIZE = (110, 36)
CAPYBARA = (*"capi", *["backspace"] * 4, *"blackb")


async def test_a_burst_of_keys_keeps_its_order_in_the_message_box(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        prompt = app.query_one(PromptInput)
        prompt.focus()
        await burst(pilot, *CAPYBARA)
        assert prompt.text == "blackb"
        prompt.text = ""
        await burst(pilot, *"ac", "left", "b", "end", "d")  # moves, not only deletions
        assert prompt.text == "abcd"
        prompt.text = ""
        await burst(pilot, *"hello world", "ctrl+w", *"there")
        assert prompt.text == "hello there"


async def test_a_burst_of_keys_keeps_its_order_in_the_search_box(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        search = app.screen.query_one("#search", Input)
        search.focus()
        await burst(pilot, *CAPYBARA)
        assert search.value == "blackb"
        await burst(pilot, "home", "delete", *"B")
        assert search.value == "Blackb"


async def test_keys_typed_after_enter_stay_in_the_box(
    make_app: AppFactory, store: ConversationStore
) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.query_one(PromptInput).focus()
        await burst(pilot, *"hello", "enter", *"wor")
        await settle(pilot)
        assert only_conversation(store).messages[0].content == "hello"
        assert app.query_one(PromptInput).text == "wor"


async def test_escape_in_the_search_box_clears_then_leaves(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+f", *"zebra")
        search = screen.query_one("#search", Input)
        assert search.has_focus and search.value == "zebra"
        await pilot.press("escape")
        assert search.value == "" and search.has_focus
        await pilot.press("escape")
        assert screen.query_one(PromptInput).has_focus


async def test_escape_stops_a_reply_only_once_the_search_box_is_done_with_it(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    gate = threading.Event()  # never set: the reply streams until stopped
    engine.queue("so far ", "never", gate=gate, gate_from=1)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "tell me")
        await pilot.pause()
        assert screen.generating
        await pilot.press("ctrl+f", *"ze")
        search = screen.query_one("#search", Input)
        await pilot.press("escape")
        assert search.value == "" and screen.generating
        await pilot.press("escape")
        assert screen.query_one(PromptInput).has_focus and screen.generating
        await pilot.press("escape")  # the message box has no use for Esc: it stops
        await settle(pilot)
        assert not screen.generating
        reply = only_conversation(store).messages[-1]
        assert reply.status is Status.INTERRUPTED and reply.content == "so far "


def _conversation(store: ConversationStore, text: str) -> str:
    conv = store.create_conversation(
        model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, text)
    )
    store.append_message(conv.id, Message(Role.ASSISTANT, f"about {text}"))
    return conv.id


async def test_the_list_highlights_the_open_conversation(
    make_app: AppFactory, store: ConversationStore
) -> None:
    older = _conversation(store, "older")
    resumed = _conversation(store, "resumed")
    _conversation(store, "newest")  # listed first
    app = make_app(resume_id=older)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        options = screen.query_one(OptionList)

        def highlighted() -> str | None:
            option = options.highlighted_option
            return option.id if option is not None else None

        assert highlighted() == older  # after --resume
        await screen.open_conversation(resumed)
        await pilot.pause()
        assert highlighted() == resumed
        # Tab to the list, Enter: the open conversation stays open
        for _ in range(4):
            if options.has_focus:
                break
            await pilot.press("tab")
        assert options.has_focus
        await pilot.press("enter")
        await pilot.pause()
        assert screen.conversation is not None and screen.conversation.id == resumed
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert highlighted() is None  # nothing open: nothing highlighted
        await type_and_send(pilot, "brand new")
        await settle(pilot)
        assert screen.conversation is not None
        assert highlighted() == screen.conversation.id  # sending made it, at the top
        assert options.highlighted == 0
