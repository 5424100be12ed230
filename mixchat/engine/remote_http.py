"""HTTP for the remote engine: one streamed request, read with bounds on every byte.

The request goes out through ``httpx2`` (``httpx`` where only that is installed); the
body is read raw and decoded by ``remote_sse`` so that no line, event, error body or
reply grows past its cap. A response that is not an event stream (an error status, an
HTML page, a whole JSON answer) becomes an exception that says what it was, with at
most ``MAX_ERROR_BYTES`` of its body read.
"""

from __future__ import annotations

import datetime
import email.utils
import importlib
import json
import math
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from mixchat.engine.remote_fields import error_message
from mixchat.engine.remote_sse import SSEDecoder, SSEEvent

MAX_ERROR_BYTES = 64 * 1024  # of an error body or a page that is not a stream
# A model listing is a few KB (hundreds of models: under 1 MB); parsed JSON takes many
# times its size in memory, so a bigger one is ignored rather than read.
MAX_LISTING_BYTES = 4 << 20
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)


def http_module() -> ModuleType:
    """The HTTP library: ``httpx2`` (what current openai releases use), else ``httpx``."""
    try:
        return importlib.import_module("httpx2")
    except ImportError:
        return importlib.import_module("httpx")


@dataclass(frozen=True)
class Limits:
    """How long to wait and how much to read from one response."""

    connect_s: float
    idle_s: float
    max_event_bytes: int
    max_reply_bytes: int


@dataclass(frozen=True)
class StreamEnd:
    """The response body ended; ``foreign_line`` is its first line that was not SSE."""

    foreign_line: str | None


class StatusFailure(Exception):
    """The server answered with an error (or redirect) status."""

    def __init__(
        self, status: int, detail: str, retry_after: float | None, location: str | None
    ) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        self.location = location


class NotAStream(Exception):
    """A 2xx answer that is not an event stream: ``kind`` is html, completion, json,
    encoded or other; ``detail`` what it said."""

    def __init__(self, kind: str, content_type: str, detail: str) -> None:
        super().__init__(f"{kind} ({content_type}): {detail}")
        self.kind = kind
        self.content_type = content_type
        self.detail = detail


class ReplyTooLarge(Exception):
    """More than ``limit`` bytes arrived for one reply or listing."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


class IdleTimeout(Exception):
    """A body trickled in without finishing for longer than allowed."""


def timeout(http: ModuleType, limits: Limits) -> Any:
    """The per-request timeouts: ``idle_s`` bounds every wait once connected."""
    return http.Timeout(limits.idle_s, connect=limits.connect_s)


def read_body(response: Any, limit: int, deadline: float | None = None) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the body and whether that is all of it; stops at
    ``deadline`` (``IdleTimeout``), so a body sent a byte a second cannot hold us."""
    data = bytearray()
    for raw in response.iter_raw():
        data += raw
        if len(data) > limit:
            return bytes(data[:limit]), False
        if deadline is not None and time.monotonic() > deadline:
            raise IdleTimeout
    return bytes(data), True


def retry_after(headers: Any, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, or ``Retry-After`` in
    seconds or as an HTTP date; None when absent or unreadable."""
    millis = _seconds(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    seconds = _seconds(value)
    if seconds is not None or not value:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT, whether they say so or not
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _seconds(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _media_type(response: Any) -> str:
    return str(response.headers.get("content-type", "")).split(";")[0].strip().lower()


def _encoded(response: Any) -> str | None:
    encoding = str(response.headers.get("content-encoding", "")).strip().lower()
    return encoding if encoding not in ("", "identity") else None


def describe_body(body: bytes, complete: bool, media_type: str) -> str:
    """What an error body says: an HTML page's title, a JSON error's message, or text."""
    text = body.decode("utf-8", errors="replace")
    if "html" in media_type or text.lstrip()[:1] == "<":
        title = _TITLE.search(body)
        name = title.group(1).decode("utf-8", "replace").strip() if title else ""
        return f"an HTML page ({name})" if name else "an HTML page"
    if complete:
        try:
            return error_message(json.loads(text))
        except (ValueError, RecursionError):
            pass
    return text.strip() or "no details"


def status_failure(response: Any, deadline: float) -> StatusFailure:
    """An error status, its body read up to ``MAX_ERROR_BYTES``."""
    detail = "no details"
    if _encoded(response) is None:
        try:
            body, complete = read_body(response, MAX_ERROR_BYTES, deadline)
            detail = describe_body(body, complete, _media_type(response))
        except Exception:  # a body that breaks off: the status alone says enough
            pass
    location = response.headers.get("location") if 300 <= response.status_code < 400 else None
    return StatusFailure(
        response.status_code, detail, retry_after(response.headers), location and str(location)
    )


def not_a_stream(response: Any, deadline: float) -> NotAStream:
    """A 2xx answer in some other format, described from its first bytes."""
    media = _media_type(response)
    encoding = _encoded(response)
    if encoding is not None:
        return NotAStream("encoded", media, encoding)
    body, complete = read_body(response, MAX_ERROR_BYTES, deadline)
    if "html" in media or body.lstrip()[:1] == b"<":
        return NotAStream("html", media, describe_body(body, complete, "html"))
    if media.endswith("json") and complete:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict) and data.get("error") not in (None, "", {}):
            return NotAStream("error", media, error_message(data["error"]))
        if isinstance(data, dict) and "choices" in data:
            return NotAStream("completion", media, "")
    text = body.decode("utf-8", errors="replace").strip()
    return NotAStream("json" if media.endswith("json") else "other", media, text)


def stream_events(
    client: Any,
    url: str,
    body: dict[str, Any],
    limits: Limits,
    stop: threading.Event,
) -> Iterator[SSEEvent | StreamEnd]:
    """POST ``body`` and yield its events, then a ``StreamEnd``; returns early on ``stop``.

    Raises ``StatusFailure``, ``NotAStream``, ``EventTooLarge``, ``ReplyTooLarge`` or the
    HTTP library's own errors (connect, read, timeout, protocol).
    """
    http = http_module()
    headers = {"Accept": "text/event-stream"}
    with client.stream(
        "POST", url, json=body, headers=headers, timeout=timeout(http, limits)
    ) as response:
        deadline = time.monotonic() + limits.idle_s
        if response.status_code >= 300:
            raise status_failure(response, deadline)
        media = _media_type(response)
        if (media not in ("", "text/event-stream")) or _encoded(response):
            raise not_a_stream(response, deadline)
        decoder = SSEDecoder(limits.max_event_bytes)
        total = 0
        for raw in response.iter_raw():
            if stop.is_set():
                return
            total += len(raw)
            if total > limits.max_reply_bytes:
                raise ReplyTooLarge(limits.max_reply_bytes)
            yield from decoder.feed(raw)
        yield from decoder.close()
        yield StreamEnd(decoder.foreign_line)


def get_json(client: Any, url: str, limits: Limits, max_bytes: int) -> Any:
    """GET ``url`` and parse its JSON (at most ``max_bytes``, within ``idle_s``).

    Raises ``StatusFailure`` for an error status, ``ReplyTooLarge``, ``IdleTimeout``,
    ``ValueError`` for a body that is not JSON, or the HTTP library's errors.
    """
    http = http_module()
    with client.stream("GET", url, timeout=timeout(http, limits)) as response:
        deadline = time.monotonic() + limits.idle_s
        if response.status_code >= 300:
            raise status_failure(response, deadline)
        if _encoded(response):
            raise ValueError("a compressed body")
        body, complete = read_body(response, max_bytes, deadline)
        if not complete:
            raise ReplyTooLarge(max_bytes)
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
