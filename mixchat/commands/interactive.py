"""``mixchat`` with no command: the interactive app."""

from __future__ import annotations

import sys
from typing import Any

from mixchat.commands.errors import fail
from mixchat.config import Settings, load_settings, save_setting
from mixchat.engine.base import Engine


def make_engine(settings: Settings) -> Engine:
    """The remote engine when an endpoint is set, else the local transformers engine
    (imported here, on the loading thread)."""
    if settings.endpoint:
        from mixchat.engine.remote import RemoteEngine

        return RemoteEngine(settings, settings.endpoint, api_key_env=settings.api_key_env)
    from mixchat.engine.transformers import TransformersEngine

    return TransformersEngine(settings)


def run_interactive(flags: dict[str, Any], resume: str | None, continue_last: bool) -> int:
    """Start the Textual app; returns the exit code."""
    from mixchat.store import ConversationStore, NotFoundError

    settings = load_settings(flags)
    if not sys.stdout.isatty() or not sys.stdin.isatty():
        return fail('the interactive app needs a terminal; for scripts use: mixchat ask "..."')
    store = ConversationStore.open()
    try:
        resume_id: str | None = None
        if resume is not None:
            resume_id = store.resolve_id(resume)
        elif continue_last:
            resume_id = store.last_conversation_id()
            if resume_id is None:
                raise NotFoundError(
                    "no saved conversation to continue: none was used on this machine yet"
                    " (continue an imported one with --resume ID)"
                )
        from mixchat.tui.app import MixchatApp

        app = MixchatApp(
            settings,
            make_engine,
            store,
            resume_id=resume_id,
            on_theme_saved=lambda name: save_setting("theme", name),
        )
        app.run()
        return int(app.return_code or 0)
    finally:
        store.close()
