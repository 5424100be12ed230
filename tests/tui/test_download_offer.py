"""The app on a first run that must download: a refused download offers the settings that
fit on the setup screen, and a real download shows its bytes in the status bar."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mixchat.config import Settings
from mixchat.engine.base import DownloadRefused, LoadProgress, Notice
from mixchat.engine.scripted import ScriptedEngine
from mixchat.tui.messages import ModelLoading
from mixchat.tui.screens.setup import ModelSetupScreen
from tests.hub_standin import StandInHub, repo_from_dir, use_hub
from tests.tui.conftest import AppFactory
from tests.tui.helpers import screen_text, settle, until

REFUSAL = (
    "mistralai/Mixtral-8x7B-Instruct-v0.1 (93.4 GB to download) in full precision needs "
    "~98.1 GB, more than this machine has (one GPU with 85.9 GB free); with --4bit it fits "
    "(~29.1 GB): add --4bit. Nothing was downloaded."
)


class RefusingEngine(ScriptedEngine):
    """Refuses to download, as the real engine does when bf16 does not fit."""

    def load(self) -> Iterator[LoadProgress | Notice]:
        yield LoadProgress("resolve", 0, 1)
        raise DownloadRefused(REFUSAL, {"quantization": "4bit"}, "--4bit")


async def test_a_refused_download_offers_what_fits_and_loads_it(make_app: AppFactory) -> None:
    made: list[Settings] = []

    def factory(settings: Settings) -> ScriptedEngine:
        made.append(settings)
        return RefusingEngine() if settings.quantization == "none" else ScriptedEngine()

    app = make_app(settings=Settings(), engine_factory=factory)
    async with app.run_test(size=(100, 30)) as pilot:
        await app.wait_for_model()
        await settle(pilot)
        assert isinstance(app.screen, ModelSetupScreen)
        shown = " ".join(" ".join(screen_text(app)).split())
        assert "add --4bit. Nothing was downloaded." in shown
        assert "O download and load it with --4bit (fits this machine)" in shown
        await pilot.press("o")
        await app.wait_for_model()
        await settle(pilot)
        assert app.screen is app.chat_screen
        assert [s.quantization for s in made] == ["none", "4bit"]
        assert app.settings.quantization == "4bit" and app.engine is not None
        assert app.chat_screen.status.state == "ready"


async def test_without_an_offer_the_key_does_nothing(make_app: AppFactory) -> None:
    app = make_app(engine_factory=lambda _s: ScriptedEngine(load_error="no model here"))
    async with app.run_test(size=(100, 30)) as pilot:
        await app.wait_for_model()
        await settle(pilot)
        assert isinstance(app.screen, ModelSetupScreen)
        assert "download and load it with" not in " ".join(screen_text(app))
        await pilot.press("o")
        await settle(pilot)
        assert isinstance(app.screen, ModelSetupScreen)


@pytest.fixture
def hub(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandInHub]:
    server = StandInHub({"test/tiny-app": repo_from_dir(tiny_model)}).start()
    use_hub(monkeypatch, server, tmp_path)
    yield server
    server.stop()


async def test_the_status_bar_shows_a_real_download_in_bytes(
    make_app: AppFactory, hub: StandInHub, tiny_model: Path
) -> None:
    from mixchat.engine.transformers import TransformersEngine

    seen: list[LoadProgress] = []
    shown: list[str] = []
    app = make_app(settings=Settings(model="test/tiny-app"), engine_factory=TransformersEngine)

    def hook(message: object) -> None:
        if isinstance(message, ModelLoading) and message.progress.stage == "download":
            seen.append(message.progress)

    hub.hold_after["model.safetensors"] = 11 << 20  # past huggingface_hub's first 10 MiB chunk
    async with app.run_test(size=(120, 30), message_hook=hook) as pilot:
        status = app.chat_screen.status
        await until(pilot, lambda: "MB/" in status.state, "the download in the status bar")
        shown.append(status.state)
        hub.release()
        await app.wait_for_model()
        await settle(pilot)
        assert app.engine is not None, app.model_error
    total = sum(p.stat().st_size for p in tiny_model.iterdir() if p.is_file())
    done = [event.done for event in seen]
    assert done == sorted(set(done)) and done[-1] == total
    assert {event.total for event in seen} == {total}
    # e.g. "loading download 14.5 MB/21.3 MB (68%) · 50.2 MB/s, 0 s left · model.safetensors"
    assert shown[0].startswith("loading download ") and " MB/s, " in shown[0], shown
    # The file named is the one that wrote last: files download two at a time, so it is
    # the held weights or a small file that finished meanwhile (tokenizer.json).
    names = {p.name for p in tiny_model.iterdir() if p.is_file()}
    assert shown[0].rsplit(" · ", 1)[1] in names, shown
