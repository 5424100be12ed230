"""``[keymap]`` in config.toml: a remapped key runs its action and the old one no longer
does; bad entries are named in one notification and the app starts anyway."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixchat import paths
from mixchat.config import load_sources, read_table
from mixchat.engine.scripted import ScriptedEngine
from mixchat.tui.keymap import DEFAULT_KEYMAP, KeyParseError, key_label, load_keymap, parse_key
from mixchat.tui.screens.modals import HelpScreen
from mixchat.tui.widgets.prompt_input import PromptInput
from mixchat.tui.widgets.status_bar import ModelState, ReplyState
from tests.tui.conftest import AppFactory
from tests.tui.helpers import ready, settle, type_and_send

SIZE = (110, 36)


def config(text: str) -> Path:
    """Write config.toml in the test's own MIXCHAT_HOME."""
    path = paths.config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def keymap_from(text: str):  # type: ignore[no-untyped-def]
    path = config(text)
    load_sources({})  # the settings ignore the [keymap] table
    return load_keymap(read_table("keymap"), str(path))


def notes(app) -> list[str]:  # type: ignore[no-untyped-def]
    return [n.message for n in app._notifications]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("ctrl+n", "ctrl+n"),
        ("Ctrl+N", "ctrl+n"),
        ("esc", "escape"),
        ("F6", "f6"),
        ("alt+ctrl+x", "alt+ctrl+x"),
        ("ctrl+alt+x", "alt+ctrl+x"),
        ("?", "question_mark"),
        ("ctrl+?", "ctrl+question_mark"),
    ],
)
def test_keys_are_parsed_as_textual_names_them(text: str, key: str) -> None:
    assert parse_key(text) == key


@pytest.mark.parametrize("text", ["", "ctrl+", "crtl+n", "ctrl+ctrl+n", "f99x", "shift+a", "hello"])
def test_bad_keys_are_refused(text: str) -> None:
    with pytest.raises(KeyParseError):
        parse_key(text)


def test_labels() -> None:
    assert [key_label(k) for k in ("ctrl+s", "escape", "r", "f1", "question_mark")] == [
        "Ctrl+S",
        "Esc",
        "R",
        "F1",
        "?",
    ]


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ('nwe = "f9"', "unknown action 'nwe' (did you mean 'new'?)"),
        ('new = "crtl+k"', "new: 'crtl' in 'crtl+k' is not a modifier"),
        ('new = "ctrl+r"', "new: 'Ctrl+R' is already the key of regenerate"),
        ('new = "x"', "new: 'X' would be typed in a text field"),
        ('new = "tab"', "new: 'Tab' is taken by"),
        ("new = 5", "new: must be a key"),
        ('send = ""', "send: needs a key"),
        ('new = "f9"\ntoggle_sidebar = "f9"', "toggle_sidebar: 'F9' is already the key of new"),
    ],
)
def test_a_bad_entry_is_named_and_the_rest_kept(table: str, named: str) -> None:
    keymap, problem = keymap_from(f'[keymap]\n{table}\ncopy_code = "f8"\n')
    assert problem is not None and "\n" not in problem
    assert problem.startswith(f"{paths.config_file()}: keymap: ") and named in problem
    assert keymap.keys("copy_code") == ("f8",)  # the good entry applies
    assert keymap.keys("regenerate") == ("ctrl+r",)


def test_no_keymap_and_a_keymap_that_is_not_a_table() -> None:
    assert keymap_from("temperature = 0.3\n") == (DEFAULT_KEYMAP, None)
    keymap, problem = keymap_from('keymap = "ctrl+n"\n')
    assert keymap == DEFAULT_KEYMAP and problem is not None and "must be a table" in problem


async def test_a_remapped_key_runs_its_action_and_the_old_one_does_not(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    keymap, problem = keymap_from('[keymap]\ntoggle_sidebar = "f9"\nsend = "f5"\nregenerate = ""\n')
    assert problem is None
    app = make_app(keymap=keymap)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        sidebar = screen.sidebar
        await pilot.press("ctrl+b")  # the old key: nothing
        await pilot.pause()
        assert sidebar.display
        await pilot.press("f9")
        await pilot.pause()
        assert not sidebar.display
        await pilot.press("f9")
        await pilot.pause()
        assert sidebar.display
        # the message box: Enter no longer sends, F5 does
        prompt = screen.query_one(PromptInput)
        prompt.focus()
        await pilot.press(*"hi", "enter", *"there")
        await pilot.pause()
        assert prompt.text == "hi\nthere" and screen.conversation is None
        engine.queue("hello")
        await pilot.press("f5")
        await settle(pilot)
        assert screen.conversation is not None
        assert [m.content for m in screen.conversation.messages] == ["hi\nthere", "hello"]
        # an action left without keys: Ctrl+R does nothing, the palette still has it
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert [m.content for m in screen.conversation.messages] == ["hi\nthere", "hello"]
        assert "Regenerate" in [c.title for c in app.get_system_commands(screen)]
        # the help shows the keys in effect
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        rows = {
            str(r.query_one(".what").render()): str(r.query_one(".key").render())
            for r in app.screen.query(".help-row")
        }
        assert rows["show or hide the conversation list"] == "F9"
        assert rows["send the message"] == "F5"
        assert not any("answer your last message again" in what for what in rows)


async def test_texts_name_the_remapped_keys(
    make_app: AppFactory, engine: ScriptedEngine, store
) -> None:  # type: ignore[no-untyped-def]
    from mixchat.conversation import Message, Role

    keymap, problem = keymap_from('[keymap]\nregenerate = "f8"\n')
    assert problem is None
    conv = store.create_conversation(
        model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "still there?")
    )
    app = make_app(resume_id=conv.id, keymap=keymap)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        assert screen.status.model_state is ModelState.READY
        assert screen.status.reply_state is ReplyState.ANSWERABLE
        assert screen.status.state == "unanswered: F8 answers"
        assert any("F8 answers it" in n for n in notes(app))
        engine.queue("yes")
        await pilot.press("f8")
        await settle(pilot)
        assert screen.status.reply_state is ReplyState.NONE
        assert [m.content for m in store.get_conversation(conv.id).messages] == [
            "still there?",
            "yes",
        ]


async def test_bad_entries_one_notification_and_the_app_starts(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    keymap, problem = keymap_from(
        '[keymap]\nnope = "f9"\nnew = "ctrl+qq"\nstop = "ctrl+n"\ntoggle_sidebar = "f10"\n'
    )
    assert problem is not None
    app = make_app(keymap=keymap, keymap_problem=problem)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        keymap_notes = [n for n in app._notifications if n.title == "Keymap"]
        assert len(keymap_notes) == 1 and keymap_notes[0].markup is False
        text = keymap_notes[0].message
        for named in ("unknown action 'nope'", "new:", "stop: 'Ctrl+N' is already the key of new"):
            assert named in text
        await pilot.press("f10")  # the good entry works
        await pilot.pause()
        assert not screen.sidebar.display
        engine.queue("hi back")
        await type_and_send(pilot, "hi")
        await settle(pilot)
        await pilot.press("ctrl+n")  # the defaults of the bad entries are kept
        await pilot.pause()
        assert screen.conversation is None
