"""What is on the screen, read from Textual's compositor (for assertions on rendering)."""

from __future__ import annotations

from rich.segment import Segment
from textual.app import App


def screen_segments(app: App[object]) -> list[list[Segment]]:
    """The current screen as rows of styled segments, exactly as the terminal gets them."""
    return [list(strip) for strip in app.screen._compositor.render_strips()]


def screen_lines(app: App[object]) -> list[str]:
    """The current screen as rows of text."""
    return ["".join(segment.text for segment in row) for row in screen_segments(app)]


def screen_text(app: App[object]) -> str:
    """The current screen as one string, rows joined by newlines."""
    return "\n".join(screen_lines(app))
