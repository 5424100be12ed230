"""One action table: the bindings of every screen and widget, the command palette and the
help screen all come from ``mixchat.tui.actions.ACTIONS``; none can drift from it."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Static

from mixchat.engine.scripted import ScriptedEngine
from mixchat.tui import compat
from mixchat.tui.actions import ACTIONS, Where, unbound_key
from mixchat.tui.app import MixchatApp
from mixchat.tui.keymap import DEFAULT_KEYMAP
from mixchat.tui.messages import ModelReady
from mixchat.tui.screens.attach import AttachScreen
from mixchat.tui.screens.chat import ChatScreen
from mixchat.tui.screens.modals import ConfirmScreen, HelpScreen, RenameScreen, SettingsScreen
from mixchat.tui.screens.setup import ModelSetupScreen
from mixchat.tui.widgets.chat_view import ChatView
from mixchat.tui.widgets.sidebar import ConversationList
from tests.tui.conftest import AppFactory
from tests.tui.helpers import ready, settle

SIZE = (110, 40)
WHERE_CLASS: dict[Where, type] = {
    Where.APP: MixchatApp,
    Where.CHAT: ChatScreen,
    Where.MESSAGES: ChatView,
    Where.SIDEBAR: ConversationList,
    Where.CONFIRM: ConfirmScreen,
    Where.RENAME: RenameScreen,
    Where.ATTACH: AttachScreen,
    Where.SETTINGS: SettingsScreen,
    Where.HELP: HelpScreen,
    Where.SETUP: ModelSetupScreen,
}
TEXTUAL_ENTRIES = {"Maximize", "Minimize"}  # Textual's palette entries the table keeps


def test_every_binding_is_an_action_of_the_table() -> None:
    for where, cls in WHERE_CLASS.items():
        declared = vars(cls)["BINDINGS"]
        assert all(isinstance(b, Binding) for b in declared), cls
        expected = [a for a in ACTIONS if a.where is where]
        assert [b.id for b in declared] == [a.id for a in expected], where
        for binding, action in zip(declared, expected, strict=True):
            assert binding.key == (action.keys or unbound_key(action))
            assert binding.action == action.textual_action
            assert binding.priority == action.priority
    # the message box's keys are its own (typing order), not bindings
    assert all(a.textual_action is None for a in ACTIONS if a.where is Where.MESSAGE_BOX)


def test_every_action_exists_where_it_runs() -> None:
    for action in ACTIONS:
        name = action.textual_action
        if name is None:
            continue
        target, _, method = name.rpartition(".")
        cls = MixchatApp if target == "app" else WHERE_CLASS[action.where]
        assert hasattr(cls, f"action_{method.partition('(')[0]}"), action.id
    for action in ACTIONS:
        if action.palette:
            node = ChatScreen if action.where is Where.CHAT else MixchatApp
            assert hasattr(node, f"action_{action.palette_action.partition('(')[0]}"), action.id


def test_descriptions_name_only_real_actions() -> None:
    for action in ACTIONS:
        DEFAULT_KEYMAP.describe(action)  # a {name} of no action raises KeyError
    assert "{" not in "".join(what for _, _, what in DEFAULT_KEYMAP.help_rows())


def test_private_textual_apis_are_present() -> None:
    assert compat.missing() == []


async def test_the_help_screen_is_the_table(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        rows = [
            (
                str(row.query_one(".key", Static).render()),
                str(row.query_one(".what", Static).render()),
            )
            for row in app.screen.query(".help-row")
        ]
        expected = [(keys, what) for _, keys, what in DEFAULT_KEYMAP.help_rows()]
        assert rows == expected
        with_keys = [a for a in ACTIONS if a.keys]
        assert len(rows) == len(with_keys)  # every action that has a key is listed once
        headings = [str(h.render()) for h in app.screen.query(".help-heading")]
        assert headings == [w.value for w in Where]


async def test_the_palette_is_the_table(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        commands = list(app.get_system_commands(app.screen))
        ours = [c for c in commands if c.title not in TEXTUAL_ENTRIES]
        expected = [a for a in ACTIONS if a.palette and a.id != "model_setup"]  # a model loaded
        assert [c.title for c in ours] == [a.title for a in expected]
        for command, action in zip(ours, expected, strict=True):
            keys = DEFAULT_KEYMAP.label(action.id)
            assert command.help.endswith(f"({keys})") if keys else "(" not in command.help[-3:]
        # an entry runs its action: Toggle sidebar hides the list
        toggle = next(c for c in ours if c.title == "Toggle sidebar")
        assert app.chat_screen.sidebar.display
        await pilot.press("ctrl+p")
        await pilot.press(*"Toggle sidebar")
        await pilot.pause()
        await pilot.press("enter")
        await settle(pilot)
        assert not app.chat_screen.sidebar.display, toggle


async def test_model_setup_is_offered_only_without_a_model(make_app: AppFactory) -> None:
    def broken(_settings: object) -> ScriptedEngine:
        raise RuntimeError("no weights here")

    app = make_app(engine_factory=broken)
    async with app.run_test(size=SIZE) as pilot:
        await app.wait_for_model()
        await settle(pilot)
        titles = [c.title for c in app.get_system_commands(app.chat_screen)]
        assert "Model setup" in titles


async def test_the_engine_arrives_in_model_ready(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    seen: list[ModelReady] = []

    def hook(message: object) -> None:
        if isinstance(message, ModelReady):
            seen.append(message)

    app = make_app()
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await ready(pilot)
        assert [m.engine for m in seen] == [engine]
        assert app.engine is engine and app.chat_screen.engine is engine
