"""Files in the message, presets and the turns left out of the prompt, in the app."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from mixchat import attachments, paths
from mixchat.conversation import Role
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from mixchat.tui.app import MixchatApp
from mixchat.tui.screens.attach import AttachmentBar, AttachScreen, complete_path
from mixchat.tui.screens.chat import ChatScreen
from tests.tui.conftest import AppFactory
from tests.tui.helpers import only_conversation, ready, settle, type_and_send, until

SIZE = (110, 40)


def notes(app: MixchatApp) -> list[str]:
    return [n.message for n in app._notifications]


async def attach(pilot: Pilot[None], path: str | os.PathLike[str]) -> None:
    """Attach ``path`` through the dialog: its key, the path typed, Enter."""
    await pilot.press("ctrl+g")
    await pilot.pause()
    assert isinstance(pilot.app.screen, AttachScreen)
    pilot.app.screen.query_one(Input).value = os.fspath(path)
    await pilot.press("enter")
    await settle(pilot)
    assert not isinstance(pilot.app.screen, AttachScreen)


async def from_palette(pilot: Pilot[None], title: str) -> None:
    """Run the palette's entry ``title`` (an action with no key by default)."""
    await pilot.press("ctrl+p")
    await pilot.press(*title)
    await pilot.pause()
    await pilot.press("enter")
    await settle(pilot)


def bar(screen: ChatScreen) -> AttachmentBar:
    return screen.query_one(AttachmentBar)


async def test_an_attached_file_goes_into_the_message(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore, tmp_path: Path
) -> None:
    notes_file = tmp_path / "notes.txt"
    notes_file.write_text("alpha beta gamma\n")
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await ready(pilot)
        await attach(pilot, notes_file)
        # Listed above the message box with its size and the engine's token count.
        assert bar(screen).display
        await until(pilot, lambda: "tokens" in str(bar(screen).render()), "the token count")
        shown = str(bar(screen).render())
        assert notes_file.name in shown and "17 B" in shown
        await type_and_send(pilot, "Summarise this")
        await settle(pilot)
        file = attachments.read_file(notes_file, 1 << 20)
        expected = attachments.compose_message("Summarise this", [file])
        conv = only_conversation(store)
        question = conv.messages[0]
        assert (question.role, question.content) == (Role.USER, expected)
        assert question.attachments == [file.record()]
        assert engine.requests[-1][0][-1].content == expected
        assert conv.title == "Summarise this"
        # Sent: nothing is attached to the next message.
        assert bar(screen).files == [] and not bar(screen).display


async def test_files_alone_can_be_sent(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore, tmp_path: Path
) -> None:
    source = tmp_path / "main.py"
    source.write_text("print('hi')\n")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await attach(pilot, source)
        await type_and_send(pilot, "")
        await settle(pilot)
        conv = only_conversation(store)
        assert conv.messages[0].content.startswith(f"File: {source}\n```python\n")
        assert conv.title == "main.py"


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def _big(tmp_path: Path) -> Path:
    path = tmp_path / "big.txt"
    path.write_text("x" * 2000)
    return path


def _binary(tmp_path: Path) -> Path:
    path = tmp_path / "image.bin"
    path.write_bytes(b"PNG\x00\x01\x02")
    return path


def _latin1(tmp_path: Path) -> Path:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9".encode("latin-1"))
    return path


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_binary, "binary"),
        (_latin1, "not UTF-8"),
        (lambda tmp: tmp, "is a directory"),
        (_fifo, "a FIFO"),
        (_big, "over the 1,000-byte limit"),
        (lambda tmp: tmp / "missing.txt", "no such file"),
    ],
    ids=["binary", "not-utf8", "directory", "fifo", "too-big", "missing"],
)
async def test_a_file_that_cannot_be_attached_is_one_notification(
    make_app: AppFactory,
    store: ConversationStore,
    tmp_path: Path,
    make,  # type: ignore[no-untyped-def]
    says: str,
) -> None:
    from mixchat.config import Settings

    path = make(tmp_path)
    app = make_app(settings=Settings(model="scripted-model", max_file_bytes=1000))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await ready(pilot)
        before = notes(app)
        await attach(pilot, path)
        new = notes(app)[len(before) :]
        assert len(new) == 1 and says in new[0], new
        assert bar(screen).files == [] and not bar(screen).display
        assert store.list_conversations() == []


async def test_removing_an_attached_file(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("first file\n")
    second.write_text("second file\n")
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await ready(pilot)
        await attach(pilot, first)
        await attach(pilot, second)
        assert [f.name for f in bar(screen).files] == [str(first), str(second)]
        await from_palette(pilot, "Remove attached file")
        assert [f.name for f in bar(screen).files] == [str(first)]
        assert f"Removed {second}." in notes(app)
        await type_and_send(pilot, "Read it")
        await settle(pilot)
        question = only_conversation(store).messages[0]
        assert [a.name for a in question.attachments] == [str(first)]
        assert "second file" not in question.content
        await from_palette(pilot, "Remove attached file")  # nothing left to remove
        assert notes(app)[-1] == "No file is attached."


async def test_a_message_too_big_for_the_context_is_not_sent(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore, tmp_path: Path
) -> None:
    from mixchat.config import Settings

    engine.context_size = 500
    big = tmp_path / "words.txt"
    big.write_text("word " * 600)
    app = make_app(settings=Settings(model="scripted-model", max_new_tokens=100))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await ready(pilot)
        await attach(pilot, big)
        await type_and_send(pilot, "Too much")
        await settle(pilot)
        assert store.list_conversations() == []
        assert engine.requests == []
        refused = [n for n in notes(app) if n.startswith("Not sent:")]
        assert len(refused) == 1 and "context" in refused[0]
        # Nothing is lost: the text and the file wait; without the file it goes.
        assert screen.prompt.text == "Too much"
        assert len(bar(screen).files) == 1
        await from_palette(pilot, "Remove attached file")
        await type_and_send(pilot, "Small")
        await settle(pilot)
        assert only_conversation(store).messages[0].content == "Small"


def test_path_completion(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "nested").mkdir()
    (tmp_path / ".hidden").write_text("x")
    base = f"{tmp_path}{os.sep}"
    assert complete_path(base + "no") == base + "notes.txt"
    assert complete_path(base + "ne") == base + f"nested{os.sep}"
    assert complete_path(base + "zz") is None
    assert complete_path(base + ".h") == base + ".hidden"
    assert complete_path(base + "notes.txt") is None  # complete already


# -- presets ------------------------------------------------------------------


def write_preset(name: str, text: str) -> None:
    directory = paths.presets_dir()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.toml").write_text(text)


async def pick_preset(pilot: Pilot[None], name: str) -> None:
    await pilot.press("f12")
    await settle(pilot)
    await pilot.press(*name)
    await settle(pilot)
    await pilot.press("enter")
    await settle(pilot)


async def test_the_preset_picker_changes_the_open_conversation(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    write_preset("terse", 'system_prompt = "Be terse."\ntemperature = 0.1\nmax_new_tokens = 55\n')
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        await type_and_send(pilot, "First")
        await settle(pilot)
        assert engine.requests[-1][2].max_new_tokens != 55
        await pick_preset(pilot, "terse")
        conv = only_conversation(store)
        assert conv.system_prompt == "Be terse."
        assert conv.settings["temperature"] == 0.1 and conv.settings["max_new_tokens"] == 55
        assert conv.settings["preset"] == "terse"
        await type_and_send(pilot, "Second")
        await settle(pilot)
        _, system, params = engine.requests[-1]
        assert system == "Be terse." and params.max_new_tokens == 55
        assert params.temperature == 0.1


async def test_a_preset_picked_with_no_conversation_open_starts_the_next(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    write_preset("coder", 'system_prompt = "You write Python."\ntop_k = 7\n')
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        await pick_preset(pilot, "coder")
        assert store.list_conversations() == []
        await type_and_send(pilot, "Hello")
        await settle(pilot)
        conv = only_conversation(store)
        assert conv.system_prompt == "You write Python." and conv.settings["top_k"] == 7
        assert conv.settings["preset"] == "coder"
        assert engine.requests[-1][2].top_k == 7


async def test_a_bad_preset_file_is_one_notification(make_app: AppFactory) -> None:
    write_preset("good", "temperature = 0.3\n")
    write_preset("broken", "temperature = = 1\n")
    write_preset("wrong", "temperature = -5\n")
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        before = notes(app)
        await pilot.press("f12")
        await settle(pilot)
        new = notes(app)[len(before) :]
        assert len(new) == 2, new
        assert any("broken" in n for n in new) and any("wrong" in n for n in new)


# -- turns left out of the prompt -------------------------------------------


def dimmed(screen: ChatScreen) -> list[bool]:
    return [b.has_class("left-out") for b in screen.chat.query(".message")]


async def test_turns_left_out_of_the_prompt_are_dimmed(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await ready(pilot)
        for text in ("one", "two"):
            await type_and_send(pilot, text)
            await settle(pilot)
        first_id = only_conversation(store).id
        engine.queue("three answered", trimmed=2)  # the first question and answer
        await type_and_send(pilot, "three")
        await settle(pilot)
        assert dimmed(screen) == [True, True, False, False, False, False]
        assert any("dimmed" in n for n in notes(app))
        await type_and_send(pilot, "four")  # fits again
        await settle(pilot)
        assert not any(dimmed(screen))
        engine.queue("five answered", trimmed=4)
        await type_and_send(pilot, "five")
        await settle(pilot)
        assert dimmed(screen)[:4] == [True] * 4 and not any(dimmed(screen)[4:])
        # Another conversation: nothing dimmed; this one again: as it was drawn anew.
        await pilot.press("ctrl+n")
        await settle(pilot)
        await type_and_send(pilot, "elsewhere")
        await settle(pilot)
        assert dimmed(screen) == [False, False]
        await screen.open_conversation(first_id)
        await settle(pilot)
        assert len(dimmed(screen)) == 10 and not any(dimmed(screen))


def test_left_out_counts_unsent_messages_among_the_dropped() -> None:
    from mixchat.conversation import Message, Status
    from mixchat.tui.shown import left_out

    messages = [
        Message(Role.USER, "q1"),
        Message(Role.ASSISTANT, "failed", Status.ERROR),  # never in a prompt
        Message(Role.USER, "q2"),
        Message(Role.ASSISTANT, "a2"),
        Message(Role.USER, "q3"),
    ]
    assert left_out(messages, 0) == 0
    assert left_out(messages, 1) == 1
    assert left_out(messages, 2) == 3
    assert left_out(messages, 3) == 4


async def test_file_names_are_never_markup(
    make_app: AppFactory, store: ConversationStore, tmp_path: Path
) -> None:
    odd = tmp_path / "[bold]x[$y].txt"
    odd.write_text("text\n")
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await ready(pilot)
        await attach(pilot, odd)
        assert f"Attached: {odd} (5 B" in str(bar(screen).render())
        await attach(pilot, tmp_path / "[red]gone.txt")
        assert notes(app)[-1] == f"{tmp_path}/[red]gone.txt: no such file"
        await from_palette(pilot, "Remove attached file")
        assert notes(app)[-1] == f"Removed {odd}."


async def test_attach_on_the_real_transformers_path(tiny_model: Path, tmp_path: Path) -> None:
    """The tiny Mixtral counts an attached file, refuses one too big for its context
    before anything is saved, and gets the composed message."""
    from mixchat.config import Settings
    from mixchat.engine.factory import make_engine

    small, huge = tmp_path / "small.txt", tmp_path / "huge.txt"
    small.write_text("a small file\n")
    huge.write_text("word " * 40_000)  # more tokens than the 32k context
    store = ConversationStore.open()
    settings = Settings(model=str(tiny_model), max_new_tokens=4, temperature=0)
    app = MixchatApp(settings, make_engine, store)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await ready(pilot)
        await attach(pilot, huge)
        await type_and_send(pilot, "Too much")
        await settle(pilot)
        assert store.list_conversations() == []
        assert len([n for n in notes(app) if n.startswith("Not sent:")]) == 1
        await from_palette(pilot, "Remove attached file")
        await attach(pilot, small)
        await until(pilot, lambda: "tokens" in str(bar(screen).render()), "the token count")
        await type_and_send(pilot, "Read it")
        await settle(pilot)
        conv = only_conversation(store)
        file = attachments.read_file(small, 1 << 20)
        assert conv.messages[0].content == attachments.compose_message("Read it", [file])
        assert conv.messages[0].attachments == [file.record()]
        assert [m.role for m in conv.messages] == [Role.USER, Role.ASSISTANT]
    store.close()
