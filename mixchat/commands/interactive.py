"""``mixchat`` with no command: the interactive app."""

from __future__ import annotations

import sys
from typing import Any

from mixchat import paths
from mixchat.commands.errors import fail
from mixchat.config import Settings, load_sources, read_table, save_setting


def check_machine(settings: Settings) -> list[str]:
    """What ``mixchat doctor`` says, in a few lines, for the app's no-model screen (the app
    calls it on a worker thread: it imports torch)."""
    from mixchat.commands.doctor import summary
    from mixchat.engine.local import hardware
    from mixchat.engine.local.report import diagnose

    return summary(diagnose(settings, hardware.probe()))


def run_interactive(
    flags: dict[str, Any], resume: str | None, continue_last: bool, preset: str | None = None
) -> int:
    """Start the Textual app; returns the exit code. ``preset`` applies to new
    conversations, and to the one reopened (its saved settings change, as with ask)."""
    from mixchat.store import ConversationStore, NotFoundError

    sources = load_sources(flags)
    if preset is not None:
        from mixchat.presets import find_preset

        sources = sources.with_preset(find_preset(preset))
    from mixchat.tui.keymap import load_keymap  # a bad entry is named in the app

    keymap, keymap_problem = load_keymap(read_table("keymap"), str(paths.config_file()))
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
        if resume_id is not None and sources.preset is not None:
            from mixchat.presets import apply_preset

            apply_preset(store, store.get_conversation(resume_id), sources.preset)
        from mixchat.engine import factory
        from mixchat.tui.app import MixchatApp

        app = MixchatApp(
            sources.base,
            factory.make_engine,
            store,
            resume_id=resume_id,
            on_theme_saved=lambda name: save_setting("theme", name),
            flags=sources.flags,
            preset=sources.preset,
            check_machine=check_machine,
            keymap=keymap,
            keymap_problem=keymap_problem,
        )
        app.run()
        return int(app.return_code or 0)
    finally:
        store.close()
