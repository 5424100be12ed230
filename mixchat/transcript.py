"""Pure (de)serialization of conversations: JSON export/import, Markdown, plain transcripts."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from mixchat.conversation import Attachment, Conversation, Message, Role, Status

FORMAT_NAME = "mixchat.conversation"
FORMAT_VERSION = 1
# Timestamps and counts an import may carry: ones that SQLite or time.localtime cannot
# take (NaN, 1e300, 2**70) would make every later `show` of the conversation fail.
MAX_TIMESTAMP = 1e11  # seconds; about the year 5138
MAX_COUNT = 2**63 - 1
# Arrays and objects nested deeper than this are refused: an export nests 4 levels (plus
# whatever a setting holds), and Python's own parser gives up near 1,000.
MAX_DEPTH = 100


class TranscriptError(ValueError):
    """An import file does not hold a conversation we can read."""


def message_meta(msg: Message) -> dict[str, Any]:
    """A message's status, timestamps, token figures and attached files as JSON-ready
    values."""
    return {
        "status": msg.status.value,
        "created_at": msg.created_at,
        "prompt_tokens": msg.prompt_tokens,
        "completion_tokens": msg.completion_tokens,
        "ttft_s": msg.ttft_s,
        "duration_s": msg.duration_s,
        "finish_reason": msg.finish_reason,
        "attachments": [
            {"name": a.name, "size": a.size, "sha256": a.sha256} for a in msg.attachments
        ],
    }


def preset_name(conv: Conversation) -> str | None:
    """The preset a conversation was started with (or had applied last), if any."""
    from mixchat.config import PRESET_KEY

    name = conv.settings.get(PRESET_KEY)
    return name if isinstance(name, str) else None


def conversation_header(conv: Conversation) -> dict[str, Any]:
    """A conversation's metadata as JSON-ready values."""
    return {
        "id": conv.id,
        "title": conv.title,
        "model": conv.model,
        "created_at": conv.created_at,
        "updated_at": conv.updated_at,
        "system_prompt": conv.system_prompt,
        "settings": conv.settings,
    }


def to_json(conv: Conversation) -> dict[str, Any]:
    """OpenAI-style ``messages`` plus mixchat's metadata, loss-free for ``from_json``."""
    messages: list[dict[str, Any]] = []
    if conv.system_prompt:
        messages.append({"role": "system", "content": conv.system_prompt})
    for msg in conv.messages:
        item: dict[str, Any] = {"role": msg.role.value, "content": msg.content}
        item["mixchat"] = {k: v for k, v in message_meta(msg).items() if v not in (None, [])}
        messages.append(item)
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        **conversation_header(conv),
        "messages": messages,
    }


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = data.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise TranscriptError(f"field {key!r} has the wrong type")
    return value


def parse_json(raw: bytes) -> Any:
    """The JSON value in ``raw`` (UTF-8), at most MAX_DEPTH levels deep."""
    try:
        data = json.loads(raw.decode("utf-8", errors="surrogatepass"))
    except RecursionError:
        raise TranscriptError(f"nested more than {MAX_DEPTH} levels deep") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise TranscriptError(f"not valid JSON: {exc}") from None
    check_depth(data)
    return data


def check_depth(data: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse arrays and objects nested more than ``limit`` levels (no recursion here)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if not isinstance(value, (dict, list)):
            continue
        if depth > limit:
            raise TranscriptError(f"nested more than {limit} levels deep")
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children)


def _in_range(value: float) -> bool:
    """Finite and at most MAX_TIMESTAMP in size (an int too big for a float is not)."""
    try:
        return math.isfinite(value) and abs(value) <= MAX_TIMESTAMP
    except OverflowError:
        return False


def _timestamp(value: float, what: str) -> float:
    if not _in_range(value):
        raise TranscriptError(f"{what} is not a usable time in seconds (got {value!r})")
    return float(value)


def _settings(data: dict[str, Any]) -> dict[str, Any]:
    """The conversation's settings; known keys must hold values mixchat accepts."""
    from mixchat.config import FIELDS

    settings: dict[str, Any] = _field(data, "settings", dict, {})
    for key, value in settings.items():
        field = FIELDS.get(key)
        if field is None:
            continue  # kept as it is; mixchat only reads the keys it knows
        try:
            field.parse(value)
        except ValueError as exc:
            raise TranscriptError(f"settings: {key} {exc} (got {value!r})") from None
    return settings


def _system_prompt(raw_messages: list[Any], declared: str | None) -> str | None:
    """The one system prompt of a conversation. Its system messages must be a single one
    at the start that agrees with a declared ``system_prompt``: mixchat keeps one system
    prompt per conversation, so any other would be lost, and the import is refused."""
    system_prompt = declared
    for index, item in enumerate(raw_messages):
        if not isinstance(item, dict) or item.get("role") != "system":
            continue
        content = item.get("content")
        if not isinstance(content, str):
            raise TranscriptError(f"message {index}: 'content' must be a string")
        lost = f"message {index} is a system message ({_excerpt(content)})"
        if index > 0:
            raise TranscriptError(
                f"{lost} after the conversation started; mixchat keeps one system prompt, at"
                " the start, so it would be lost"
            )
        if system_prompt is not None and content != system_prompt:
            raise TranscriptError(
                f"{lost} that differs from the 'system_prompt' field; mixchat keeps one"
                " system prompt, so one of them would be lost"
            )
        system_prompt = content
    return system_prompt


def _excerpt(text: str, width: int = 40) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[: width - 1] + "…")


def from_json(data: Any) -> Conversation:
    """Read a conversation exported by ``to_json`` or a plain OpenAI ``messages`` list.

    Loss-free for what ``to_json`` writes; anything mixchat could not keep (a second
    system message, say) is refused rather than dropped. Times are kept as they are:
    the store brings those from the future back to its clock.
    """
    now = time.time()
    if isinstance(data, list):
        data = {"messages": data}
    if not isinstance(data, dict):
        raise TranscriptError("expected a JSON object with a 'messages' list")
    raw_messages = data.get("messages")
    if not isinstance(raw_messages, list):
        raise TranscriptError("expected a 'messages' list")
    system_prompt = _system_prompt(raw_messages, _field(data, "system_prompt", str, None))
    messages: list[Message] = []
    for index, item in enumerate(raw_messages):
        if not isinstance(item, dict):
            raise TranscriptError(f"message {index} is not an object")
        role = item.get("role")
        content = item.get("content")
        if not isinstance(content, str):
            raise TranscriptError(f"message {index}: 'content' must be a string")
        if role == "system":
            continue  # checked by _system_prompt
        if role not in ("user", "assistant"):
            raise TranscriptError(f"message {index}: unknown role {role!r}")
        meta = item.get("mixchat") or {}
        if not isinstance(meta, dict):
            raise TranscriptError(f"message {index}: 'mixchat' must be an object")
        try:
            status = Status(meta.get("status", "complete"))
        except ValueError:
            raise TranscriptError(
                f"message {index}: unknown status {meta.get('status')!r}"
            ) from None
        created = _opt_float(meta, "created_at", index)
        finish_reason = meta.get("finish_reason")
        if finish_reason not in (None, "stop", "length"):
            raise TranscriptError(
                f"message {index}: unknown finish_reason {finish_reason!r} (stop or length)"
            )
        attachments = _attachments(meta.get("attachments"), index)
        messages.append(
            Message(
                role=Role(role),
                content=content,
                status=status,
                prompt_tokens=_opt_int(meta, "prompt_tokens", index),
                completion_tokens=_opt_int(meta, "completion_tokens", index),
                ttft_s=_opt_float(meta, "ttft_s", index),
                duration_s=_opt_float(meta, "duration_s", index),
                created_at=now if created is None else created,
                finish_reason=finish_reason,
                attachments=attachments,
            )
        )
    if not messages:
        raise TranscriptError("the conversation has no messages")
    settings = _settings(data)
    return Conversation(
        id=str(_field(data, "id", str, "")),
        title=str(_field(data, "title", str, "")),
        created_at=_timestamp(_field(data, "created_at", (int, float), now), "created_at"),
        updated_at=_timestamp(_field(data, "updated_at", (int, float), now), "updated_at"),
        model=str(_field(data, "model", str, "")),
        system_prompt=system_prompt,
        settings=settings,
        messages=messages,
    )


_SHA256 = frozenset("0123456789abcdef")


def _attachments(value: Any, index: int) -> list[Attachment]:
    """A message's attached files as exported: [{name, size, sha256}]."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise TranscriptError(f"message {index}: attachments must be a list")
    found = []
    for item in value:
        if not isinstance(item, dict):
            raise TranscriptError(f"message {index}: an attachment must be an object")
        name, size, digest = item.get("name"), item.get("size"), item.get("sha256")
        if not isinstance(name, str):
            raise TranscriptError(f"message {index}: an attachment's name must be a string")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_COUNT:
            raise TranscriptError(f"message {index}: an attachment's size must be a whole number")
        if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _SHA256:
            raise TranscriptError(f"message {index}: an attachment's sha256 must be 64 hex digits")
        found.append(Attachment(name, size, digest))
    return found


def _opt_int(meta: dict[str, Any], key: str, index: int) -> int | None:
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise TranscriptError(f"message {index}: {key} must be a whole number >= 0")
    return value


def _opt_float(meta: dict[str, Any], key: str, index: int) -> float | None:
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TranscriptError(f"message {index}: {key} must be a number")
    if not _in_range(value):
        raise TranscriptError(f"message {index}: {key} is out of range (got {value!r})")
    return float(value)


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


_STATUS_NOTE = {Status.INTERRUPTED: " (interrupted)", Status.ERROR: " (error)"}


def _note(msg: Message) -> str:
    if msg.finish_reason == "length" and msg.status is Status.COMPLETE:
        return " (cut at the token limit)"
    return _STATUS_NOTE.get(msg.status, "")


def one_line(text: str) -> str:
    """``text`` on one line: every run of whitespace (newlines, tabs, line and paragraph
    separators) becomes one space. For titles and model names in headings and headers."""
    return " ".join(text.split())


def _code_span(text: str) -> str:
    """``text`` as a Markdown code span, fenced by more backticks than it holds in a row."""
    runs = [len(r) for r in "".join(ch if ch == "`" else " " for ch in text).split()]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def attachment_lines(msg: Message) -> list[str]:
    """``attached notes.txt, 1,234 bytes, sha256 9f86d0...`` for each file of ``msg``."""
    return [f"attached {a.name}, {a.size:,} bytes, sha256 {a.sha256}" for a in msg.attachments]


def to_markdown(conv: Conversation) -> str:
    """A readable Markdown document of the conversation."""
    lines = [f"# {one_line(conv.title) or '(untitled)'}", ""]
    lines.append(f"- id: `{conv.id}`")
    if conv.model:
        lines.append(f"- model: {_code_span(one_line(conv.model))}")
    lines.append(f"- created: {_stamp(conv.created_at)}")
    if preset_name(conv):
        lines.append(f"- preset: {preset_name(conv)}")
    lines.append("")
    if conv.system_prompt:
        lines += ["## System", "", conv.system_prompt, ""]
    for msg in conv.messages:
        heading = "User" if msg.role is Role.USER else "Assistant"
        lines += [f"## {heading}{_note(msg)}", "", msg.content, ""]
        lines += [f"- {line}" for line in attachment_lines(msg)] + ([""] if msg.attachments else [])
    return "\n".join(lines)


def to_text(conv: Conversation) -> str:
    """A plain transcript for ``mixchat show``."""
    preset = f"  preset {preset_name(conv)}" if preset_name(conv) else ""
    out = [
        one_line(conv.title) or "(untitled)",
        f"id {conv.id}  model {one_line(conv.model) or '?'}"
        f"  created {_stamp(conv.created_at)}{preset}",
        "",
    ]
    if conv.system_prompt:
        out += ["--- system ---", conv.system_prompt, ""]
    for msg in conv.messages:
        out += [f"--- {msg.role.value}{_note(msg)} ---", msg.content, ""]
        out += [f"[{line}]" for line in attachment_lines(msg)] + ([""] if msg.attachments else [])
    return "\n".join(out)
