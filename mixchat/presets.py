"""Presets: named sets of a system prompt and generation settings.

A preset is a ``[presets.NAME]`` table in ``config.toml`` or a ``NAME.toml`` file in the
presets directory (``paths.presets_dir()``). It holds only conversation-scoped settings
(``system_prompt``, ``temperature``, ``top_p``, ...; each checked by its option's own parser)
and an optional ``description``. Chosen now (``ask --preset``, the app's ``--preset`` or its
picker), a preset sits in the precedence between config/environment and a conversation's
own saved settings (``SettingsSources.with_preset``). A conversation started with a preset
saves the resulting settings and the preset's name, so later edits of the preset never
change it; applying a preset to an existing conversation writes its saved settings
(``applied_to``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixchat import paths
from mixchat.config import (
    CONVERSATION_KEYS,
    OPTIONS,
    PRESET_KEY,
    PRESETS_TABLE,
    ConfigError,
    Settings,
    apply_values,
    read_toml,
)
from mixchat.conversation import Conversation

if TYPE_CHECKING:
    from mixchat.store import ConversationStore

# What a preset may set: the system prompt and every conversation-scoped setting.
PRESET_KEYS = ("system_prompt", *CONVERSATION_KEYS)
DESCRIPTION_KEY = "description"
# Letters (any script), digits, '-', '_' and '.'; not starting with '.' or '-'.
_NAME = re.compile(r"^\w[\w.-]*$")
SUFFIX = ".toml"


@dataclass(frozen=True)
class Preset:
    """One preset: its name, where it is defined and its validated settings."""

    name: str
    source: str  # the file (and table) that defines it
    values: Mapping[str, Any]  # setting name -> parsed value; only the keys it sets
    description: str = ""


@dataclass
class PresetList:
    """Every preset found, and one line for each one that could not be read."""

    presets: list[Preset] = field(default_factory=list)  # sorted by name
    # (name, line): the name is None for a problem that hides any number of presets.
    errors: list[tuple[str | None, str]] = field(default_factory=list)

    def find(self, name: str) -> Preset:
        """The preset called ``name``; ``ConfigError`` (one line) when it is missing or bad."""
        for bad, line in self.errors:
            if bad == name:
                raise ConfigError(line)
        for preset in self.presets:
            if preset.name == name:
                return preset
        for bad, line in self.errors:
            if bad is None:
                raise ConfigError(line)
        known = ", ".join(p.name for p in self.presets) or "none are defined"
        raise ConfigError(
            f"no preset named {name!r} (presets: {known}; `mixchat presets` lists them)"
        )


def check_values(table: Any, where: str) -> tuple[dict[str, Any], str]:
    """A preset's settings, parsed by their options, and its description. ``ConfigError``
    names ``where`` and the key: an unknown key, a setting a preset cannot hold (model,
    quantization, theme...) or a bad value."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: a preset must be a table of settings")
    raw = dict(table)
    description = raw.pop(DESCRIPTION_KEY, "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}: description must be a string")
    for key in raw:
        if key in PRESET_KEYS:
            continue
        if key in OPTIONS:
            raise ConfigError(
                f"{where}: {key} cannot be set by a preset (it holds {', '.join(PRESET_KEYS)} "
                f"and {DESCRIPTION_KEY}); set {key} in config.toml or on the command line"
            )
        raise ConfigError(f"{where}: unknown setting {key!r}")
    parsed = apply_values(Settings(), raw, where)
    return {key: getattr(parsed, key) for key in raw}, description


def _from_config(path: Path, found: PresetList) -> dict[str, Preset]:
    tables = read_toml(path).get(PRESETS_TABLE, {})
    if not isinstance(tables, dict):
        found.errors.append((None, f"{path}: [{PRESETS_TABLE}] must be a table of presets"))
        return {}
    presets = {}
    for name, table in tables.items():
        where = f"{path}: [{PRESETS_TABLE}.{name}]"
        if not _NAME.match(name):
            found.errors.append((name, f"{where}: {_NAME_RULE}"))
            continue
        try:
            values, description = check_values(table, where)
        except ConfigError as exc:
            found.errors.append((name, str(exc)))
            continue
        presets[name] = Preset(name, where, values, description)
    return presets


_NAME_RULE = "a preset's name holds letters, digits, '-', '_' and '.'"


def _from_directory(directory: Path, found: PresetList) -> dict[str, Preset]:
    try:
        entries = sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        found.errors.append((None, f"{directory}: cannot list presets: {exc.strerror or exc}"))
        return {}
    presets = {}
    for path in entries:
        name = path.name[: -len(SUFFIX)]
        if name.startswith(".") or not name:
            continue  # hidden files (editors' backups)
        if not _NAME.match(name):
            found.errors.append((name, f"{path}: {_NAME_RULE}"))
            continue
        try:
            # Never open a FIFO or a device: reading one could block or have side effects.
            if not path.is_file():
                raise ConfigError(f"{path}: not a regular file")
            values, description = check_values(read_toml(path), str(path))
        except ConfigError as exc:
            found.errors.append((name, str(exc)))
            continue
        presets[name] = Preset(name, str(path), values, description)
    return presets


def load_presets(config_path: Path | None = None, directory: Path | None = None) -> PresetList:
    """Every preset of ``config.toml`` and of the presets directory, sorted by name.

    A broken ``config.toml`` raises ``ConfigError`` (nothing else can be trusted); a bad
    preset, or one name defined in both places, is one line in ``errors``.
    """
    config = config_path or paths.config_file()
    found = PresetList()
    in_config = _from_config(config, found)
    in_directory = _from_directory(directory or paths.presets_dir(), found)
    for name in sorted(in_config.keys() & in_directory.keys()):
        found.errors.append(
            (
                name,
                f"preset {name!r} is defined twice: {in_config.pop(name).source} and "
                f"{in_directory.pop(name).source}; keep one",
            )
        )
    found.presets = sorted([*in_config.values(), *in_directory.values()], key=lambda p: p.name)
    return found


def find_preset(name: str) -> Preset:
    """The preset ``name`` from the user's files; ``ConfigError`` if missing or bad."""
    return load_presets().find(name)


def applied_to(
    saved: Mapping[str, Any], system_prompt: str | None, preset: Preset
) -> tuple[dict[str, Any], str | None]:
    """A conversation's saved settings and system prompt once ``preset`` is applied to it:
    the preset's values replace the saved ones they name, and its name is recorded."""
    settings = {k: v for k, v in preset.values.items() if k != "system_prompt"}
    system = preset.values.get("system_prompt", system_prompt)
    return {**saved, **settings, PRESET_KEY: preset.name}, system


def apply_preset(
    store: ConversationStore | None, conv: Conversation, preset: Preset
) -> Conversation:
    """Apply ``preset`` to a saved conversation: its values become the conversation's saved
    settings (and system prompt, if the preset has one), written unless ``store`` is None
    (``ask --no-save``). Returns the conversation as it now stands."""
    settings, system_prompt = applied_to(conv.settings, conv.system_prompt, preset)
    if store is not None:
        store.update_settings(conv.id, system_prompt=system_prompt, settings=settings)
    return replace(conv, settings=settings, system_prompt=system_prompt)


def summary(preset: Preset, width: int = 60) -> str:
    """``temperature=0.2 top_p=0.9 system_prompt="You are..."`` on one line."""
    parts = []
    for key, value in preset.values.items():
        shown = value if not isinstance(value, str) else repr(" ".join(value.split()))
        if isinstance(value, str) and len(shown) > width:
            shown = shown[: width - 2] + "…'"
        parts.append(f"{key}={shown}")
    return " ".join(parts) or "(no settings)"
