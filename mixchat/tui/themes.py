"""Themes as ``.tcss`` files: built-in ones in the repo's ``themes/`` directory and the
user's in ``paths.user_themes_dir()``.

A theme file is ordinary Textual CSS. Its top-level colour variables
(``$primary: #7aa2f7;``, ``$background: ...``, ``$dark: false;``) define the
palette, registered as a Textual ``Theme`` so every widget follows it; the rest
of the file styles mixchat's widgets while the theme is active. Textual's own
themes are available too. A broken file costs one notification, never the app.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.theme import Theme

from mixchat import paths

if TYPE_CHECKING:
    from textual.app import App

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
_VARIABLE = re.compile(r"^\s*\$([a-z][a-z0-9-]*)\s*:\s*([^;]+);", re.MULTILINE)
SOURCE_KEY = ("mixchat-theme", "")


def builtin_themes_dir() -> Path:
    """The built-in themes: the repo's ``themes/`` (source or editable install), else the
    copy installed under ``<prefix>/share/mixchat/themes``."""
    beside = Path(__file__).resolve().parents[2] / "themes"
    if beside.is_dir():
        return beside
    return Path(sys.prefix) / "share" / "mixchat" / "themes"


class ThemeError(ValueError):
    """A theme file cannot be used."""


@dataclass(frozen=True)
class ThemeFile:
    """A parsed theme file."""

    name: str
    path: Path
    css: str
    theme: Theme


def parse_theme(path: Path) -> ThemeFile:
    """Read a ``.tcss`` theme; ``ThemeError`` names the file and the problem."""
    try:
        css = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ThemeError(f"{path}: cannot read: {exc}") from None
    values = {m.group(1).replace("-", "_"): m.group(2).strip() for m in _VARIABLE.finditer(css)}
    if "primary" not in values:
        raise ThemeError(f"{path}: a theme needs at least `$primary: <colour>;`")
    palette: dict[str, Any] = {k: values[k] for k in PALETTE_KEYS if k in values}
    dark = values.get("dark", "true").lower() not in ("false", "no", "0")
    try:
        theme = Theme(name=path.stem, dark=dark, **palette)
        theme.to_color_system()  # validates the colours
    except Exception as exc:
        raise ThemeError(f"{path}: bad colour: {exc}") from None
    return ThemeFile(path.stem, path, css, theme)


def discover(dirs: list[Path]) -> tuple[list[ThemeFile], list[str]]:
    """All theme files in ``dirs`` (later dirs override earlier names) and the errors."""
    found: dict[str, ThemeFile] = {}
    errors: list[str] = []
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.tcss")):
            try:
                found[path.stem] = parse_theme(path)
            except ThemeError as exc:
                errors.append(str(exc))
    return list(found.values()), errors


class ThemeManager:
    """Registers the theme files with an app and swaps their CSS in and out."""

    def __init__(self, app: App[Any], on_saved: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.on_saved = on_saved
        self.files: dict[str, ThemeFile] = {}
        self._installed = False

    def install(self, preferred: str) -> None:
        """Register every theme, apply ``preferred``, and follow later changes."""
        files, errors = discover([builtin_themes_dir(), paths.user_themes_dir()])
        for theme_file in files:
            if self._check_css(theme_file):
                self.files[theme_file.name] = theme_file
                self.app.register_theme(theme_file.theme)
            else:
                errors.append(f"{theme_file.path}: not valid Textual CSS")
        for error in errors:
            self.app.notify(error, title="Theme skipped", severity="warning")
        self.app.theme_changed_signal.subscribe(self.app, self._on_theme_changed)
        self._installed = True
        if preferred in self.app.available_themes:
            self.app.theme = preferred
        else:
            if preferred:
                self.app.notify(
                    f"Unknown theme {preferred!r}; using the default.", severity="warning"
                )
            fallback = "mixchat-dark" if "mixchat-dark" in self.files else "textual-dark"
            self.app.theme = fallback
        self._apply_css(self.app.theme)

    def _check_css(self, theme_file: ThemeFile) -> bool:
        stylesheet = self.app.stylesheet.copy()
        try:
            stylesheet.add_source(theme_file.css, read_from=(str(theme_file.path), ""))
            stylesheet.parse()
        except Exception:
            return False
        return True

    def _apply_css(self, name: str) -> None:
        stylesheet = self.app.stylesheet
        stylesheet.source.pop(SOURCE_KEY, None)
        theme_file = self.files.get(name)
        if theme_file is not None:
            stylesheet.add_source(theme_file.css, read_from=SOURCE_KEY)
        try:
            self.app.refresh_css(animate=False)
        except Exception as exc:  # belt and braces: never let a theme take the app down
            stylesheet.source.pop(SOURCE_KEY, None)
            self.app.refresh_css(animate=False)
            self.app.notify(f"{name}: {exc}", title="Theme skipped", severity="warning")

    def _on_theme_changed(self, theme: Theme) -> None:
        self._apply_css(theme.name)
        if self.on_saved is not None:
            try:
                self.on_saved(theme.name)
            except Exception as exc:
                self.app.notify(f"Could not save the theme: {exc}", severity="warning")
