"""Themes as ``.tcss`` files: built-in ones in the repo's ``themes/`` directory and the
user's in ``paths.user_themes_dir()`` (see ``theme_files`` for the format). Textual's own
themes are available too.

A theme never takes the app down. A file that cannot be read or parsed costs one
notification when the app starts. Before a theme is applied (at start or when chosen) it
is *vetted*: every widget's CSS that the app has loaded, the app's own and the theme's
is parsed with the theme's variables, as Textual would when a widget is first shown;
a theme that fails is refused with one notification and the app keeps its theme.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.css.stylesheet import Stylesheet
from textual.dom import DOMNode
from textual.theme import Theme

from mixchat import paths
from mixchat.tui.theme_files import (
    PALETTE_KEYS,
    ThemeError,
    ThemeFile,
    builtin_themes_dir,
    parse_theme,
    plain_markup,
)

if TYPE_CHECKING:
    from textual.app import App

__all__ = [
    "PALETTE_KEYS",
    "SOURCE_KEY",
    "ThemeError",
    "ThemeFile",
    "ThemeManager",
    "builtin_themes_dir",
    "discover",
    "parse_theme",
    "vet_theme",
]

SOURCE_KEY = ("mixchat-theme", "")
FALLBACK = ("mixchat-dark", "textual-dark")


def discover(dirs: list[Path]) -> tuple[list[ThemeFile], list[ThemeError]]:
    """All theme files in ``dirs`` (later dirs override earlier names) and the errors."""
    found: dict[str, ThemeFile] = {}
    errors: list[ThemeError] = []
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.tcss")):
            try:
                found[path.stem] = parse_theme(path)
            except ThemeError as exc:
                errors.append(exc)
    return list(found.values()), errors


def _widget_classes(root: type[DOMNode] = DOMNode) -> Iterator[type[DOMNode]]:
    for cls in root.__subclasses__():
        yield cls
        yield from _widget_classes(cls)


def _load_widget_modules() -> None:
    """Import the Textual widgets the app may show later, so their CSS is vetted too."""
    import textual.command
    import textual.widgets._toast  # noqa: F401
    from textual.widgets import (  # noqa: F401
        Button,
        Input,
        Label,
        LoadingIndicator,
        OptionList,
        Static,
        TextArea,
    )


def vet_theme(app: App[Any], theme: Theme, css: str = "") -> str | None:
    """Parse all the CSS the app may use with ``theme``'s variables (and the theme's own
    ``css``); the first error as one line, or None when the theme is safe."""
    _load_widget_modules()
    variables = {
        **app.get_theme_variable_defaults(),
        **theme.to_color_system().generate(),
        **theme.variables,
    }
    stylesheet = Stylesheet(variables=variables)
    seen: set[str] = set()
    for key, source in list(app.stylesheet.source.items()):
        if key == SOURCE_KEY:
            continue
        seen.add(source.content)
        stylesheet.add_source(
            source.content,
            read_from=key,
            is_default_css=source.is_defaults,
            tie_breaker=source.tie_breaker,
            scope=source.scope,
        )
    for cls in set(_widget_classes()):
        default_css = cls.__dict__.get("DEFAULT_CSS", "")
        if default_css and default_css not in seen:
            seen.add(default_css)
            stylesheet.add_source(
                default_css, read_from=(cls.__module__, f"{cls.__name__}.DEFAULT_CSS")
            )
    if css:
        stylesheet.add_source(css, read_from=(theme.name, ""))
    try:
        stylesheet.parse()
    except Exception as exc:
        return _first_error(exc)
    return None


def _first_error(exc: Exception) -> str:
    errors = getattr(getattr(exc, "errors", None), "rules", None)
    if errors:
        for rule in errors:
            for token, message in getattr(rule, "errors", []):
                where = token.read_from[1] or token.read_from[0]
                if token.referenced_by is not None:
                    where = f"${token.referenced_by.name} in {where}"
                return f"{where}: {plain_markup(message)}".splitlines()[0]
    return (str(exc) or type(exc).__name__).splitlines()[0]


class ThemeManager:
    """Registers the theme files with an app, vets themes before they apply, and swaps
    their CSS in and out."""

    def __init__(self, app: App[Any], on_saved: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.on_saved = on_saved
        self.files: dict[str, ThemeFile] = {}
        self._vetted: dict[str, str | None] = {}  # theme name -> error (None: fine)
        self._lock = threading.Lock()
        self._installed = False

    def install(self, preferred: str) -> None:
        """Register every theme, apply ``preferred``, and follow later changes."""
        dirs = [builtin_themes_dir(), paths.user_themes_dir()]
        files, errors = discover(dirs)
        broken = {error.path.stem for error in errors}
        for theme_file in files:
            self.files[theme_file.name] = theme_file
            self.app.register_theme(theme_file.theme)
        for error in errors:
            self.app.notify(str(error), title="Theme skipped", severity="warning")
        self.app.theme_changed_signal.subscribe(self.app, self._on_theme_changed)
        self._installed = True
        if preferred in self.app.available_themes and self.vet(preferred):
            self.app.theme = preferred
        else:
            unknown = preferred not in self.app.available_themes
            if preferred and unknown and preferred not in {*self._vetted, *broken}:
                self.app.notify(
                    f"Unknown theme {preferred!r}; using the default.", severity="warning"
                )
            self.app.theme = next(name for name in FALLBACK if self.vet(name))
        self._apply_css(self.app.theme)

    def vet(self, name: str) -> bool:
        """Whether theme ``name`` is safe to apply; the first time one is not, it is
        unregistered and the user told once."""
        with self._lock:
            known = name in self._vetted
            error = self._vetted.get(name)
        if not known:
            theme = self.app.get_theme(name)
            if theme is None:
                return False
            theme_file = self.files.get(name)
            error = vet_theme(self.app, theme, theme_file.css if theme_file else "")
            with self._lock:
                self._vetted[name] = error
            if error is not None:
                where = theme_file.path if theme_file else name
                self.app.unregister_theme(name)
                self.app.notify(
                    f"{where}: would break the app: {error}",
                    title="Theme refused",
                    severity="warning",
                )
        return error is None

    def validate(self, name: str) -> str:
        """The validator of ``App.theme``: ``name`` if it is safe, else the current theme."""
        if not self._installed or self.vet(name):
            return name
        current = self.app.theme
        if current and current != name and current in self.app.available_themes:
            return current
        return next(n for n in FALLBACK if n != name and self.vet(n))

    def _apply_css(self, name: str) -> None:
        stylesheet = self.app.stylesheet
        stylesheet.source.pop(SOURCE_KEY, None)
        theme_file = self.files.get(name)
        if theme_file is not None and theme_file.css.strip():
            stylesheet.add_source(theme_file.css, read_from=SOURCE_KEY)
        try:
            self.app.refresh_css(animate=False)
        except Exception as exc:  # belt and braces: vetting should have caught it
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
