"""One line for the user about each way a server request can fail, and which failures
are worth another try. Every line names the setting to raise when a limit was hit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mixchat.config import Settings
from mixchat.engine.remote_http import (
    IdleTimeout,
    NotAStream,
    ReplyTooLarge,
    StatusFailure,
    http_module,
)
from mixchat.engine.remote_sse import EventTooLarge
from mixchat.textsafe import neutralize

RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})


@dataclass(frozen=True)
class Context:
    """What the messages mention: where, which model, which key variable, the limits."""

    endpoint: str
    settings: Settings
    api_key_env: str
    connect_timeout_s: float
    served: list[str] | None = None


def one_line(text: Any, limit: int = 300) -> str:
    """Whitespace collapsed (server messages may hold tracebacks), control characters
    made visible, and at most ``limit`` characters."""
    line = neutralize(" ".join(str(text).split()))
    return line if len(line) <= limit else line[: limit - 1] + "…"


def idle_message(ctx: Context) -> str:
    """The line for a server that went quiet (or trickles bytes without an event)."""
    seconds = ctx.settings.server_idle_timeout_s
    return (
        f"{ctx.endpoint} sent no data for {seconds:g}s (raise server_idle_timeout_s to wait longer)"
    )


def deadline_message(ctx: Context) -> str:
    """The line for a reply that took longer than the overall deadline."""
    seconds = ctx.settings.server_reply_timeout_s
    return (
        f"{ctx.endpoint} took more than {seconds:g}s for this reply "
        "(raise server_reply_timeout_s to wait longer)"
    )


def describe(exc: BaseException, ctx: Context, *, mid_reply: bool = False) -> str:
    """One line about a failed request (before redaction: the caller redacts).

    ``mid_reply``: text had already arrived, so a broken connection broke a reply.
    """
    http = http_module()
    where = ctx.endpoint
    if isinstance(exc, StatusFailure):
        return _status_line(exc, ctx)
    if isinstance(exc, NotAStream):
        return _not_a_stream_line(exc, where)
    if isinstance(exc, EventTooLarge):
        return (
            f"{where} sent a stream event larger than {exc.limit:,} bytes; stopped reading "
            "(raise server_max_event_bytes to accept it)"
        )
    if isinstance(exc, ReplyTooLarge):
        return (
            f"{where} sent more than {exc.limit:,} bytes; stopped reading "
            "(raise server_max_reply_bytes to accept it)"
        )
    if isinstance(exc, http.ConnectTimeout):
        return f"cannot reach {where}: no connection within {ctx.connect_timeout_s:g}s"
    if isinstance(exc, http.TimeoutException | IdleTimeout):
        return idle_message(ctx)
    reason = one_line(str(exc), 160) or type(exc).__name__
    if isinstance(exc, http.ConnectError):
        return f"cannot reach {where}: {reason}"
    if isinstance(exc, http.HTTPError | http.InvalidURL):
        if mid_reply:
            return f"the connection to {where} broke mid-reply: {reason}"
        return f"the connection to {where} broke before the reply began: {reason}"
    return one_line(f"{type(exc).__name__}: {exc}".rstrip(": "))


def _status_line(exc: StatusFailure, ctx: Context) -> str:
    where, status, detail = ctx.endpoint, exc.status, one_line(exc.detail, 200)
    if status == 401:
        return f"{where} refused the API key (401); put the key in ${ctx.api_key_env}"
    if status == 403:
        return f"{where} denied access (403): {detail}"
    if status == 404:
        names = ", ".join(one_line(m, 60) for m in (ctx.served or [])[:5])
        served = f"; it serves {names}" if names else ""
        return f"model {ctx.settings.model!r} not found at {where} (404){served}"
    if status == 429:
        return f"{where} is busy (429 too many requests); try again shortly"
    if 300 <= status < 400:
        target = one_line(exc.location or "nowhere", 120)
        return f"{where} redirects ({status}) to {target}; point --endpoint there"
    if status >= 500:
        return f"server error {status} from {where}: {detail}"
    return f"{where} rejected the request ({status}): {detail}"


def _not_a_stream_line(exc: NotAStream, where: str) -> str:
    detail = one_line(exc.detail, 120)
    if exc.kind == "html":
        return (
            f"{where} answered with {detail} instead of an event stream; "
            "is --endpoint the address of its OpenAI-compatible API?"
        )
    if exc.kind == "completion":
        return (
            f"{where} answered with a whole JSON reply instead of streaming it "
            "(it ignored stream=true); mixchat needs a server that streams"
        )
    if exc.kind == "error":
        return f"{where} reported an error: {detail}"
    if exc.kind == "encoded":
        return f"{where} sent a compressed ({detail}) stream though mixchat asked for none"
    kind = exc.content_type or "no content type"
    return f"{where} answered with {kind} instead of an event stream: {detail or 'empty'}"


def retryable(exc: BaseException) -> bool:
    """A failure before the first token that another try may not meet: a refused or
    reset connection, a stream dropped before any text, 408, 429, 502, 503, 504."""
    http = http_module()
    if isinstance(exc, StatusFailure):
        return exc.status in RETRY_STATUSES
    if isinstance(exc, http.TimeoutException):
        return False  # a slow server only gets slower when asked again
    return isinstance(exc, http.ConnectError | http.RemoteProtocolError | http.ReadError)


def unsent(exc: BaseException) -> bool:
    """The request never reached the server (so no question was really asked)."""
    http = http_module()
    return isinstance(exc, http.ConnectError | http.ConnectTimeout | http.InvalidURL)
