"""Reading theme files: ``.tcss`` with top-level colour variables and widget styles.

A theme file is ordinary Textual CSS. Its top-level variable definitions
(``$primary: #7aa2f7;``, ``$dark: false;``, ``$footer-background: #222;``) become a
Textual ``Theme``: the palette keys are the theme's colours, any other name one of its
``variables``. The definitions are then cut out of the CSS: Textual's parser copies its
variable table shallowly, so a source that redefines ``$foreground`` appends to the
app-wide token list and every widget CSS parsed after it sees two values (the
``keyline: thin $foreground 20%`` of Markdown tables then fails and takes the app down).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.color import Color, ColorParseError
from textual.css.tokenize import tokenize
from textual.css.tokenizer import TokenError
from textual.theme import Theme

PALETTE_KEYS = (
    "primary",
    "secondary",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
    "warning",
    "error",
    "success",
)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_REFERENCE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_-]*)")


class ThemeError(ValueError):
    """A theme file cannot be used; the message names the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class ThemeFile:
    """A parsed theme file: its ``Theme`` and its CSS without variable definitions."""

    name: str
    path: Path
    css: str
    theme: Theme


def builtin_themes_dir() -> Path:
    """The built-in themes: the repo's ``themes/`` (source or editable install), else the
    copy installed under ``<prefix>/share/mixchat/themes``."""
    beside = Path(__file__).resolve().parents[2] / "themes"
    if beside.is_dir():
        return beside
    return Path(sys.prefix) / "share" / "mixchat" / "themes"


def parse_theme(path: Path) -> ThemeFile:
    """Read a ``.tcss`` theme; ``ThemeError`` names the file and the problem."""
    name = path.stem
    if not NAME.match(name):
        raise ThemeError(path, "a theme's file name may only use letters, digits, '-', '_' and '.'")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ThemeError(path, f"cannot read: {exc}") from None
    try:
        definitions, css = split_definitions(source, path)
    except TokenError as exc:
        problem = f"not valid Textual CSS, line {exc.start[0]}: {plain_markup(str(exc))}"
        raise ThemeError(path, problem) from None
    values = _resolve_local(definitions, path)
    if "primary" not in values:
        raise ThemeError(path, "a theme needs at least `$primary: <colour>;`")
    palette: dict[str, Any] = {}
    for key in PALETTE_KEYS:
        if key in values:
            try:
                Color.parse(values[key])
            except ColorParseError:
                raise ThemeError(path, f"${key}: {values[key]!r} is not a colour") from None
            palette[key] = values[key]
    dark_value = values.get("dark", "true").lower()
    if dark_value not in ("true", "false", "yes", "no", "1", "0"):
        raise ThemeError(path, f"$dark must be true or false, not {dark_value!r}")
    dark = dark_value in ("true", "yes", "1")
    extra = {
        k.replace("_", "-"): v for k, v in values.items() if k not in PALETTE_KEYS and k != "dark"
    }
    try:
        theme = Theme(name=name, dark=dark, **palette)
        generated = theme.to_color_system().generate()
    except Exception as exc:  # Textual's colour maths on odd input
        raise ThemeError(path, f"bad colour: {exc}") from None
    variables: dict[str, str] = {}
    for key, value in extra.items():
        variables[key] = _substitute(value, {**generated, **variables}, path)
    theme = Theme(name=name, dark=dark, variables=variables, **palette)
    return ThemeFile(name, path, css, theme)


def split_definitions(source: str, path: Path) -> tuple[dict[str, str], str]:
    """Top-level ``$name: value;`` definitions (names with ``-`` as ``_``) and the CSS with
    them cut out. Raises ``TokenError`` on CSS that does not tokenize."""
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(location: tuple[int, int]) -> int:
        return starts[location[0]] + location[1]

    definitions: dict[str, str] = {}
    cuts: list[tuple[int, int]] = []
    name: str | None = None
    begin = 0
    value: list[str] = []
    for token in tokenize(source, (str(path), "")):
        if token.name == "variable_name":
            name = token.value[1:-1].replace("-", "_")
            begin = offset(token.location)
            value = []
        elif name is not None:
            if token.name == "variable_value_end":
                definitions[name] = " ".join("".join(value).split())
                cuts.append((begin, offset(token.location) + len(token.value)))
                name = None
            else:
                value.append(token.value)
    pieces: list[str] = []
    previous = 0
    for begin, end in cuts:
        pieces.append(source[previous:begin])
        previous = end
    pieces.append(source[previous:])
    return definitions, "".join(pieces)


def plain_markup(message: object) -> str:
    """Textual's CSS error messages hold markup (``[i]color[/]``): their text only."""
    from textual.content import Content

    text = getattr(message, "plain", None) or str(message)
    try:
        return Content.from_markup(text).plain
    except Exception:
        return text


def _resolve_local(definitions: dict[str, str], path: Path) -> dict[str, str]:
    """Substitute references to variables defined earlier in the same file; references to
    Textual's own variables are left for ``_substitute``."""
    resolved: dict[str, str] = {}
    for key, value in definitions.items():
        resolved[key] = _REFERENCE.sub(
            lambda m: resolved.get(m.group(1).replace("-", "_"), m.group(0)), value
        )
    return resolved


def _substitute(value: str, known: dict[str, str], path: Path) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in known:
            raise ThemeError(path, f"unknown variable ${name}")
        return known[name]

    return _REFERENCE.sub(replace, value)
