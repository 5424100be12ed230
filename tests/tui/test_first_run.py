"""No model on disk (the usual first run), retrying, answering what was left unanswered,
and load progress."""

from __future__ import annotations

import threading

from mixchat.config import Settings
from mixchat.conversation import Message, Role
from mixchat.engine.base import LoadProgress
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from mixchat.tui.screens.setup import ModelSetupScreen
from mixchat.tui.widgets.prompt_input import PromptInput
from tests.tui.conftest import AppFactory
from tests.tui.helpers import only_conversation, ready, screen_text, settle, type_and_send, until

UNANSWERED = "unanswered: Ctrl+R answers"  # the status bar, default keys

MISSING = (
    "model 'mistralai/Mixtral-8x7B-Instruct-v0.1' is not in the local Hugging Face cache and "
    "the hub cannot be reached; download it on a connected machine with `hf download "
    "mistralai/Mixtral-8x7B-Instruct-v0.1` or pass --model /path/to/a/local/model/directory"
)
MACHINE = [
    "Python 3.11.7, torch 2.13.0, no CUDA GPU (CPU only)",
    "mistralai/Mixtral-8x7B-Instruct-v0.1 (none) needs ~98.1 GB: no GPU: the full model",
]


def missing_engine(**kwargs: object) -> ScriptedEngine:
    return ScriptedEngine(load_events=[LoadProgress("resolve", 0, 1)], load_error=MISSING, **kwargs)  # type: ignore[arg-type]


def notes(app) -> list[str]:  # type: ignore[no-untyped-def]
    return [n.message for n in app._notifications]


async def test_first_run_screen_at_80x24(make_app: AppFactory) -> None:
    checked_on: list[threading.Thread] = []

    def check(settings: Settings) -> list[str]:
        checked_on.append(threading.current_thread())
        return MACHINE

    app = make_app(
        settings=Settings(),  # the default model: Mixtral from the hub
        engine_factory=lambda _s: missing_engine(),
        check_machine=check,
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await app.wait_for_model()
        await settle(pilot)
        assert isinstance(app.screen, ModelSetupScreen)
        lines = screen_text(app)
        shown = " ".join(" ".join(lines).split())  # wrapped lines joined
        assert "No model loaded" in shown
        assert "not in the local Hugging Face cache" in shown
        for command in (
            "hf download mistralai/Mixtral-8x7B-Instruct-v0.1",
            "mixchat --model DIR",
            "mixchat --endpoint URL --model NAME",
        ):
            assert any(line.strip() == command for line in lines), command  # whole, on screen
        assert MACHINE[0] in shown
        assert checked_on and checked_on[0] is not threading.main_thread()
        assert "Esc" in shown and "R try again" in shown
        assert not app._notifications  # no toast over the input
        assert app.chat_screen.status.state == "no model"
        await pilot.press("escape")
        assert app.screen is app.chat_screen
        assert app.query_one(PromptInput).has_focus


async def test_the_setup_screen_scrolls_when_it_does_not_fit(make_app: AppFactory) -> None:
    long_error = "the model directory is unusable: " + "a very long reason " * 30
    app = make_app(engine_factory=lambda _s: ScriptedEngine(load_error=long_error))
    async with app.run_test(size=(60, 16)) as pilot:
        await app.wait_for_model()
        await settle(pilot)
        setup = app.screen.query_one("#setup")
        assert setup.max_scroll_y > 0
        setup.scroll_end(animate=False)
        await pilot.pause()
        assert "Ctrl+Q quit" in "\n".join(screen_text(app))


async def test_the_setup_screen_shows_what_doctor_says(make_app: AppFactory) -> None:
    """The real doctor, as `mixchat` wires it (torch is imported on the worker)."""
    from mixchat.commands.interactive import check_machine

    app = make_app(
        settings=Settings(), engine_factory=lambda _s: missing_engine(), check_machine=check_machine
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await app.wait_for_model()
        machine = app.screen.query_one("#machine")
        await until(pilot, lambda: "checking" not in str(machine.render()), "doctor's answer")
        said = str(machine.render())
        assert "torch" in said and ("CPU only" in said or "CUDA" in said)
        assert "Mixtral-8x7B" in said


async def test_a_message_without_a_model_says_so(
    make_app: AppFactory, store: ConversationStore
) -> None:
    app = make_app(engine_factory=lambda _s: missing_engine())
    async with app.run_test(size=(80, 24)) as pilot:
        await app.wait_for_model()
        await pilot.press("escape")
        screen = app.chat_screen
        await type_and_send(pilot, "hello?")
        await settle(pilot)
        assert only_conversation(store).messages[0].content == "hello?"
        assert not screen.waiting_for_model
        assert screen.status.state == "unanswered"
        assert any("No model is loaded" in n for n in notes(app))
        assert not any("waiting" in n for n in notes(app))
        assert app.query_one(PromptInput).text == ""


async def test_a_message_sent_while_loading_is_not_left_waiting_when_loading_fails(
    make_app: AppFactory, store: ConversationStore
) -> None:
    gate = threading.Semaphore(0)
    engine = missing_engine(load_gate=gate)
    app = make_app(engine_factory=lambda _s: engine)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.chat_screen
        await type_and_send(pilot, "early question")
        await pilot.pause()
        assert screen.waiting_for_model and screen.status.state == "waiting for the model"
        gate.release()
        await app.wait_for_model()
        await pilot.pause()
        assert not screen.waiting_for_model
        assert screen.status.state == "unanswered"
        assert only_conversation(store).messages[0].content == "early question"


async def test_try_again_loads_the_model_and_offers_to_answer(
    make_app: AppFactory, store: ConversationStore
) -> None:
    working = ScriptedEngine()
    working.queue("finally an answer")
    engines = iter([missing_engine(), working])
    app = make_app(engine_factory=lambda _s: next(engines))
    async with app.run_test(size=(80, 24)) as pilot:
        await app.wait_for_model()
        await pilot.press("escape")
        await type_and_send(pilot, "are you there?")
        await settle(pilot)
        await pilot.press("ctrl+p")  # the palette reopens the setup screen
        await pilot.press(*"Model setup")
        await pilot.pause()
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ModelSetupScreen)
        await pilot.press("r")  # the model was downloaded meanwhile
        screen = await ready(pilot)
        assert app.screen is screen and screen.status.model_state == "ready"
        assert working.requests == []  # offered, not answered behind the user's back
        assert screen.status.state == UNANSWERED
        assert any("Ctrl+R answers it" in n for n in notes(app))
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert [m.content for m in only_conversation(store).messages] == [
            "are you there?",
            "finally an answer",
        ]
        assert screen.status.state == "ready"


async def test_an_unanswered_question_is_offered_after_a_restart(
    make_app: AppFactory, engine: ScriptedEngine, store: ConversationStore
) -> None:
    conv = store.create_conversation(
        model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "still there?")
    )
    engine.queue("yes")
    app = make_app(resume_id=conv.id)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        assert engine.requests == []
        assert screen.status.state == UNANSWERED
        assert any("Ctrl+R answers it" in n for n in notes(app))
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert [m.content for m in store.get_conversation(conv.id).messages] == [
            "still there?",
            "yes",
        ]


async def test_load_progress_shows_stage_amount_and_detail(make_app: AppFactory) -> None:
    events = [
        LoadProgress("resolve", 0, 1, "mistralai/Mixtral-8x7B-Instruct-v0.1"),
        LoadProgress("download", 1_500_000_000, 4_000_000_000, "model-00001-of-00002"),
        LoadProgress("weights", 3, 8, "model-00003-of-00008.safetensors"),
        LoadProgress("weights", 2_500_000_000, 10_000_000_000, "[bold]not markup[/bold]"),
    ]
    expected = [
        "loading resolve · mistralai/Mixtral-8x7B-Instruct-v0.1",
        "loading download 1.5 GB/4.0 GB (37%) · model-00001-of-00002",
        "loading weights 3/8 (37%) · model-00003-of-00008.safetensors",
        "loading weights 2.5 GB/10.0 GB (25%) · [bold]not markup[/bold]",
    ]
    gate = threading.Semaphore(0)  # one release per event: each is looked at before the next
    engine = ScriptedEngine(load_events=[*events, LoadProgress("weights", 1, 1)], load_gate=gate)
    app = make_app(engine_factory=lambda _s: engine)
    async with app.run_test(size=(160, 24)) as pilot:
        status = app.chat_screen.status
        for text in expected:
            gate.release()
            await until(pilot, lambda text=text: status.state == text, text)  # type: ignore[misc]
            assert text in str(status.render())
        gate.release()
        await app.wait_for_model()
        await pilot.pause()
        assert status.state == "ready"


async def test_a_resumed_conversation_stays_in_view_without_a_model(
    make_app: AppFactory, store: ConversationStore
) -> None:
    conv = store.create_conversation(
        model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "keep me")
    )
    app = make_app(resume_id=conv.id, engine_factory=lambda _s: missing_engine())
    async with app.run_test(size=(80, 24)) as pilot:
        await app.wait_for_model()
        await settle(pilot)
        assert app.screen is app.chat_screen
        assert "keep me" in "\n".join(screen_text(app))
        assert any("not in the local Hugging Face cache" in n for n in notes(app))
        assert app.chat_screen.status.model_state == "no model"
        app.action_model_setup()  # what the palette's "Model setup" runs
        await pilot.pause()
        assert isinstance(app.screen, ModelSetupScreen)
