"""Message selection: Ctrl+Up selects the last message, Up/Down and K/J move, Esc leaves;
the selected message can be copied (whole, or its Nth code block, numbered on screen),
edited or answered again (a new version beside the old one), forked or deleted."""

from __future__ import annotations

import threading

from textual.content import Content

from mixchat.config import Settings
from mixchat.conversation import Conversation, Message, Role
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from mixchat.tui.app import MixchatApp
from mixchat.tui.keymap import Keymap
from mixchat.tui.screens.chat import ChatScreen
from mixchat.tui.screens.modals import ConfirmScreen
from mixchat.tui.widgets.chat_view import INITIAL_MESSAGES, AssistantBlock, ChatView, UserBlock
from mixchat.tui.widgets.code_stream import CodeFence
from mixchat.tui.widgets.prompt_input import PromptInput
from tests.tui.conftest import AppFactory
from tests.tui.helpers import ready, screen_text, settle, type_and_send, until

SIZE = (100, 40)
CODE_ANSWER = "Two ways:\n\n```python\nprint('one')\n```\n\nor\n\n```sh\necho two\n```\n\nDone."


def saved(store: ConversationStore, *texts: str) -> Conversation:
    """A saved conversation of alternating user and assistant messages."""
    conv = store.create_conversation(
        model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, texts[0])
    )
    for n, text in enumerate(texts[1:], 1):
        store.append_message(conv.id, Message(Role.ASSISTANT if n % 2 else Role.USER, text))
    return store.get_conversation(conv.id)


def selected(screen: ChatScreen) -> str:
    """The text of the message marked selected on screen (exactly one)."""
    blocks = list(screen.chat.query(".selected"))
    assert len(blocks) == 1
    assert isinstance(blocks[0], (UserBlock, AssistantBlock))
    return blocks[0].source


def contents(store: ConversationStore, conv_id: str) -> list[str]:
    return [m.content for m in store.get_conversation(conv_id).messages]


async def copied(pilot, app: MixchatApp, count: int) -> None:  # type: ignore[no-untyped-def]
    await until(
        pilot,
        lambda: len([n for n in app._notifications if "opied" in n.message]) >= count,
        f"{count} copies",
    )


async def test_moving_the_selection_marks_and_scrolls(
    make_app: AppFactory, store: ConversationStore
) -> None:
    long = "\n\n".join(f"paragraph {n}" for n in range(30))
    conv = saved(store, "first question", long, "second question", "second answer")
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        assert not screen.chat.query(".selected")
        await pilot.press("ctrl+up")
        await settle(pilot)
        assert selected(screen) == "second answer"
        assert isinstance(app.focused, ChatView)
        await pilot.press("up")
        assert selected(screen) == "second question"
        await pilot.press("k", "k")  # to the first question, far above: scrolled to
        await settle(pilot)
        assert selected(screen) == "first question"
        assert any("first question" in line for line in screen_text(app))
        await pilot.press("up")  # the first stays selected
        assert selected(screen) == "first question"
        await pilot.press("j", "down")
        assert selected(screen) == "second question"
        await pilot.press("escape")
        await settle(pilot)
        assert not screen.chat.query(".selected")
        assert isinstance(app.focused, PromptInput)
        await pilot.press("j")  # typed again
        assert app.query_one(PromptInput).text == "j"


async def test_copy_the_message_and_its_numbered_code_blocks(
    make_app: AppFactory, store: ConversationStore
) -> None:
    conv = saved(store, "Show me\n```\nuser code\n```", CODE_ANSWER, "thanks", "welcome")
    app = make_app(resume_id=conv.id, settings=Settings(model="m", clipboard="osc52"))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+up", "up", "up")
        await settle(pilot)
        assert selected(screen) == CODE_ANSWER
        block = screen.chat.query_one(".selected", AssistantBlock)
        fences = list(block.query(CodeFence))
        # each drawn block is numbered; the numbers are on the screen
        assert [f.border_title for f in fences] == [Content("[1] python"), Content("[2] sh")]
        shown = "\n".join(screen_text(app))
        assert "[1] python" in shown and "[2] sh" in shown
        await pilot.press("2")
        await copied(pilot, app, 1)
        assert app.clipboard == "echo two\n"
        await pilot.press("1")
        await copied(pilot, app, 2)
        assert app.clipboard == "print('one')\n"
        await pilot.press("3")  # there is none: said, nothing copied
        await until(pilot, lambda: any("no [3]" in n.message for n in app._notifications), "3")
        assert app.clipboard == "print('one')\n"
        await pilot.press("c")
        await copied(pilot, app, 3)
        assert app.clipboard == CODE_ANSWER
        # a user message's code block is numbered too (under it) and copied
        await pilot.press("up")
        await settle(pilot)
        assert "code: [1]" in "\n".join(screen_text(app))
        await pilot.press("1")
        await copied(pilot, app, 4)
        assert app.clipboard == "user code\n"
        # leaving the selection unnumbers the blocks
        await pilot.press("escape")
        await settle(pilot)
        assert all(f.border_title is None for f in screen.chat.query(CodeFence))


async def test_edit_an_earlier_question_makes_a_version_beside_it(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    conv = saved(store, "q1", "a1", "q2", "a2")
    engine.queue("a1 anew")
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+up", "up", "up", "up", "e")
        await settle(pilot)
        prompt = app.query_one(PromptInput)
        assert prompt.text == "q1" and app.focused is prompt
        prompt.text = "q1 better"
        await pilot.press("enter")
        await settle(pilot)
        assert contents(store, conv.id) == ["q1 better", "a1 anew"]
        assert [m.content for m in engine.requests[-1][0]] == ["q1 better"]
        assert [b.source for b in screen.chat.query(".message")] == ["q1 better", "a1 anew"]
        await pilot.press("alt+left")  # the old version and what followed it stay
        await settle(pilot)
        assert contents(store, conv.id) == ["q1", "a1", "q2", "a2"]
        assert [b.source for b in screen.chat.query(".message")] == ["q1", "a1", "q2", "a2"]


async def test_edit_is_only_for_the_users_messages(
    make_app: AppFactory, store: ConversationStore
) -> None:
    conv = saved(store, "q1", "a1")
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+up", "e")
        await settle(pilot)
        assert app.query_one(PromptInput).text == ""
        assert any("Only your own" in n.message for n in app._notifications)
        assert contents(store, conv.id) == ["q1", "a1"]


async def test_regenerate_an_earlier_answer_makes_a_sibling(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    conv = saved(store, "q1", "a1", "q2", "a2")
    engine.queue("a1 again")
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+up", "up", "up", "r")
        await settle(pilot)
        assert [m.content for m in engine.requests[-1][0]] == ["q1"]
        assert contents(store, conv.id) == ["q1", "a1 again"]
        assert [b.source for b in screen.chat.query(".message")] == ["q1", "a1 again"]
        await pilot.press("alt+left")
        await settle(pilot)
        assert contents(store, conv.id) == ["q1", "a1", "q2", "a2"]


async def test_fork_from_here_has_exactly_the_messages_up_to_the_selection(
    make_app: AppFactory, store: ConversationStore
) -> None:
    conv = saved(store, "q1", "a1", "q2", "a2")
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+up", "up", "up", "f")
        await settle(pilot)
        assert len(store.list_conversations()) == 2
        assert screen.conversation is not None and screen.conversation.id != conv.id
        assert contents(store, screen.conversation.id) == ["q1", "a1"]
        assert [b.source for b in screen.chat.query(".message")] == ["q1", "a1"]
        assert contents(store, conv.id) == ["q1", "a1", "q2", "a2"]  # untouched


async def test_delete_from_here_asks_then_removes_only_that_and_below(
    make_app: AppFactory, store: ConversationStore
) -> None:
    conv = saved(store, "q1", "a1", "q2", "a2", "q3", "a3")
    # a version of a1 beside it: it stays
    assert conv.messages[1].id is not None
    store.add_sibling(conv.messages[1].id, Message(Role.ASSISTANT, "a1 other"))
    store.switch_to(conv.messages[5].id)  # type: ignore[arg-type]
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+up", "up", "up", "up", "d")  # q2
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert any("Delete this message and the 3 under it?" in line for line in screen_text(app))
        await pilot.press("n")  # no: nothing changes
        await settle(pilot)
        assert contents(store, conv.id) == ["q1", "a1", "q2", "a2", "q3", "a3"]
        assert selected(screen) == "q2"
        await pilot.press("d")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert contents(store, conv.id) == ["q1", "a1"]
        assert [b.source for b in screen.chat.query(".message")] == ["q1", "a1"]
        assert selected(screen) == "a1"
        store.switch_to(conv.messages[1].id)  # type: ignore[arg-type]
        siblings = store.siblings(conv.messages[1].id)  # type: ignore[arg-type]
        assert [m.content for m in siblings] == ["a1", "a1 other"]


async def test_changes_are_refused_while_an_answer_streams(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    conv = saved(store, "q1", "a1")
    gate = threading.Event()
    engine.queue("slow ", "answer", gate=gate, gate_from=1)
    app = make_app(resume_id=conv.id, settings=Settings(model="m", clipboard="osc52"))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await ready(pilot)
        await type_and_send(pilot, "q2")
        await until(pilot, lambda: screen.streaming_text == "slow ", "streaming")
        await pilot.press("ctrl+up")
        await pilot.pause()  # not settle: the reply's worker waits for the gate
        assert selected(screen) == "q2"  # the streaming reply is not selectable
        for key in ("d", "f", "e", "up", "r"):
            await pilot.press(key)
        await pilot.pause()
        refusals = [n for n in app._notifications if "streaming" in n.message]
        assert len(refusals) == 4
        assert not isinstance(app.screen, ConfirmScreen)
        assert len(store.list_conversations()) == 1
        assert app.query_one(PromptInput).text == ""
        await pilot.press("c")  # copying is fine
        await copied(pilot, app, 1)
        assert app.clipboard == "a1"
        gate.set()
        await settle(pilot)
        assert contents(store, conv.id) == ["q1", "a1", "q2", "slow answer"]


async def test_the_selection_reaches_messages_not_drawn_yet(
    make_app: AppFactory, store: ConversationStore
) -> None:
    texts = [f"message {n}" for n in range(INITIAL_MESSAGES + 4)]
    conv = saved(store, *texts)
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        assert screen.chat.hidden_count == 4
        await pilot.press("ctrl+up", *["up"] * (len(texts) - 1))
        await settle(pilot)
        assert selected(screen) == "message 0"
        assert screen.chat.hidden_count == 0
        assert any("message 0" in line for line in screen_text(app))


async def test_remapped_keys_act_and_are_named(
    make_app: AppFactory, store: ConversationStore
) -> None:
    conv = saved(store, "q1", CODE_ANSWER)
    keymap = Keymap({"copy_message": ("y",), "copy_block_2": ("x",), "select_messages": ("f5",)})
    app = make_app(
        resume_id=conv.id, settings=Settings(model="m", clipboard="osc52"), keymap=keymap
    )
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+up")  # no longer the key
        await settle(pilot)
        assert not screen.chat.query(".selected")
        await pilot.press("f5")
        await settle(pilot)
        block = screen.chat.query_one(".selected", AssistantBlock)
        assert str(block.border_title).startswith("Y copy · R again")
        await pilot.press("c")  # no longer the key: nothing copied
        await pilot.press("x")
        await copied(pilot, app, 1)
        assert app.clipboard == "echo two\n"
        await pilot.press("y")
        await copied(pilot, app, 2)
        assert app.clipboard == CODE_ANSWER


async def test_delete_from_the_first_message_empties_the_conversation(
    make_app: AppFactory, store: ConversationStore
) -> None:
    conv = saved(store, "q1", "a1", "q2", "a2")
    other = saved(store, "kept", "too")
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+up", "up", "up", "up", "delete")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert contents(store, conv.id) == []
        assert not screen.chat.query(".message")
        assert isinstance(app.focused, PromptInput)  # nothing left to select
        assert contents(store, other.id) == ["kept", "too"]


async def test_a_new_conversation_ends_the_selection(
    make_app: AppFactory, store: ConversationStore
) -> None:
    conv = saved(store, "q1", "a1")
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await pilot.press("ctrl+up", "ctrl+n")
        await settle(pilot)
        assert not screen.selection.active
        await pilot.press("escape", "x")  # Esc is not taken by a selection left behind
        assert app.query_one(PromptInput).text == "x"
