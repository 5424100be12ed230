"""The command palette: every action once, delete and export, a screenshot saved where the
user can find it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mixchat import paths
from mixchat.conversation import Message, Role
from mixchat.store import ConversationStore
from mixchat.transcript import from_json, to_markdown
from mixchat.tui.screens.modals import ConfirmScreen
from tests.tui.conftest import AppFactory
from tests.tui.helpers import ready, settle

SIZE = (110, 36)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current directory with a bracket in its name, and a home without ~/Downloads."""
    here = tmp_path / "work [bold]dir"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return here


def saved(store: ConversationStore) -> str:
    conv = store.create_conversation(
        model="m",
        system_prompt=None,
        settings={},
        title="Zebra [facts] / stripes",
        first_message=Message(Role.USER, "why stripes?"),
    )
    store.append_message(conv.id, Message(Role.ASSISTANT, "**Flies** dislike them."))
    return conv.id


async def test_every_entry_once(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert len(titles) == len(set(titles)), titles
        for wanted in (
            "Keys",
            "Screenshot",
            "Delete conversation",
            "Export conversation as Markdown",
            "Export conversation as JSON",
            "Regenerate",
            "Edit last message",
        ):
            assert wanted in titles


async def test_screenshot_without_a_downloads_folder(make_app: AppFactory, workdir: Path) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.action_save_screenshot()
        await pilot.pause()
        shots = list(workdir.glob("mixchat-*.svg"))
        assert len(shots) == 1 and shots[0].read_text().startswith("<svg")
        assert not (Path(os.environ["HOME"]) / "Downloads").exists()
        note = list(app._notifications)[-1]
        assert note.message == str(shots[0]) and note.title == "Screenshot saved"
        assert note.markup is False  # a path is shown as it is


async def test_screenshot_when_the_current_directory_is_gone(
    make_app: AppFactory, workdir: Path
) -> None:
    workdir.rmdir()  # deleted under the running app: saved in the data directory instead
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.action_save_screenshot()
        await pilot.pause()
        shots = list(paths.data_dir().glob("mixchat-*.svg"))
        assert len(shots) == 1
        assert any(n.message == str(shots[0]) for n in app._notifications)


async def test_export_markdown_and_json(
    make_app: AppFactory, store: ConversationStore, workdir: Path
) -> None:
    conv_id = saved(store)
    app = make_app(resume_id=conv_id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        md = screen.commands.export("md")
        js = screen.commands.export("json")
        assert md is not None and js is not None
        assert md.parent == workdir and js.parent == workdir
        assert md.name == f"mixchat-zebra-facts-stripes-{conv_id[:8]}.md"
        conv = store.get_conversation(conv_id)
        assert md.read_text() == to_markdown(conv) + "\n"
        again = from_json(json.loads(js.read_text()))
        await pilot.pause()
        assert [m.content for m in again.messages] == ["why stripes?", "**Flies** dislike them."]
        messages = [n.message for n in app._notifications]
        assert str(md) in messages and str(js) in messages


async def test_export_with_nothing_open_says_so(make_app: AppFactory, workdir: Path) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        assert screen.commands.export("md") is None
        assert list(workdir.iterdir()) == []


async def test_delete_from_the_palette_asks_first(
    make_app: AppFactory, store: ConversationStore
) -> None:
    conv_id = saved(store)
    app = make_app(resume_id=conv_id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+p", *"Delete conversation")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        assert store.list_conversations() == []
        assert screen.conversation is None and not screen.query(".message")
