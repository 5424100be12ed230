"""Themes never take the app down: built-ins render every widget, and a user theme that
would break one is refused with one notification."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Markdown
from textual.widgets._markdown import MarkdownTable

from mixchat.conversation import Message, Role, Status
from mixchat.engine.scripted import ScriptedEngine
from mixchat.paths import user_themes_dir
from mixchat.store import ConversationStore
from mixchat.tui.theme_files import ThemeError, parse_theme
from mixchat.tui.widgets.chat_view import AssistantBlock
from tests.tui.conftest import AppFactory
from tests.tui.helpers import ready, type_and_send, wait_reply
from tests.tui.screen import screen_text
from tests.tui.test_app import SIZE

BUILTIN = ["mixchat-dark", "mixchat-light", "mixchat-high-contrast"]
TABLE = "| left | right | centre |\n|:-----|------:|:------:|\n| a | 1 | x |\n| bb | 22 | yy |\n"


def _conversation_with(store: ConversationStore, answer: str) -> str:
    conv = store.create_conversation(model="m", system_prompt=None, settings={})
    store.append_message(conv.id, Message(Role.USER, "a table please"))
    reply = store.start_reply(conv.id)
    assert reply.id is not None
    store.finish_reply(reply.id, answer, Status.COMPLETE)
    return conv.id


@pytest.mark.parametrize("theme", [*BUILTIN, "textual-dark", "textual-light"])
async def test_a_table_renders_in_every_theme_live_and_reopened(
    theme: str, make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    from mixchat.config import Settings

    conv_id = _conversation_with(store, "Here:\n\n" + TABLE)
    engine.queue("Sure:\n\n", TABLE[:30], TABLE[30:], "\nDone.\n")
    app = make_app(resume_id=conv_id, settings=Settings(model="scripted-model", theme=theme))
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        assert app.theme == theme
        await type_and_send(pilot, "another")
        await wait_reply(pilot)
        assert app.is_running
        assert len(screen.query(MarkdownTable)) == 2  # the reopened answer's and the new one
        assert screen_text(app).count("centre") == 2
        # Switching themes with tables on screen re-parses every widget's CSS.
        for other in BUILTIN:
            app.theme = other
            await pilot.pause()
            await pilot.pause()
            assert app.is_running and app.theme == other


async def test_theme_variables_do_not_leak_into_textual_css(make_app: AppFactory) -> None:
    """A theme file's `$foreground: ...;` once appended to Textual's own `$foreground`
    tokens (its parser copies the variable table shallowly), so later widget CSS broke."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        expected = app.get_css_variables()["foreground"]
        app.theme = "mixchat-light"
        await pilot.pause()
        await app.chat_screen.chat.mount(Markdown(TABLE))
        await pilot.pause()
        tokens = app.stylesheet._variable_tokens["foreground"]
        assert [t.value for t in tokens if t.name != "whitespace"] == [
            app.get_css_variables()["foreground"]
        ]
        assert expected != app.get_css_variables()["foreground"]


def _write_theme(name: str, text: str) -> Path:
    user_themes_dir().mkdir(parents=True, exist_ok=True)
    path = user_themes_dir() / f"{name}.tcss"
    path.write_text(text)
    return path


BREAKING = {
    # Variables Textual's widgets use, given values of the wrong shape.
    "two-colours": "$primary: #112233;\n$foreground: #ffffff #000000;\n",
    "numbers": "$primary: #112233;\n$surface-darken-1: 1 2;\n",
    "not-a-colour": "$primary: #112233;\n$block-cursor-background: 3 4 5;\n",
    "bad-text-style": "$primary: #112233;\n$block-cursor-text-style: sparkly;\n",
}


@pytest.mark.parametrize("case", sorted(BREAKING))
async def test_user_theme_that_would_break_a_widget_is_refused_once(
    case: str, make_app: AppFactory, store: ConversationStore
) -> None:
    from mixchat.config import Settings

    name = f"user-{case}"
    _write_theme(name, BREAKING[case])
    conv_id = _conversation_with(store, TABLE)
    app = make_app(resume_id=conv_id, settings=Settings(model="scripted-model", theme=name))
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.pause()
        assert app.is_running
        assert app.theme == "mixchat-dark"  # the fallback
        assert name not in app.available_themes
        notes = [n.message for n in app._notifications]
        assert len(notes) == 1 and f"{name}.tcss" in notes[0], notes
        assert screen.query(MarkdownTable)
        assert "centre" in screen_text(app)


async def test_user_theme_refused_when_chosen_keeps_the_current_theme(
    make_app: AppFactory,
) -> None:
    _write_theme("late", BREAKING["numbers"])
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.theme = "mixchat-light"
        await pilot.pause()
        app.theme = "late"
        await pilot.pause()
        await pilot.pause()
        assert app.is_running and app.theme == "mixchat-light"
        await app.chat_screen.chat.mount(Markdown(TABLE))
        await pilot.pause()
        assert app.is_running


async def test_user_theme_with_extra_variables_and_widget_styles_works(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    _write_theme(
        "mine",
        "/* a comment with $primary: red; inside */\n"
        "$primary: #336699;\n$foreground: #eeeeee;\n$background: #101010;\n"
        "$my-accent: $primary 40%;\n$footer-background: #222222;\n"
        "UserBlock { background: $my-accent; }\n",
    )
    engine.queue(TABLE)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        app.theme = "mine"
        await pilot.pause()
        await type_and_send(pilot, "hi")
        await wait_reply(pilot)
        assert app.is_running and app.theme == "mine"
        assert app.get_css_variables()["footer-background"] == "#222222"
        assert screen.query_one(AssistantBlock).query(MarkdownTable)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("$secondary: #fff;\n", "$primary"),
        ("$primary: #12345;\n", "colour"),
        ("$primary: not-a-colour;\n", "colour"),
        ("$primary: #123456;\n$foreground: $nowhere;\n", "$nowhere"),
        ("$primary: #123456;\n$dark: maybe;\n", "$dark"),
        ("$primary: #123456;\nUserBlock { color: ; {{", "CSS"),
    ],
)
def test_parse_theme_errors_name_the_file_and_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "t.tcss"
    path.write_text(text)
    with pytest.raises(ThemeError) as caught:
        parse_theme(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert problem in str(caught.value)


@pytest.mark.parametrize("stem", ["a[b]", "x y", "[bold]", "[", "bad\x1b]52;x", "-dash"])
def test_theme_names_are_plain(tmp_path: Path, stem: str) -> None:
    path = tmp_path / f"{stem}.tcss"
    path.write_text("$primary: #123456;\n")
    with pytest.raises(ThemeError, match="name"):
        parse_theme(path)


def test_builtin_theme_css_holds_no_variable_definitions() -> None:
    from mixchat.tui.theme_files import builtin_themes_dir

    for name in BUILTIN:
        parsed = parse_theme(builtin_themes_dir() / f"{name}.tcss")
        assert "$primary:" not in parsed.css and "$foreground:" not in parsed.css
        assert parsed.theme.primary is not None
