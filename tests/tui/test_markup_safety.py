"""Untrusted text (model ids, paths, titles, user and model text, engine, server and store
errors) is never parsed as markup and never reaches the terminal with its escapes.

Each scenario carries a sentinel word; Textual's and Rich's markup parsers are wrapped so
that a sentinel reaching either fails the test, whether or not that string would have
parsed. The screen is then read back: the hostile text is shown literally, with no escape
character in any cell.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
import rich.markup
import rich.text
from textual.content import Content
from textual.widgets import Input

from mixchat.config import Settings
from mixchat.conversation import Message, Role, Status
from mixchat.engine.base import EngineError, LoadProgress, Notice
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore, StoreError
from mixchat.tui.app import MixchatApp
from mixchat.tui.screens.modals import ConfirmScreen, RenameScreen, SettingsScreen
from tests.tui.conftest import AppFactory
from tests.tui.helpers import ready, type_and_send, wait_reply
from tests.tui.screen import screen_segments, screen_text

SENTINEL = "HOSTILE"
VARIANTS = [
    "[/]",
    "[bold]",
    "[/INST]",
    "[link=https://example.invalid]x[/link]",
    "\x1b]52;c;aGVsbG8=\x07",
    "[",
    "\\[",
    "[@click=app.quit]q[/]",
    "[$text-success]",
]
ALL = " ".join(VARIANTS)
SIZE = (120, 40)


@pytest.fixture(autouse=True)
def markup_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail when text holding the sentinel is handed to a markup parser."""
    seen: list[str] = []
    original = Content.from_markup.__func__  # type: ignore[attr-defined]

    def from_markup(cls, markup, **variables):  # type: ignore[no-untyped-def]
        if isinstance(markup, str) and SENTINEL in markup:
            seen.append(markup)
        return original(cls, markup, **variables)

    rich_render = rich.markup.render

    def render(markup, *args, **kwargs):  # type: ignore[no-untyped-def]
        if SENTINEL in markup:
            seen.append(markup)
        return rich_render(markup, *args, **kwargs)

    monkeypatch.setattr(Content, "from_markup", classmethod(from_markup))
    monkeypatch.setattr(rich.markup, "render", render)
    monkeypatch.setattr(rich.text, "render", render, raising=False)
    yield seen
    assert seen == [], f"untrusted text reached a markup parser: {seen!r}"


def assert_shown_literally(app: MixchatApp, *fragments: str) -> None:
    """Each fragment is on screen as typed; no cell holds an escape character."""
    text = screen_text(app)
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    for row in screen_segments(app):
        for segment in row:
            assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in segment.text), segment


def notifications(app: MixchatApp) -> list[str]:
    return [f"{n.title}\n{n.message}" for n in app._notifications]


@pytest.mark.parametrize("variant", VARIANTS)
async def test_model_id_and_load_error(
    variant: str, store: ConversationStore, make_app: AppFactory
) -> None:
    model = f"some/no{variant}model-{SENTINEL}"

    def factory(settings: Settings) -> ScriptedEngine:
        raise EngineError(f"cannot load {settings.model}: not found")

    app = make_app(settings=Settings(model=model), engine_factory=factory)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await app.wait_for_model()
        await pilot.pause()
        assert app.is_running
        # The first run: the setup screen shows the error as it was written.
        assert "cannot load" in screen_text(app)
        visible = variant.replace("\x1b", "\\x1b").replace("\x07", "\\x07")
        assert_shown_literally(app, f"no{visible}model-{SENTINEL}"[:20])


async def test_load_error_with_a_resumed_conversation_is_a_plain_notification(
    store: ConversationStore, make_app: AppFactory
) -> None:
    conversation = store.create_conversation(
        model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "hello")
    )
    model = f"some/no[/INST]model-{SENTINEL}"

    def factory(settings: Settings) -> ScriptedEngine:
        raise EngineError(f"cannot load {settings.model}: not found")

    app = make_app(
        settings=Settings(model=model), engine_factory=factory, resume_id=conversation.id
    )
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await app.wait_for_model()
        await pilot.pause()
        assert app.is_running
        (note,) = [n for n in notifications(app) if "cannot load" in n]
        assert "no[/INST]model" in note


class NoticeEngine(ScriptedEngine):
    """Loads with a notice, as a fallback would."""

    def load(self) -> Iterator[LoadProgress | Notice]:
        yield Notice(f"fell back {SENTINEL} {ALL}")


async def test_notice_generation_error_and_texts(store: ConversationStore) -> None:
    engine = NoticeEngine()
    engine.queue(f"answer {SENTINEL} {ALL}", fail_with=f"server said {SENTINEL} {ALL}")
    app = MixchatApp(Settings(model=f"org/{SENTINEL}[/]"), lambda _s: engine, store, resume_id=None)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        await type_and_send(pilot, f"user {SENTINEL} {ALL}")
        await wait_reply(pilot)
        assert app.is_running
        notes = notifications(app)
        assert any("fell back" in n and "[/INST]" in n for n in notes)
        assert any("server said" in n and "[link=" in n for n in notes)
        assert_shown_literally(app, f"user {SENTINEL} [/]", "[/INST]", "[bold]", "server said")


async def test_store_errors_and_direct_notifications(
    store: ConversationStore, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise StoreError(f"disk {SENTINEL} {ALL}")

    monkeypatch.setattr(store, "create_conversation", broken)
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        await type_and_send(pilot, "hello")
        await pilot.pause()
        app.notify(f"[b]{SENTINEL}[/b] {ALL}", title=f"[i]{SENTINEL}", markup=True)
        app.chat_screen.notify(f"{SENTINEL} [/]", title="t")
        await pilot.pause()
        assert app.is_running
        notes = notifications(app)
        assert any(f"disk {SENTINEL} [/]" in n for n in notes)
        assert any(n.startswith(f"[i]{SENTINEL}\n[b]{SENTINEL}[/b]") for n in notes)
        assert all("\x1b" not in n for n in notes)
        assert_shown_literally(app, f"disk {SENTINEL} [/]")


def _titled(store: ConversationStore, title: str) -> str:
    conv = store.create_conversation(model="m", system_prompt=None, settings={})
    store.append_message(conv.id, Message(Role.USER, f"q {SENTINEL} {ALL}"))
    reply = store.start_reply(conv.id)
    assert reply.id is not None
    store.finish_reply(reply.id, f"a {SENTINEL} {ALL}", Status.COMPLETE)
    store.rename(conv.id, title)
    return conv.id


async def test_titles_search_and_modals(store: ConversationStore, make_app: AppFactory) -> None:
    title = f"[bold]{SENTINEL}[/] [/INST]"
    conv_id = _titled(store, title)
    app = make_app(resume_id=conv_id)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await ready(pilot)
        assert_shown_literally(app, title[:20], "[/INST]")
        # Search for hostile words, in the box and in the results.
        await pilot.press("ctrl+f")
        search = screen.query_one("#search", Input)
        search.value = f"{SENTINEL} [/]"
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.is_running
        assert title[:20] in screen_text(app)
        # Rename and delete modals show the title as text.
        await pilot.press("f2")
        await pilot.pause()
        assert isinstance(app.screen, RenameScreen)
        assert app.screen.query_one(Input).value == title
        await pilot.press("escape")
        screen.sidebar.options.focus()
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert_shown_literally(app, title[:20])
        await pilot.press("escape")
        # The settings modal's error line quotes what was typed.
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen)
        app.screen.query_one("#temperature", Input).value = f"{SENTINEL}[/]"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen) and app.is_running
        assert_shown_literally(app, f"{SENTINEL}[/]")


async def test_paths_in_theme_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: ConversationStore
) -> None:
    home = tmp_path / f"[bold]{SENTINEL}[/]"
    monkeypatch.setenv("MIXCHAT_HOME", str(home))
    from mixchat.paths import user_themes_dir

    user_themes_dir().mkdir(parents=True)
    (user_themes_dir() / "bad.tcss").write_text("$primary: nope;\n")
    engine = ScriptedEngine()
    app = MixchatApp(Settings(model="m"), lambda _s: engine, store)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        notes = notifications(app)
        assert any(f"[bold]{SENTINEL}[/]" in n and "bad.tcss" in n for n in notes)


# -- a lint over the tui package ---------------------------------------------------

TUI = Path(__file__).resolve().parents[2] / "mixchat" / "tui"
TEXT_WIDGETS = {"Label", "Static", "Button", "Option", "Toast", "Link"}
TEXT_ATTRIBUTES = {"label", "title", "sub_title", "border_title", "border_subtitle", "tooltip"}


def _formatted(node: ast.AST) -> bool:
    """A str built at run time (f-string, concatenation, %, str(), .format, .join)."""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return True
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("str", "repr", "format"):
            return True
        if isinstance(func, ast.Attribute) and func.attr in ("format", "join"):
            return isinstance(func.value, ast.Constant)
    return isinstance(node, (ast.Attribute, ast.Subscript))


def _offences(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "markup" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                ):
                    yield node.lineno, "markup= other than False"
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            # An Input's or TextArea's first argument is its value, plain text already.
            args = [] if name in ("Input", "TextArea", "PromptInput") else list(node.args[:1])
            args += [k.value for k in node.keywords if k.arg in ("placeholder", "label")]
            if name in TEXT_WIDGETS or name in ("update", "Input", "TextArea", "PromptInput"):
                for arg in args:
                    if _formatted(arg):
                        yield node.lineno, f"{name}() given a str built at run time"
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr in TEXT_ATTRIBUTES
                    and _formatted(node.value)
                ):
                    yield node.lineno, f".{target.attr} = a str built at run time"


def test_lint_no_markup_built_from_strings_in_the_tui() -> None:
    """Text widgets get Text/Content or literals; notify is plain through the app's
    override (tested above), so its arguments may be any str."""
    found = []
    for path in sorted(TUI.rglob("*.py")):
        for line, what in _offences(ast.parse(path.read_text(), str(path))):
            found.append(f"{path.relative_to(TUI)}:{line}: {what}")
    assert found == []


def test_lint_catches_what_it_should() -> None:
    bad = ast.parse(
        "Label(f'{x}')\nw.update(a.b)\nButton(str(n))\nb.label = 'x' + y\n"
        "app.notify(m, markup=True)\nInput(placeholder=f'{p}')\n"
    )
    assert len(list(_offences(bad))) == 6
    good = ast.parse("Label('x')\nw.update(Text(a.b))\nButton(Content(f'{n}'))\nnotify(m)\n")
    assert list(_offences(good)) == []
