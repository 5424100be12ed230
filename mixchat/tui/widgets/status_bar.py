"""One line at the bottom: model, quantization, attention, device, state, speed, context.

The state is typed and has two layers: the model's (``ModelState``: loading, with its
progress; ready; no model) and the open conversation's (``ReplyState``: generating,
stopped, cut, error, unanswered, waiting), which shows when set and is cleared when
another conversation opens. Only this widget turns them into words.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from rich.cells import cell_len
from rich.text import Text
from textual import on, work
from textual.reactive import reactive
from textual.widgets import Static

from mixchat.conversation import Message
from mixchat.engine.base import Engine, LoadProgress, ModelInfo, Usage, count_context_tokens
from mixchat.textsafe import neutralize
from mixchat.tui.keymap import keymap_of
from mixchat.tui.messages import ContextCounted
from mixchat.turn import Ending, TurnOutcome


class ModelState(enum.StrEnum):
    """The model's state (the value is what the status bar shows)."""

    LOADING = "loading"
    READY = "ready"
    NO_MODEL = "no model"


class ReplyState(enum.StrEnum):
    """The open conversation's state (the value is what the status bar shows)."""

    NONE = ""  # nothing to say: the model's state shows
    GENERATING = "generating"
    STOPPED = "stopped"
    CUT = "cut at the token limit"
    ERROR = "error"
    UNANSWERED = "unanswered"  # the last message has no answer, and none is coming
    ANSWERABLE = "unanswered: {regenerate} answers"  # ... and the model can answer it
    WAITING = "waiting for the model"  # it will be answered once the model has loaded

    @classmethod
    def after(cls, outcome: TurnOutcome) -> ReplyState:
        """The state a reply leaves behind, by how it ended."""
        if outcome.error:
            return cls.ERROR
        if outcome.ending is Ending.LENGTH:
            return cls.CUT
        if outcome.ending in (Ending.STOPPED, Ending.INTERRUPTED):
            return cls.STOPPED
        return cls.NONE


BYTE_STAGES = {"download", "bytes"}
BYTE_TOTAL = 1 << 20  # a total this large counts bytes (no model has a million shards)


def _size(count: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def describe_load(event: LoadProgress) -> str:
    """'loading weights 3/8 shards (37%) · model-00003-of-00008.safetensors'.

    Bytes (a download stage, or totals beyond a megabyte) are shown in kB/MB/GB; other
    counts with the unit the event names (an optional ``unit`` attribute), if any.
    """
    text = f"loading {event.stage}"
    if event.total > 1:  # a one-step stage has nothing to count
        done = min(max(event.done, 0), event.total)
        if event.stage in BYTE_STAGES or event.total >= BYTE_TOTAL:
            amount = f"{_size(done)}/{_size(event.total)}"
        else:
            unit = str(getattr(event, "unit", "") or "")
            amount = f"{done}/{event.total}" + (f" {unit}" if unit else "")
        text += f" {amount} ({100 * done // event.total}%)"
    if event.detail:
        text += f" · {' '.join(neutralize(event.detail).split())}"
    return text


class StatusBar(Static):
    """Shows what is loaded and what it is doing."""

    model_state: reactive[ModelState] = reactive(ModelState.LOADING)
    load_progress: reactive[LoadProgress | None] = reactive(None)
    reply_state: reactive[ReplyState] = reactive(ReplyState.NONE)
    tokens_per_s: reactive[float | None] = reactive(None)
    context_used: reactive[int] = reactive(0)

    def __init__(self, model_name: str, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self.model_name = model_name
        self.info: ModelInfo | None = None
        self._count_key = 0  # the newest count; older ones are dropped

    @property
    def state(self) -> str:
        """What is shown as the state: the conversation's, else the model's."""
        if self.reply_state is not ReplyState.NONE:
            return self.reply_state.format(regenerate=keymap_of(self).say("regenerate"))
        if self.model_state is ModelState.LOADING and self.load_progress is not None:
            return describe_load(self.load_progress)
        return self.model_state.value

    def set_info(self, info: ModelInfo) -> None:
        """Record the loaded model's description."""
        self.info = info
        self.refresh_text()

    def show_load(self, event: LoadProgress | None) -> None:
        """The model is loading (again, if ``event`` is None): show how far it has come."""
        self.load_progress = event
        self.model_state = ModelState.LOADING

    def reset(self, context_used: int = 0) -> None:
        """Another conversation is open: drop the last one's state and speed."""
        self._count_key += 1
        self.reply_state = ReplyState.NONE
        self.tokens_per_s = None
        self.context_used = context_used

    def show_usage(self, usage: Usage, live_rate: float | None) -> None:
        """A reply's figures: its speed (else the one measured live) and the context."""
        self._count_key += 1  # exact now: a count still under way is older
        self.tokens_per_s = usage.tokens_per_s or live_rate
        self.context_used = usage.prompt_tokens + usage.completion_tokens

    def count_context(
        self, engine: Engine, messages: Sequence[Message], system_prompt: str | None
    ) -> None:
        """Count the tokens of a conversation on a worker, and show them (engines that
        cannot count leave the figure as it is)."""
        self._count_key += 1
        self._count(engine, list(messages), system_prompt, self._count_key)

    @work(thread=True, group="count", exit_on_error=False)
    def _count(self, engine: Engine, messages: list[Message], system: str | None, key: int) -> None:
        self.post_message(ContextCounted(key, count_context_tokens(engine, messages, system)))

    @on(ContextCounted)
    def _on_counted(self, message: ContextCounted) -> None:
        message.stop()
        if message.count_key == self._count_key and message.tokens is not None:
            self.context_used = message.tokens

    def watch_model_state(self) -> None:
        self.refresh_text()

    def watch_load_progress(self) -> None:
        self.refresh_text()

    def watch_reply_state(self) -> None:
        self.refresh_text()

    def watch_tokens_per_s(self) -> None:
        self.refresh_text()

    def watch_context_used(self) -> None:
        self.refresh_text()

    def on_resize(self) -> None:
        self.refresh_text()

    def refresh_text(self) -> None:
        """Re-render the line. When it is wider than the bar, the model's name shortens to
        its last path part and then the dtype, attention and device go, so that the state,
        the speed and the context (what changes) stay in view."""
        model = neutralize(self.model_name)
        details: list[str] = []
        if self.info is not None:
            details = [
                self.info.quantization if self.info.quantization != "none" else self.info.dtype,
                self.info.attention,
                neutralize(self.info.device),
            ]
        live = [self.state]
        if self.tokens_per_s:
            live.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.info is not None:
            live.append(f"ctx {self.context_used:,}/{self.info.context_size:,}")
        width = self.size.width
        short = model.rstrip("/").rsplit("/", 1)[-1] or model
        for parts in ([model, *details, *live], [short, *details, *live], [short, *live]):
            line = " │ ".join(parts)
            if not width or cell_len(line) <= width:
                break
        self.update(Text(line, no_wrap=True, overflow="ellipsis"))
