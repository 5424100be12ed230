"""Where mixchat keeps its files. The only module that calls platformdirs.

Setting ``MIXCHAT_HOME`` relocates everything (config, data, cache, themes)
under that one directory; tests rely on it.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "mixchat"
HOME_ENV = "MIXCHAT_HOME"


def _home() -> Path | None:
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else None


def config_dir() -> Path:
    """Directory of ``config.toml``."""
    home = _home()
    if home is not None:
        return home / "config"
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def data_dir() -> Path:
    """Directory of the conversation database."""
    home = _home()
    if home is not None:
        return home / "data"
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    """Directory for disposable caches."""
    home = _home()
    if home is not None:
        return home / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def config_file() -> Path:
    """The user's TOML settings file."""
    return config_dir() / "config.toml"


def database_file() -> Path:
    """The SQLite conversation store."""
    return data_dir() / "conversations.db"


def user_themes_dir() -> Path:
    """Where users drop their own ``.tcss`` themes."""
    return config_dir() / "themes"


def presets_dir() -> Path:
    """Where users keep presets, one ``NAME.toml`` each."""
    return config_dir() / "presets"
