"""What one streamed chunk from a server means, read from untrusted JSON.

Every field mixchat uses is checked: its type, and for counts a range that fits the
store (SQLite integers stop at 2**63 - 1; a token count past 2**31 is nonsense anyway).
A bad field is left out and described in ``notices``; it never costs the reply. The
functions here are pure: JSON values in, plain data out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MAX_COUNT = 2**31 - 1  # the largest token count believed
_SHOWN = 40  # characters of a bad value quoted in a notice

# finish_reason values and what they mean to mixchat; anything else is an unknown stop.
_FINISH = {
    "stop": "stop",
    "eos": "stop",
    "eos_token": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_length": "length",
}


@dataclass
class ChunkView:
    """The parts of one chunk that passed the checks."""

    text: str = ""
    finish: str | None = None  # "stop" or "length"
    usage: dict[str, int] = field(default_factory=dict)  # prompt, completion, cached
    error: str | None = None  # an error event's message
    notices: list[tuple[str, str]] = field(default_factory=list)  # (key, line)


def shown(value: Any) -> str:
    """A bad value as quoted in a notice: its JSON-ish form, cut short."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int too long for repr, a deep nest
        text = f"a {type(value).__name__}"
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def count(value: Any) -> int | None:
    """A token count: a whole number in 0..MAX_COUNT (7.0 is 7); None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_COUNT else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value) if 0 <= value <= MAX_COUNT else None
    return None


def read_usage(raw: Any, notices: list[tuple[str, str]]) -> dict[str, int]:
    """The valid counts of a ``usage`` object: prompt, completion, cached."""
    if raw is None:
        return {}  # vLLM sends "usage": null on every chunk but the last
    if not isinstance(raw, dict):
        notices.append(("usage", f"ignored the server's usage {shown(raw)}: not an object"))
        return {}
    found: dict[str, int] = {}
    details = raw.get("prompt_tokens_details")
    sources = [("prompt", "prompt_tokens", raw), ("completion", "completion_tokens", raw)]
    if isinstance(details, dict):
        sources.append(("cached", "cached_tokens", details))
    elif details is not None:
        notices.append(
            ("usage.prompt_tokens_details", "ignored the server's usage.prompt_tokens_details")
        )
    for key, name, where in sources:
        value = where.get(name)
        if value is None:
            continue
        number = count(value)
        if number is None:
            notices.append(
                (
                    f"usage.{name}",
                    f"ignored the server's usage.{name} {shown(value)}: "
                    f"not a whole number from 0 to {MAX_COUNT}",
                )
            )
        else:
            found[key] = number
    return found


def error_message(raw: Any) -> str:
    """The words of an error object (``{"message": ...}``, nested a few levels at most),
    a string, or the value itself, cut short."""
    for _ in range(8):  # a loop, not recursion: a server may nest errors deeply
        if not isinstance(raw, dict):
            break
        inner = next((raw[k] for k in ("message", "detail", "error") if raw.get(k)), None)
        if inner is None:
            break
        raw = inner
    if isinstance(raw, str) and raw.strip():
        return raw
    return shown(raw) if raw not in (None, "", {}, []) else "no details"


def read_chunk(data: Any, event: str = "message") -> ChunkView:
    """One decoded ``data:`` payload of a Chat Completions stream."""
    view = ChunkView()
    notes = view.notices
    if event == "error" or (isinstance(data, dict) and data.get("error") not in (None, "", {})):
        view.error = error_message(data.get("error", data) if isinstance(data, dict) else data)
        return view
    if not isinstance(data, dict):
        notes.append(("chunk", f"ignored a stream event that is not an object: {shown(data)}"))
        return view
    if "usage" in data:
        view.usage = read_usage(data["usage"], notes)
    choices = data.get("choices")
    if choices is None:
        return view
    if not isinstance(choices, list):
        notes.append(("choices", f"ignored the server's choices {shown(choices)}: not a list"))
        return view
    for choice in choices:
        if not isinstance(choice, dict):
            notes.append(("choice", f"ignored a choice that is not an object: {shown(choice)}"))
            continue
        index = choice.get("index", 0)
        if index != 0 or isinstance(index, bool):
            notes.append(("index", f"ignored a choice with index {shown(index)} (asked for one)"))
            continue
        _read_choice(choice, view)
    return view


def _read_choice(choice: dict[str, Any], view: ChunkView) -> None:
    notes = view.notices
    delta = choice.get("delta")
    if isinstance(delta, dict):
        role = delta.get("role")
        if role not in (None, "assistant"):
            notes.append(("role", f"ignored the role {shown(role)} of a streamed reply"))
        content = delta.get("content")
        if isinstance(content, str):
            view.text += content
        elif content is not None:
            notes.append(("content", f"ignored content that is not text: {shown(content)}"))
    elif delta is not None:
        notes.append(("delta", f"ignored a delta that is not an object: {shown(delta)}"))
    reason = choice.get("finish_reason")
    if reason is None:
        return
    if not isinstance(reason, str) or not reason:
        notes.append(("finish_reason", f"ignored the finish_reason {shown(reason)}"))
        return
    view.finish = _FINISH.get(reason, "stop")
    if reason == "content_filter":
        notes.append(("content_filter", "the server's content filter ended the reply"))
    elif reason not in _FINISH:
        notes.append(("finish_reason", f"the server ended the reply with {shown(reason)}"))


def read_listing(listing: Any, model: str) -> tuple[list[str] | None, int | None, list[str]]:
    """A ``GET /v1/models`` answer: the served model ids (None if it is not a listing),
    ``model``'s context length if the server gives a valid one (vLLM: max_model_len),
    and notices about bad fields."""
    entries = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(entries, list):
        return None, None, []
    served: list[str] = []
    length: int | None = None
    notes: list[str] = []
    for entry in entries:
        ident = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(ident, str) or not ident:
            continue
        served.append(ident)
        raw = entry.get("max_model_len") if ident == model else None
        if raw is None:
            continue
        length = count(raw) or length  # 0 is no context at all
        if not count(raw):
            notes.append(
                f"ignored the server's max_model_len {shown(raw)}: not a whole number "
                f"from 1 to {MAX_COUNT}"
            )
    return served, length, notes
