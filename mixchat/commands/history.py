"""History commands: list, show, search, export, import, rename, rm, config.

Plain text output (no rich) keeps these fast; anything that came from a model
or a user is neutralised before it reaches a terminal.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from dataclasses import asdict
from pathlib import Path

from mixchat.store import MARK_END, MARK_START, ConversationStore
from mixchat.textsafe import for_terminal, safe_json, scrub_surrogates
from mixchat.transcript import (
    TranscriptError,
    conversation_header,
    from_json,
    message_meta,
    parse_json,
    preset_name,
    to_json,
    to_markdown,
    to_text,
)

SHORT_ID = 8


def _out(text: str) -> None:
    """Print to stdout; on a terminal, control characters and bidi overrides become
    visible escapes. Lone surrogates (undecodable bytes in a path from the environment)
    become U+FFFD."""
    sys.stdout.write((for_terminal(text) if sys.stdout.isatty() else scrub_surrogates(text)) + "\n")


def _path_text(path: str) -> str:
    """A path for a line on stderr: controls visible, and on one line."""
    return for_terminal(path).replace("\n", "\\n")


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def list_conversations(limit: int, as_json: bool) -> None:
    """Print saved conversations, newest first."""
    with ConversationStore.open(create=False) as store:
        rows = store.list_conversations(limit=limit)
    if as_json:
        print(safe_json([asdict(r) for r in rows]))
        return
    if not rows:
        print('no saved conversations yet; start one with: mixchat ask "..."', file=sys.stderr)
        return
    lines = [f"{'ID':<{SHORT_ID}}  {'UPDATED':<16}  {'MSGS':>4}  TITLE"]
    for row in rows:
        lines.append(
            f"{row.id[:SHORT_ID]}  {_when(row.updated_at)}  {row.message_count:>4}  "
            f"{_one_line(row.title, 70)}"
        )
    _out("\n".join(lines))


def show_conversation(conversation_id: str, as_json: bool) -> None:
    """Print one conversation as a transcript, or as JSON with metadata and messages."""
    with ConversationStore.open(create=False) as store:
        conv = store.get_conversation(conversation_id)
    if as_json:
        payload = {
            **conversation_header(conv),
            "preset": preset_name(conv),
            "messages": [
                {"id": m.id, "role": m.role.value, "content": m.content, **message_meta(m)}
                for m in conv.messages
            ],
        }
        print(safe_json(payload))
        return
    _out(to_text(conv))


def search_messages(query: str, limit: int, as_json: bool) -> None:
    """Print messages matching ``query`` with their conversation."""
    with ConversationStore.open(create=False) as store:
        hits = store.search(query, limit=limit)
    if as_json:
        print(
            safe_json(
                [
                    {
                        **asdict(h),
                        "role": h.role.value,
                        "snippet": h.snippet.replace(MARK_START, "").replace(MARK_END, ""),
                    }
                    for h in hits
                ]
            )
        )
        return
    if not hits:
        print("no matches", file=sys.stderr)
        return
    tty = sys.stdout.isatty()
    lines = []
    for hit in hits:
        snippet = _one_line(for_terminal(hit.snippet) if tty else hit.snippet, 200)
        start, end = ("\x1b[1m", "\x1b[0m") if tty else ("", "")
        snippet = snippet.replace(MARK_START, start).replace(MARK_END, end)
        title = _one_line(for_terminal(hit.title) if tty else hit.title, 50)
        lines.append(f"{hit.conversation_id[:SHORT_ID]}  {title}  [{hit.role.value}] {snippet}")
    sys.stdout.write("\n".join(lines) + "\n")


def export_conversation(conversation_id: str, fmt: str, output: str | None) -> None:
    """Write a conversation as Markdown or JSON to ``output`` or stdout.

    ``output`` is written through ``safefile``: atomically, never through a planted link,
    a FIFO or ``/dev/stdout`` written in place, a new file private (0600).
    """
    if fmt not in ("md", "json"):
        raise TranscriptError(f"--format {fmt}: expected md or json")
    with ConversationStore.open(create=False) as store:
        conv = store.get_conversation(conversation_id)
    text = (
        json.dumps(to_json(conv), ensure_ascii=False, indent=2) + "\n"
        if fmt == "json"
        else to_markdown(conv) + "\n"
    )
    if output is None:
        if sys.stdout.isatty():
            text = for_terminal(text)
        sys.stdout.write(text)
        return
    from mixchat.safefile import write_text

    write_text(output, text, private=True)
    print(f"exported {conv.id[:SHORT_ID]} to {_path_text(output)}", file=sys.stderr)


def _read_bounded(file: Path, limit: int) -> bytes:
    """The bytes of ``file`` (``-``: stdin), at most ``limit`` of them: /dev/zero or an
    endless pipe is refused once the limit is passed, not read until memory runs out."""
    too_big = TranscriptError(
        f"{file}: larger than import_max_bytes ({limit:,} bytes); raise it in config.toml"
        " or with MIXCHAT_IMPORT_MAX_BYTES to import a bigger file"
    )
    try:
        if str(file) == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(file, "rb") as handle:
                info = os.fstat(handle.fileno())
                if stat.S_ISDIR(info.st_mode):
                    raise IsADirectoryError(21, "Is a directory")
                if stat.S_ISREG(info.st_mode) and info.st_size > limit:
                    raise too_big
                data = handle.read(limit + 1)
    except OSError as exc:
        from mixchat.safefile import reason

        raise TranscriptError(f"{file}: cannot read: {reason(exc)}") from None
    if len(data) > limit:
        raise too_big
    return data


def import_conversation(file: Path) -> None:
    """Import a JSON export (or an OpenAI ``messages`` list) as a new conversation."""
    from mixchat.config import load_settings

    raw = _read_bounded(file, load_settings().import_max_bytes)
    try:
        conv = from_json(parse_json(raw))
    except TranscriptError as exc:
        raise TranscriptError(f"{file}: {exc}") from None
    with ConversationStore.open() as store:
        saved = store.import_conversation(conv)
    pairs = [(conv.created_at, saved.created_at), (conv.updated_at, saved.updated_at)]
    pairs += [
        (a.created_at, b.created_at) for a, b in zip(conv.messages, saved.messages, strict=True)
    ]
    moved = sum(before != after for before, after in pairs)
    if moved:
        print(
            f"mixchat: {_path_text(str(file))}: {moved} time{'s' if moved > 1 else ''} out of"
            " range corrected (in the future: now; before 1970: 1970)",
            file=sys.stderr,
        )
    print(saved.id)


def rename_conversation(conversation_id: str, title: str) -> None:
    """Set a conversation's title."""
    if not title.strip():
        raise TranscriptError("the title is empty")
    with ConversationStore.open() as store:
        store.rename(conversation_id, title)


def remove_conversation(conversation_id: str) -> None:
    """Delete a conversation and its messages (and their search index entries)."""
    with ConversationStore.open() as store:
        full = store.resolve_id(conversation_id)
        store.delete(full)
    print(f"deleted {full[:SHORT_ID]}", file=sys.stderr)


def complete_conversation_ids(incomplete: str, limit: int = 50) -> list[tuple[str, str]]:
    """Ids starting with ``incomplete`` and their titles, newest first, for shell completion.
    Creates nothing: without a database there is nothing to complete."""
    from mixchat import paths
    from mixchat.store import ConversationStore, StoreError

    if not paths.database_file().exists():
        return []
    try:
        with ConversationStore.open() as store:
            rows = store.list_conversations(limit=10_000)
    except StoreError:
        return []
    found = [(r.id, _plain(r.title)) for r in rows if r.id.startswith(incomplete)]
    return found[:limit]


def _plain(title: str) -> str:
    # Shells evaluate completion output: keep titles to letters, digits and a few marks.
    kept = "".join(ch if ch.isalnum() or ch in " -_.,!?" else " " for ch in title)
    return _one_line(kept, 60)


def show_config(as_json: bool) -> None:
    """Print the settings in effect and where files live."""
    from mixchat import paths
    from mixchat.config import FIELDS, load_settings

    settings = load_settings()
    where = {
        "config_file": str(paths.config_file()),
        "database": str(paths.database_file()),
        "themes_dir": str(paths.user_themes_dir()),
        "presets_dir": str(paths.presets_dir()),
        "cache_dir": str(paths.cache_dir()),
    }
    if as_json:
        # Settings from argv or the environment may hold undecodable bytes (lone
        # surrogates), which a strict UTF-8 stdout cannot print.
        print(safe_json({"settings": asdict(settings), "paths": where}))
        return
    lines = [f"{k:<12} {v}" for k, v in where.items()]
    lines.append("")
    width = max(map(len, FIELDS))
    for name, field in FIELDS.items():
        lines.append(f"{name:<{width}} = {getattr(settings, name)!r:<40} # {field.doc}")
    _out("\n".join(lines))
