"""The user's keys: ``[keymap]`` in ``config.toml`` read against the action table.

```toml
[keymap]
new = "ctrl+k"              # action id = key
newline = "alt+enter,ctrl+j" # or several, comma-separated (or a TOML list)
export_markdown = "f9"      # actions without a default key can be given one
copy_code = ""              # no key (still in the command palette)
```

Key names are Textual's: modifiers ``ctrl``, ``alt``, ``shift``, ``super``, ``meta``,
``hyper`` joined by ``+`` to a key (``a``, ``f5``, ``escape``, ``enter``, ``pageup``,
``question_mark``...); ``Ctrl+S`` and ``esc`` are understood too. An entry is refused when
the action is unknown, the key cannot be parsed, the key belongs to something else where
the action applies (a letter in the message box would be typed, Ctrl+W deletes a word
there, Tab moves the focus) or another action has the key in the same place. The
app leaves bad entries out (their actions keep their default keys) and says so in one
notification naming each of them (``load_keymap``); it always starts.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from textual.binding import Binding, BindingType
from textual.dom import DOMNode
from textual.keys import Keys

from mixchat.tui.actions import ACTIONS, BY_ID, Action, Where, unbound_key
from mixchat.tui.compat import KEY_NAME_REPLACEMENTS, KEY_TO_UNICODE_NAME, REPLACED_KEYS

MODIFIERS = ("alt", "ctrl", "hyper", "meta", "shift", "super")  # Textual's order: sorted
MODIFIER_ALIASES = {"control": "ctrl", "option": "alt", "cmd": "super"}
KEY_ALIASES = {
    "esc": "escape",
    "return": "enter",
    "del": "delete",
    "ins": "insert",
    "pgup": "pageup",
    "pgdn": "pagedown",
}
NAMED_KEYS = frozenset(
    key.value
    for key in Keys
    if "+" not in key.value and not key.value.startswith("<") and key.value != "ctrl-at"
) - {"return"}
LABELS = {
    "escape": "Esc",
    "pageup": "PgUp",
    "pagedown": "PgDn",
    "space": "Space",
    "backspace": "Backspace",
}
TYPING = {Where.APP, Where.CHAT, Where.MESSAGE_BOX, Where.RENAME, Where.SETTINGS, Where.ATTACH}
# Who uses a key that an entry may not take, by the Textual class that binds it.
OWNERS = {
    "TextArea": "the message box",
    "Input": "text fields",
    "OptionList": "the conversation list",
    "Button": "buttons",
    "ScrollableContainer": "scrolling",
    "Screen": "the screen",
    "App": "the app",
}


class KeyParseError(ValueError):
    """A key name that Textual would never match."""


def _char_key(char: str) -> str:
    """Textual's name of the key that types ``char`` ('?' -> 'question_mark')."""
    if char.isalnum():
        return char
    try:
        name = unicodedata.name(char).lower().replace("-", "_").replace(" ", "_")
    except ValueError:
        raise KeyParseError(f"{char!r} is not a key") from None
    return KEY_NAME_REPLACEMENTS.get(name, name)


def _key_char(name: str) -> str | None:
    """The character a key name types ('question_mark' -> '?'), if any."""
    if len(name) == 1:
        return name
    if name == "space":
        return " "
    original = REPLACED_KEYS.get(name, name)
    try:
        return unicodedata.lookup(KEY_TO_UNICODE_NAME.get(original, original.replace("_", " ")))
    except KeyError:
        return None


def parse_key(text: str) -> str:
    """The Textual key for ``text`` ('Ctrl+S' -> 'ctrl+s', '?' -> 'question_mark')."""
    spelled = text.strip()
    if not spelled:
        raise KeyParseError("an empty key")
    *mods, base = spelled.split("+") if spelled != "+" else ["+"]
    modifiers = []
    for mod in mods:
        name = MODIFIER_ALIASES.get(mod.strip().lower(), mod.strip().lower())
        if name not in MODIFIERS:
            raise KeyParseError(
                f"{mod!r} in {spelled!r} is not a modifier ({', '.join(MODIFIERS)})"
            )
        if name in modifiers:
            raise KeyParseError(f"{spelled!r} names {name} twice")
        modifiers.append(name)
    base = base.strip()
    if not base:
        raise KeyParseError(f"{spelled!r} has no key after its last '+'")
    if len(base) == 1:
        if modifiers == ["shift"] and base.isprintable():
            raise KeyParseError(f"{spelled!r} is typed as {base.upper()!r}: write that")
        key = _char_key(base.lower() if modifiers else base)
    else:
        key = KEY_ALIASES.get(base.lower(), base.lower())
        if key not in NAMED_KEYS and _key_char(key) is None:
            raise KeyParseError(f"{spelled!r} is not a key Textual knows")
    return "+".join([*sorted(modifiers), key])


def key_label(key: str) -> str:
    """How a key is written for people: 'ctrl+s' -> 'Ctrl+S', 'escape' -> 'Esc', 'r' -> 'R'."""
    *mods, base = key.split("+")
    char = _key_char(base)
    if base in LABELS:
        shown = LABELS[base]
    elif len(base) == 1 and base.isalpha():
        shown = base.upper() if base.islower() else f"Shift+{base}"
    elif char is not None and char.isprintable() and not char.isspace():
        shown = char
    else:
        shown = base.capitalize() if not base.startswith("f") else base.upper()
    return "+".join([*(m.capitalize() for m in mods), shown])


def _typed(key: str) -> bool:
    """Whether ``key`` types a character in a text field."""
    char = _key_char(key) if "+" not in key else None
    return char is not None and char.isprintable()


def _widget_keys(where: Where) -> dict[str, str]:
    """Keys that Textual's widgets use where ``where``'s actions apply -> what they do."""
    from textual.app import App
    from textual.containers import ScrollableContainer
    from textual.screen import Screen
    from textual.widgets import Button, Input, OptionList, TextArea

    scroll: list[type] = [ScrollableContainer]
    classes: dict[Where, list[type]] = {
        Where.APP: [TextArea, Input, OptionList, Button, *scroll],
        Where.CHAT: [TextArea, Input, OptionList, *scroll],
        Where.MESSAGE_BOX: [TextArea],
        Where.MESSAGES: scroll,
        Where.SIDEBAR: [OptionList],
        Where.CONFIRM: [Button],
        Where.RENAME: [Input],
        Where.SETTINGS: [TextArea, Input, Button, *scroll],
        Where.HELP: scroll,
        Where.ATTACH: [Input],
        Where.SETUP: scroll,
    }
    ours = {action.textual_action for action in ACTIONS}
    found: dict[str, str] = {}
    for widget in [App, Screen, *classes[where]]:
        for cls in widget.__mro__:
            declared: list[BindingType] = list(vars(cls).get("BINDINGS", []))
            for binding in Binding.make_bindings(declared):
                if binding.action in ours:
                    continue  # ours: the table moves it
                what = (binding.description or binding.action.replace("_", " ")).lower()
                found.setdefault(binding.key, f"{OWNERS[widget.__name__]} ({what})")
    return found


@dataclass(frozen=True)
class Keymap:
    """The keys in effect: the table's defaults with the user's changes (validated)."""

    changed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def keys(self, action_id: str) -> tuple[str, ...]:
        """The keys of action ``action_id`` (Textual names; empty: none)."""
        if action_id in self.changed:
            return self.changed[action_id]
        return tuple(k for k in BY_ID[action_id].keys.split(",") if k)

    def label(self, action_id: str) -> str:
        """All of its keys, for people: 'Shift+Enter, Ctrl+J' ('' when it has none)."""
        return ", ".join(key_label(key) for key in self.keys(action_id))

    def say(self, action_id: str) -> str:
        """The key to name in a hint ('Ctrl+R'); an action without one by its palette name."""
        keys = self.keys(action_id)
        if keys:
            return key_label(keys[0])
        return f"“{BY_ID[action_id].title}” in the command palette"

    def describe(self, action: Action) -> str:
        """The action's description with the keys it names filled in."""
        return action.description.format(**{a.id: self.say(a.id) for a in ACTIONS})

    def textual_keymap(self) -> dict[str, str]:
        """For ``App.set_keymap``: binding id -> keys, for the changed actions."""
        return {
            action_id: ",".join(keys) or unbound_key(BY_ID[action_id])
            for action_id, keys in self.changed.items()
            if BY_ID[action_id].textual_action is not None
        }

    def help_rows(self) -> list[tuple[Where, str, str]]:
        """(where, keys, what) for every action that has a key, grouped by where."""
        return [
            (where, self.label(action.id), self.describe(action))
            for where in Where
            for action in ACTIONS
            if action.where is where and self.keys(action.id)
        ]


DEFAULT_KEYMAP = Keymap()


def _overlap(a: Action, b: Action) -> bool:
    """Whether the keys of ``a`` and ``b`` can both be live at once."""
    if a.where is b.where:
        return True
    for app_action, other in ((a, b), (b, a)):
        if app_action.where is Where.APP:
            return app_action.priority or not other.where.modal
    pair = {a.where, b.where}
    return pair in (
        {Where.CHAT, Where.MESSAGE_BOX},
        {Where.CHAT, Where.SIDEBAR},
        {Where.CHAT, Where.MESSAGES},  # the chat view is in the chat screen
    )


def _values(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part for part in value.split(",")] if value.strip() else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise KeyParseError('must be a key like "ctrl+n", keys separated by commas, or a list')


def parse_entries(table: Mapping[str, Any]) -> tuple[Keymap, list[str]]:
    """Check ``table`` (action id -> keys) and make the keymap of its good entries; the
    problems of the bad ones (each names its entry), which keep their default keys."""
    changed: dict[str, tuple[str, ...]] = {}
    problems: list[str] = []
    for action_id, value in table.items():
        try:
            action, keys = _entry(str(action_id), value)
            _check_free(action, keys)
            _check_clashes(Keymap({**changed, action.id: keys}), {action.id: keys})
        except ValueError as exc:
            problems.append(str(exc))
            continue
        changed[action.id] = keys
    return Keymap(changed), problems


def _entry(action_id: str, value: Any) -> tuple[Action, tuple[str, ...]]:
    """The action an entry names and its keys (Textual names); ``ValueError`` if bad."""
    action = BY_ID.get(action_id)
    if action is None:
        close = difflib.get_close_matches(action_id, list(BY_ID), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown action {action_id!r}{hint}")
    try:
        keys = tuple(dict.fromkeys(parse_key(v) for v in _values(value)))
    except KeyParseError as exc:
        raise ValueError(f"{action_id}: {exc}") from None
    if not keys and action.id == "send":
        raise ValueError("send: needs a key (nothing else sends a message)")
    return action, keys


def _check_free(action: Action, keys: Iterable[str], *, defaults_too: bool = False) -> None:
    """Refuse a key that something else uses where ``action`` applies (its default keys
    are taken as they are, unless ``defaults_too``)."""
    defaults = set() if defaults_too else set(action.keys.split(","))
    widget_keys = _widget_keys(action.where)
    for key in keys:
        if key in defaults:
            continue
        if action.where in TYPING and _typed(key):
            raise ValueError(
                f"{action.id}: {key_label(key)!r} would be typed in a text field "
                f"({action.where.value.lower()}); use Ctrl, Alt or a function key"
            )
        if key in widget_keys:
            raise ValueError(f"{action.id}: {key_label(key)!r} is taken by {widget_keys[key]}")


def _check_clashes(keymap: Keymap, changed: Mapping[str, tuple[str, ...]]) -> None:
    for index, first in enumerate(ACTIONS):
        for second in ACTIONS[index + 1 :]:
            if first.id not in changed and second.id not in changed:
                continue
            if not _overlap(first, second):
                continue
            shared = set(keymap.keys(first.id)) & set(keymap.keys(second.id))
            if shared:
                mine, other = (first, second) if first.id in changed else (second, first)
                key = key_label(sorted(shared)[0])
                raise ValueError(f"{mine.id}: {key!r} is already the key of {other.id}")


def load_keymap(table: Any, source: str) -> tuple[Keymap, str | None]:
    """The ``[keymap]`` table of ``source`` (a config file) as a ``Keymap``, and one line
    naming every bad entry (None: all good). Bad entries are left out: the app starts
    with their actions' default keys and shows that line."""
    if table is None:
        return DEFAULT_KEYMAP, None
    if not isinstance(table, Mapping):
        return DEFAULT_KEYMAP, f'{source}: keymap must be a table: [keymap] with action = "key"'
    keymap, problems = parse_entries(table)
    if not problems:
        return keymap, None
    return keymap, f"{source}: keymap: {'; '.join(problems)} (default keys kept)"


def keymap_of(node: DOMNode) -> Keymap:
    """The keymap in effect in ``node``'s app (the defaults in an app that has none)."""
    keymap = getattr(node.app, "keymap", None)
    return keymap if isinstance(keymap, Keymap) else DEFAULT_KEYMAP
