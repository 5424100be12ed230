"""Every modal fits (or scrolls) on small terminals; the sidebar gives way on narrow ones;
notifications never cover the message box."""

from __future__ import annotations

import pytest
from textual.command import CommandInput, CommandList, CommandPalette
from textual.geometry import Region
from textual.widget import Widget
from textual.widgets import Button, Input, Label, TextArea

from mixchat.conversation import Message, Role, Status
from mixchat.store import ConversationStore
from mixchat.tui.app import MixchatApp
from mixchat.tui.keymap import DEFAULT_KEYMAP
from mixchat.tui.screens.modals import (
    ConfirmScreen,
    HelpScreen,
    RenameScreen,
    SettingsScreen,
)
from mixchat.tui.widgets.chat_view import ChatView
from mixchat.tui.widgets.prompt_input import PromptInput
from mixchat.tui.widgets.sidebar import Sidebar
from tests.tui.conftest import AppFactory
from tests.tui.helpers import ready

SMALL = [(80, 24), (60, 20)]


def assert_on_screen(app: MixchatApp, widget: Widget) -> None:
    """``widget`` lies wholly on the screen and is what is drawn where it is."""
    region = widget.region
    screen = Region(0, 0, *app.size)
    assert region.area > 0, f"{widget!r} has no area"
    assert screen.contains_region(region), f"{widget!r} at {region} is off {screen}"
    for x, y in (
        (region.x, region.y),
        (region.right - 1, region.bottom - 1),
        region.center,
    ):
        shown, _ = app.screen.get_widget_at(int(x), int(y))
        assert shown is widget or widget in shown.ancestors, (widget, shown, (x, y))


def _conversation(store: ConversationStore) -> str:
    conv = store.create_conversation(model="m", system_prompt=None, settings={})
    store.append_message(conv.id, Message(Role.USER, "a question " * 20))
    reply = store.start_reply(conv.id)
    assert reply.id is not None
    store.finish_reply(reply.id, "An answer.\n\n" * 30, Status.COMPLETE)
    store.rename(conv.id, "A rather long title for a conversation about many things")
    return conv.id


@pytest.mark.parametrize("size", SMALL)
async def test_settings_fits_with_its_error_line_and_buttons(
    size: tuple[int, int], make_app: AppFactory, store: ConversationStore
) -> None:
    app = make_app(resume_id=_conversation(store))
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+s")
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal, SettingsScreen)
        modal.query_one("#temperature", Input).value = "hot"
        await pilot.click("#save")
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen)
        error = modal.query_one("#error", Label)
        assert "temperature" in str(error.render())
        for widget in (error, modal.query_one("#save", Button), modal.query_one("#cancel")):
            assert_on_screen(app, widget)
        for field in ("#system", "#temperature", "#top_p", "#max_new_tokens"):
            widget = modal.query_one(field)
            widget.scroll_visible(animate=False, immediate=True)
            await pilot.pause()
            assert_on_screen(app, widget)
        # Still usable: fix the value and save with the button.
        modal.query_one("#temperature", Input).value = "0.5"
        await pilot.click("#save")
        await pilot.pause()
        assert not isinstance(app.screen, SettingsScreen)
        assert app.chat_screen.conversation is not None
        assert app.chat_screen.conversation.settings["temperature"] == 0.5


@pytest.mark.parametrize("size", SMALL)
async def test_help_fits_or_scrolls_and_no_line_is_cut(
    size: tuple[int, int], make_app: AppFactory
) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        await pilot.press("f1")
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal, HelpScreen)
        dialog = modal.query_one(".dialog")
        assert Region(0, 0, *app.size).contains_region(dialog.region)
        rows = list(modal.query(".help-row"))
        help_rows = DEFAULT_KEYMAP.help_rows()
        assert len(rows) == len(help_rows)
        for row, (_, key, what) in zip(rows, help_rows, strict=True):
            row.scroll_visible(animate=False, immediate=True)
            await pilot.pause()
            assert_on_screen(app, row)
            shown = " ".join(
                "".join(s.text for s in strip).strip()
                for strip in row.query_one(".what").render_lines(
                    Region(0, 0, *row.query_one(".what").size)
                )
            )
            assert " ".join(shown.split()) == what
            assert key in "".join(
                s.text
                for s in row.query_one(".key").render_lines(
                    Region(0, 0, *row.query_one(".key").size)
                )[0]
            )


@pytest.mark.parametrize("size", SMALL)
async def test_rename_and_confirm_delete_fit(
    size: tuple[int, int], make_app: AppFactory, store: ConversationStore
) -> None:
    app = make_app(resume_id=_conversation(store))
    async with app.run_test(size=size) as pilot:
        screen = await ready(pilot)
        await pilot.press("f2")
        await pilot.pause()
        assert isinstance(app.screen, RenameScreen)
        assert_on_screen(app, app.screen.query_one(Input))
        await pilot.press("escape")
        await pilot.pause()
        screen.sidebar.display = True
        screen.sidebar.options.focus()
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        for button in app.screen.query(Button):
            assert_on_screen(app, button)


@pytest.mark.parametrize("size", SMALL)
@pytest.mark.parametrize("key", ["ctrl+t", "ctrl+p"])
async def test_theme_picker_and_palette_fit(
    size: tuple[int, int], key: str, make_app: AppFactory
) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        await pilot.press(key)
        await pilot.pause()
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        assert_on_screen(app, app.screen.query_one(CommandInput))
        await pilot.press("down")
        await pilot.pause()
        commands = app.screen.query_one(CommandList)
        assert commands.option_count > 0
        assert Region(0, 0, *app.size).contains_region(commands.region)


async def test_sidebar_gives_way_on_a_narrow_terminal(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(60, 20)) as pilot:
        screen = await ready(pilot)
        assert not screen.sidebar.display
        assert screen.query_one(ChatView).size.width >= 55
        await pilot.press("ctrl+b")  # still there on demand
        await pilot.pause()
        assert screen.sidebar.display and screen.query_one(Sidebar).region.width > 0
        assert screen.query_one(PromptInput).region.width >= 20
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        assert screen.sidebar.display
        assert screen.query_one(ChatView).size.width >= 50
        await pilot.resize_terminal(60, 20)
        await pilot.pause()
        assert not screen.sidebar.display


@pytest.mark.parametrize("size", [(60, 20), (80, 24), (120, 40)])
async def test_notifications_leave_the_message_box_visible(
    size: tuple[int, int], make_app: AppFactory
) -> None:
    from textual.widgets._toast import Toast

    app = make_app()
    async with app.run_test(size=size, notifications=True) as pilot:
        await ready(pilot)
        prompt = app.query_one(PromptInput)
        prompt.text = "line\n" * 11  # the tallest message box
        for n in range(4):
            app.notify("A long notification that wraps over several lines. " * 3 + str(n))
        await pilot.pause()
        await pilot.pause()
        assert app.screen.query(Toast)
        assert str(app.screen.query(Toast).first().render()).startswith("A long")
        region = prompt.region
        assert region.height >= 8 and Region(0, 0, *app.size).contains_region(region)
        for y in range(region.y, region.bottom):
            for x in range(region.x, region.right):
                shown, _ = app.screen.get_widget_at(x, y)
                assert prompt in (shown, shown.parent), (x, y, shown)  # or its scrollbar
        assert isinstance(prompt, TextArea)
