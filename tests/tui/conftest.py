"""Fixtures for driving the app with Pilot and a scripted engine."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from textual.app import App

from mixchat.config import Settings, save_setting
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from mixchat.tui.app import MixchatApp
from mixchat.tui.keymap import Keymap

AppFactory = Callable[..., MixchatApp]


@pytest.fixture(autouse=True)
def notifications_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Notifications stay until the test ends: tests count them, and on a slow machine the
    steps between two can take longer than a notification's few seconds on screen."""
    notify = App.notify

    def lasting(self: App[object], message: str, **kwargs: object) -> None:
        kwargs["timeout"] = 3600
        notify(self, message, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(App, "notify", lasting)


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture
def store() -> ConversationStore:
    s = ConversationStore.open()
    yield s  # type: ignore[misc]
    s.close()


@pytest.fixture
def make_app(engine: ScriptedEngine, store: ConversationStore) -> AppFactory:
    def factory(
        resume_id: str | None = None,
        settings: Settings | None = None,
        engine_factory: Callable[[Settings], object] | None = None,
        flags: dict[str, object] | None = None,
        check_machine: Callable[[Settings], list[str]] | None = None,
        keymap: Keymap | None = None,
        keymap_problem: str | None = None,
    ) -> MixchatApp:
        return MixchatApp(
            settings or Settings(model="scripted-model"),
            engine_factory or (lambda _s: engine),  # type: ignore[arg-type]
            store,
            resume_id=resume_id,
            on_theme_saved=lambda name: save_setting("theme", name),
            flags=flags,
            check_machine=check_machine,
            keymap=keymap,
            keymap_problem=keymap_problem,
        )

    return factory
