"""``mixchat presets``: the presets of config.toml and of the presets directory."""

from __future__ import annotations

import sys

from mixchat.commands.errors import EXIT_USAGE, fail
from mixchat.presets import load_presets
from mixchat.textsafe import for_terminal, safe_json, scrub_surrogates


def _out(text: str) -> None:
    sys.stdout.write((for_terminal(text) if sys.stdout.isatty() else scrub_surrogates(text)) + "\n")


def list_presets(as_json: bool) -> int:
    """Print every preset (name, where it is defined, its settings); the exit code: 2 when
    some preset is bad (one line each on stderr; the good ones are still listed)."""
    from mixchat import paths

    found = load_presets()
    if as_json:
        print(
            safe_json(
                [
                    {
                        "name": p.name,
                        "source": p.source,
                        "description": p.description,
                        "settings": dict(p.values),
                    }
                    for p in found.presets
                ]
            )
        )
    elif found.presets:
        lines = []
        for preset in found.presets:
            lines.append(f"{preset.name}  ({preset.source})")
            if preset.description:
                lines.append(f"  {' '.join(preset.description.split())}")
            for key, value in preset.values.items():
                lines.append(f"  {key} = {value!r}")
        _out("\n".join(lines))
    elif not found.errors:
        where = for_terminal(str(paths.presets_dir()))
        print(
            f"no presets yet: add [presets.NAME] tables to config.toml or NAME.toml files "
            f"to {where}",
            file=sys.stderr,
        )
    code = 0
    for _name, line in found.errors:
        code = fail(line, EXIT_USAGE)
    return code


def complete_presets(incomplete: str) -> list[tuple[str, str]]:
    """Preset names starting with ``incomplete`` and their descriptions, for shell
    completion; nothing when the files cannot be read."""
    from mixchat.config import ConfigError

    try:
        found = load_presets()
    except ConfigError:
        return []
    return [
        (p.name, " ".join(p.description.split())[:60])
        for p in found.presets
        if p.name.startswith(incomplete)
    ]
