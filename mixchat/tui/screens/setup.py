"""The screen shown when no model could be loaded (the usual first run): what is
missing, the commands that get a model, and what ``mixchat doctor`` says about this
machine (checked on a worker thread: it imports torch)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from mixchat.config import Settings
from mixchat.textsafe import neutralize
from mixchat.tui.actions import Where, bindings
from mixchat.tui.keymap import keymap_of
from mixchat.tui.messages import MachineReport

MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
MachineCheck = Callable[[Settings], list[str]]


def _hub_id(model: str) -> str:
    """The configured model when it names a hub repository, else Mixtral's."""
    if HUB_ID.fullmatch(model) and not Path(model).expanduser().exists():
        return model
    return MIXTRAL


def setup_commands(settings: Settings) -> list[tuple[str, str]]:
    """(command, what it does) for each way to get a model."""
    hub_id = _hub_id(settings.model)
    size = " (about 93 GB)" if hub_id == MIXTRAL else ""
    return [
        (f"hf download {hub_id}", f"into the Hugging Face cache{size}; then: mixchat"),
        ("mixchat --model DIR", "a model directory on this machine (safetensors)"),
        ("mixchat --endpoint URL --model NAME", "a server: vLLM, TGI, llama.cpp, ..."),
    ]


def _line(text: str) -> Text:
    return Text(" ".join(neutralize(text).split()))


class ModelSetupScreen(Screen[None]):
    """What to do when there is no model; its keys are ``Where.SETUP``'s in ``actions``."""

    BINDINGS = bindings(Where.SETUP)

    def __init__(
        self,
        error: str,
        settings: Settings,
        check: MachineCheck | None,
        retry: Callable[[], None],
        offer: tuple[dict[str, str], str] | None = None,
        accept: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        """``offer``: settings that would fit and their flags, from a refused download;
        ``accept`` loads with them (key O)."""
        super().__init__()
        self.error = error
        self.settings = settings
        self.check = check
        self.retry = retry
        self.offer = offer if accept is not None else None
        self.accept = accept

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="setup"):
            yield Static("No model loaded", classes="title")
            yield Static(_line(self.error), id="setup-error", classes="error")
            keys = keymap_of(self)
            retry = keys.say("setup_retry")
            if self.offer is not None:
                offer = (
                    f"{keys.say('setup_accept_offer')}  download and load it with {self.offer[1]}"
                )
                yield Static(
                    Text(f"{offer} (fits this machine)"),
                    id="setup-offer",
                    classes="command",
                )
            yield Static(
                Text(f"Get one, then start mixchat again or press {retry}:"), classes="heading"
            )
            for command, what in setup_commands(self.settings):
                yield Static(Text(command), classes="command")
                yield Static(Text(what), classes="what")
            yield Static("This machine (mixchat doctor):", classes="heading")
            checking = "checking…" if self.check else "run `mixchat doctor` to see"
            yield Static(Text(checking), id="machine")
            hint = (
                f"{retry} try again · {keys.say('setup_back')} your conversations "
                f"(messages are saved) · {keys.say('quit')} quit"
            )
            yield Static(Text(hint), classes="hint")

    def on_mount(self) -> None:
        if self.check is not None:
            self._check_machine(self.check, self.settings)

    @work(thread=True, exit_on_error=False)
    def _check_machine(self, check: MachineCheck, settings: Settings) -> None:
        try:
            lines = check(settings)
        except Exception as exc:  # doctor is a help here, never a reason to fail
            lines = [f"could not check: {type(exc).__name__}: {exc}"]
        self.post_message(MachineReport(lines))

    @on(MachineReport)
    def on_machine_report(self, message: MachineReport) -> None:
        message.stop()
        self.query_one("#machine", Static).update(
            Text("\n".join(" ".join(neutralize(line).split()) for line in message.lines))
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.offer is not None if action == "accept_offer" else True

    def action_accept_offer(self) -> None:
        """Load with the settings that fit (``--4bit``, say); the download begins."""
        if self.offer is None or self.accept is None:
            return
        offer = self.offer[0]
        self.app.pop_screen()
        self.accept(offer)

    def action_retry(self) -> None:
        """Load the model again (after downloading it, say)."""
        self.app.pop_screen()
        self.retry()
