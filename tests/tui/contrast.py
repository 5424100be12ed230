"""Contrast of what is on screen: WCAG 2 ratios of every text cell's colours."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from rich.color import Color as RichColor
from rich.style import Style
from textual.app import App
from textual.screen import Screen

from tests.tui.screen import screen_segments

DIM_FACTOR = 0.5  # how far a terminal's "dim" blends text toward its background (Textual's)


def luminance(color: RichColor) -> float:
    """WCAG relative luminance of an sRGB colour."""
    triplet = color.get_truecolor()

    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in triplet)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def ratio(fg: RichColor, bg: RichColor) -> float:
    """WCAG contrast ratio, 1 to 21."""
    a, b = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def is_text(char: str) -> bool:
    """Letters, digits, punctuation and symbols; not box drawing, blocks or spaces, nor
    emoji (terminals draw those in their own colours)."""
    if 0x2500 <= ord(char) <= 0x259F or ord(char) >= 0x1F000:
        return False
    return unicodedata.category(char)[0] in "LNPS"


def effective(style: Style) -> tuple[RichColor, RichColor]:
    """The colours a terminal shows for ``style``: reverse swapped, dim blended."""
    fg, bg = style.color, style.bgcolor
    assert fg is not None and bg is not None, f"text with a default colour: {style}"
    if style.reverse:
        fg, bg = bg, fg
    if style.dim:
        (r1, g1, b1), (r2, g2, b2) = bg.get_truecolor(), fg.get_truecolor()
        fg = RichColor.from_rgb(
            r1 + (r2 - r1) * DIM_FACTOR, g1 + (g2 - g1) * DIM_FACTOR, b1 + (b2 - b1) * DIM_FACTOR
        )
    return fg, bg


@dataclass(frozen=True)
class LowContrast:
    """A run of text on screen below the required ratio."""

    text: str
    ratio: float
    fg: str
    bg: str
    widget: str
    where: tuple[int, int]


def low_contrast(app: App[object], minimum: float) -> list[LowContrast]:
    """Every run of text on the current screen whose contrast is below ``minimum``.

    Text under a modal's backdrop (the screen behind it, shaded) is not read, so it is
    not checked; the modal's own widgets are."""
    found: list[LowContrast] = []
    for y, row in enumerate(screen_segments(app)):
        x = 0
        for segment in row:
            text = segment.text
            if segment.style is not None and any(is_text(c) for c in text):
                fg, bg = effective(segment.style)
                value = ratio(fg, bg)
                offset = next(i for i, c in enumerate(text) if is_text(c))
                widget, _ = app.screen.get_widget_at(x + offset, y)
                if value < minimum and not isinstance(widget, Screen):
                    found.append(
                        LowContrast(
                            text.strip(),
                            round(value, 2),
                            fg.get_truecolor().hex,
                            bg.get_truecolor().hex,
                            type(widget).__name__ + "".join(f".{c}" for c in widget.classes),
                            (x + offset, y),
                        )
                    )
            x += segment.cell_length
    return found


def text_colours(app: App[object]) -> set[tuple[str, str]]:
    """The (foreground, background) pairs of all text on screen (for coverage checks)."""
    pairs = set()
    for row in screen_segments(app):
        for segment in row:
            if segment.style is not None and any(is_text(c) for c in segment.text):
                fg, bg = effective(segment.style)
                pairs.add((fg.get_truecolor().hex, bg.get_truecolor().hex))
    return pairs
