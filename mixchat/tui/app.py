"""The interactive app. Thin: it owns the store, the engine, the theme and the keymap;
the chat screen does the rest. The engine is handed in as a factory, so this module
never imports torch or transformers. The model loads on a daemon thread (not a Textual
worker: loading cannot be interrupted, and quitting must not wait for it) while the UI
is already usable; the thread only posts messages, and the engine reaches the app in
``ModelReady``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from textual import on
from textual.app import App, SystemCommand
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from mixchat.config import Settings, SettingsSources
from mixchat.engine.base import DownloadRefused, Engine, EngineError, LoadProgress, Notice
from mixchat.presets import Preset
from mixchat.store import ConversationStore
from mixchat.textsafe import neutralize
from mixchat.tui.actions import Where, bindings
from mixchat.tui.files import save_text
from mixchat.tui.keymap import DEFAULT_KEYMAP, Keymap
from mixchat.tui.messages import ModelFailed, ModelLoading, ModelNotice, ModelReady
from mixchat.tui.palette import palette_commands, replaced_system_commands
from mixchat.tui.screens.chat import ChatScreen
from mixchat.tui.screens.modals import HelpScreen
from mixchat.tui.screens.setup import MachineCheck, ModelSetupScreen
from mixchat.tui.themes import ThemeManager

EngineFactory = Callable[[Settings], Engine]
CSS_FILE = Path(__file__).with_name("mixchat.tcss")


class MixchatApp(App[None]):
    """Chat with a local model."""

    TITLE = "mixchat"
    CSS_PATH = CSS_FILE
    # Classes for every screen by terminal size; mixchat.tcss lays out small terminals.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (70, "-medium"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]
    BINDINGS = bindings(Where.APP)

    def __init__(
        self,
        settings: Settings,
        engine_factory: EngineFactory,
        store: ConversationStore,
        resume_id: str | None = None,
        on_theme_saved: Callable[[str], None] | None = None,
        flags: Mapping[str, Any] | None = None,
        check_machine: MachineCheck | None = None,
        keymap: Keymap | None = None,
        keymap_problem: str | None = None,
        preset: Preset | None = None,
    ) -> None:
        """``check_machine`` sums up what ``mixchat doctor`` finds, for the screen shown
        when no model loads; it runs on a worker thread (it imports torch). ``keymap``:
        the user's keys (``mixchat.tui.keymap.load_keymap`` checked them);
        ``keymap_problem``: its bad entries, left out, shown once when the app starts."""
        super().__init__()
        self.keymap = keymap or DEFAULT_KEYMAP
        self.keymap_problem = keymap_problem
        self.set_keymap(self.keymap.textual_keymap())
        # ``settings``: defaults, config and environment; ``flags``: the command line's;
        # ``preset``: --preset's, for new conversations.
        self.sources = SettingsSources(settings, dict(flags or {}), preset)
        self.settings = self.sources.effective()
        self.engine_factory = engine_factory
        self.store = store
        self.resume_id = resume_id
        self.engine: Engine | None = None
        self.model_error: str | None = None  # why the model did not load
        self.model_offer: tuple[dict[str, str], str] | None = None  # settings that would fit
        self._loading_engine: Engine | None = None  # closed on quit: stops a download
        self.check_machine = check_machine
        self.themes = ThemeManager(self, on_saved=on_theme_saved)
        self._model_settled = asyncio.Event()

    async def wait_for_model(self) -> None:
        """Wait until the model has loaded or failed to (for tests and scripts)."""
        await self._model_settled.wait()

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Every notification is plain text: messages carry model ids, paths, titles and
        engine or server errors, so they are never parsed as markup (``markup`` is
        ignored), and control characters are shown as escapes."""
        super().notify(
            neutralize(str(message)),
            title=neutralize(str(title)),
            severity=severity,
            timeout=timeout,
            markup=False,
        )

    def action_help_quit(self) -> None:
        """Ctrl+C outside a text field: say how to quit (Textual's own note uses markup)."""
        self.notify(
            f"Press {self.keymap.say('quit')} to quit the app.", title="Do you want to quit?"
        )

    def validate_theme(self, theme_name: str) -> str:
        """Every theme change is vetted first: one that would break a widget is refused."""
        themes = getattr(self, "themes", None)  # None while App.__init__ sets the default
        return themes.validate(theme_name) if themes is not None else theme_name

    def get_default_screen(self) -> Screen[None]:
        return ChatScreen(self.store, self.sources, self.resume_id)

    @property
    def chat_screen(self) -> ChatScreen:
        screen = self.screen_stack[0] if self.screen_stack else None
        if not isinstance(screen, ChatScreen):
            raise RuntimeError("the chat screen is not installed")
        return screen

    async def on_mount(self) -> None:
        self.themes.install(self.settings.theme)
        if self.keymap_problem is not None:
            self.notify(
                self.keymap_problem, title="Keymap", severity="warning", timeout=15, markup=False
            )
        self.load_model()

    # -- the model ----------------------------------------------------------

    def load_model(self) -> None:
        """Load the model on a background thread (again, after a failure)."""
        self._model_settled.clear()
        if self.model_error is not None:  # trying again
            self.model_error = None
            self.chat_screen.model_loading(None)
        # A daemon thread rather than a Textual worker: loading Mixtral takes minutes and
        # cannot be interrupted, and quitting must not wait for it.
        self._loader = threading.Thread(
            target=self._load_in_thread, name="mixchat-load", daemon=True
        )
        self._loader.start()

    def _load_in_thread(self) -> None:
        try:
            engine = self.engine_factory(self.settings)
        except Exception as exc:  # a broken factory is a load failure like any other
            self.post_message(ModelFailed(f"{type(exc).__name__}: {exc}"))
            return
        self._loading_engine = engine
        try:
            for event in engine.load():
                if isinstance(event, LoadProgress):
                    self.post_message(ModelLoading(event))
                elif isinstance(event, Notice):
                    self.post_message(ModelNotice(event.message))
        except Exception as exc:
            engine.close()
            message = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, DownloadRefused) and exc.offer:
                self.post_message(ModelFailed(message, exc.offer, exc.flags))
            else:
                self.post_message(ModelFailed(message))
            return
        finally:
            self._loading_engine = None
        if not self.post_message(ModelReady(engine, engine.info())):
            engine.close()  # the app is closing: nobody will use it

    @on(ModelLoading)
    def on_model_loading(self, message: ModelLoading) -> None:
        self.chat_screen.model_loading(message.progress)

    @on(ModelNotice)
    def on_model_notice(self, message: ModelNotice) -> None:
        self.notify(message.text, severity="warning", markup=False)

    @on(ModelReady)
    def on_model_ready(self, message: ModelReady) -> None:
        self.engine = message.engine
        self.model_error = None
        self.chat_screen.model_ready(message.engine)
        self._model_settled.set()

    @on(ModelFailed)
    def on_model_failed(self, message: ModelFailed) -> None:
        self.model_error = message.error
        self.model_offer = (message.offer, message.flags) if message.offer else None
        self.chat_screen.model_failed(message.error)
        if self.resume_id is None and self.chat_screen.conversation is None:
            self.action_model_setup()  # the first run: nothing else to show
        else:  # a resumed conversation stays in view
            self.notify(
                f"{message.error}\n{self.keymap.say('palette')}, Model setup: how to get a model.",
                title="No model loaded",
                severity="error",
                timeout=10,
                markup=False,
            )
        self._model_settled.set()

    def action_model_setup(self) -> None:
        """Show what is missing and how to get a model (when none is loaded)."""
        if self.model_error is None:
            self.notify("The model is loaded." if self.engine else "The model is loading.")
            return
        if not isinstance(self.screen, ModelSetupScreen):
            screen = ModelSetupScreen(
                self.model_error,
                self.settings,
                self.check_machine,
                self.load_model,
                offer=self.model_offer,
                accept=self.accept_offer,
            )
            self.push_screen(screen)

    def accept_offer(self, offer: dict[str, str]) -> None:
        """Load with the settings a refused download offered (``--4bit``, say), as if they
        had been given on the command line."""
        self.sources = self.sources.with_flags(offer)
        self.settings = self.sources.effective()
        control = self.chat_screen.control
        control.sources = control.sources.with_flags(offer)
        self.model_offer = None
        self.load_model()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place worker errors end up: shown, never fatal."""
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            error = event.worker.error
            self.notify(f"{type(error).__name__}: {error}", title="Error", severity="error")

    # -- actions ------------------------------------------------------------

    def copy_text(self, text: str, what: str) -> None:
        """Copy ``text`` (``what`` names it in the notification) as the ``clipboard``
        setting says: OSC 52 through the terminal, or a clipboard tool (on a thread: a
        tool may take a moment), and say which worked."""
        import os

        from mixchat.clipboard import copy_text

        def osc52(data: str) -> None:
            self.call_from_thread(self.copy_to_clipboard, data)

        def copy() -> None:
            copied = copy_text(text, what, self.settings.clipboard, os.environ, osc52)
            self.call_from_thread(
                self.notify, copied.message, severity=copied.severity, markup=False
            )

        threading.Thread(target=copy, name="mixchat-copy", daemon=True).start()

    def action_help(self) -> None:
        """Show every key."""
        self.push_screen(HelpScreen(self.keymap))

    def action_pick_theme(self) -> None:
        """Choose a theme (built-in mixchat themes, Textual's and your own)."""
        self.search_themes()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Model setup is offered only when no model is loaded."""
        if action == "model_setup":
            return self.model_error is not None
        return True

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The palette: Textual's entries that the action table does not replace, then
        the table's."""
        replaced = replaced_system_commands()
        yield from (c for c in super().get_system_commands(screen) if c.title not in replaced)
        yield from palette_commands(self, self.chat_screen)

    def action_take_screenshot(self) -> None:
        """Save an SVG of the screen, once the palette (if it was used) has closed."""
        self.set_timer(0.1, self.action_save_screenshot)

    def action_save_screenshot(self) -> None:
        """Save an SVG of the screen in the current (or data) directory and say where."""
        name = f"mixchat-{time.strftime('%Y%m%d-%H%M%S')}.svg"
        save_text(self, name, self.export_screenshot(), "Screenshot saved")

    async def action_quit(self) -> None:
        """Stop any answer (its partial text is saved) and leave."""
        if self.chat_screen.quit_after_reply():
            # The reply worker saves the partial answer as stopped, then the screen
            # leaves; the timer is a fallback should the engine not stop in time.
            self.set_timer(5, self.exit)
            return
        self.exit()

    def on_unmount(self) -> None:
        for engine in (self.engine, self._loading_engine):
            if engine is not None:
                engine.close()  # a download in progress stops, keeping its finished files
