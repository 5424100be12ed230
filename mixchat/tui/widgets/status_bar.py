"""One line at the bottom: model, quantization, attention, device, state, speed, context."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from mixchat.engine.base import ModelInfo
from mixchat.textsafe import neutralize


class StatusBar(Static):
    """Shows what is loaded and what it is doing."""

    state: reactive[str] = reactive("loading")
    tokens_per_s: reactive[float | None] = reactive(None)
    context_used: reactive[int] = reactive(0)

    def __init__(self, model_name: str, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self.model_name = model_name
        self.info: ModelInfo | None = None

    def set_info(self, info: ModelInfo) -> None:
        """Record the loaded model's description."""
        self.info = info
        self.refresh_text()

    def watch_state(self) -> None:
        self.refresh_text()

    def watch_tokens_per_s(self) -> None:
        self.refresh_text()

    def watch_context_used(self) -> None:
        self.refresh_text()

    def refresh_text(self) -> None:
        """Re-render the line."""
        parts = [self.model_name]
        if self.info is not None:
            parts += [
                self.info.quantization if self.info.quantization != "none" else self.info.dtype,
                self.info.attention,
                self.info.device,
            ]
        parts.append(self.state)
        if self.tokens_per_s:
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.info is not None:
            parts.append(f"ctx {self.context_used:,}/{self.info.context_size:,}")
        self.update(Text(neutralize(" │ ".join(parts))))
