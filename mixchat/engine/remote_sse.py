"""Server-Sent Events from raw bytes, with a cap on how big one event may grow.

A hostile or broken server can send one line of hundreds of megabytes, or one event of
endless ``data:`` lines; a decoder that buffers a whole line first (as most do) grows
with it. This one counts the bytes of the event being read, its unfinished line
included, and raises ``EventTooLarge`` as soon as they pass the cap, so memory stays
within the cap plus one network read. Framing follows the WHATWG rules: lines end with
CRLF, LF or CR (also split across reads), ``:`` starts a comment, a blank line ends an
event, ``data`` lines are joined with newlines, unknown fields are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_EOL = re.compile(rb"\r\n|\r|\n")
_SAMPLE = 80  # characters kept of the first line that is not Server-Sent Events


@dataclass(frozen=True)
class SSEEvent:
    """One event: its ``event`` type ("message" unless the server named one) and data."""

    data: str
    event: str = "message"


class EventTooLarge(Exception):
    """One event (or one line of it) passed ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a stream event passed {limit} bytes")
        self.limit = limit


class SSEDecoder:
    """Feed it network reads; it returns the events they complete."""

    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self.foreign_line: str | None = None  # the first line that is not SSE syntax
        self._line = bytearray()  # the unfinished line
        self._event_bytes = 0  # bytes of the finished lines of the current event
        self._data: list[str] = []
        self._type = ""
        self._skip_lf = False  # the last read ended with CR: a leading LF is its CRLF

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Decode ``chunk``; raises ``EventTooLarge`` once the current event is too big."""
        events: list[SSEEvent] = []
        start = 0
        if self._skip_lf and chunk[:1] == b"\n":
            start = 1
        self._skip_lf = False
        while start < len(chunk):
            match = _EOL.search(chunk, start)
            end = match.start() if match else len(chunk)
            if len(self._line) + end - start + self._event_bytes > self.max_event_bytes:
                raise EventTooLarge(self.max_event_bytes)
            self._line += chunk[start:end]
            if match is None:
                break
            self._skip_lf = match.group() == b"\r" and match.end() == len(chunk)
            start = match.end()
            event = self._end_line()
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[SSEEvent]:
        """The stream ended: an event whose lines were all complete still counts."""
        if self._line and self.foreign_line is None and not self._line.startswith(b"data"):
            self.foreign_line = self._line[:_SAMPLE].decode("utf-8", errors="replace")
        self._line.clear()  # an unfinished line at the end was cut off: not trusted
        event = self._dispatch()
        return [event] if event is not None else []

    def _end_line(self) -> SSEEvent | None:
        raw = bytes(self._line)
        self._line.clear()
        if not raw:
            return self._dispatch()
        self._event_bytes += len(raw) + 1
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            return None  # a comment (servers send them as keep-alives)
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name not in ("id", "retry") and self.foreign_line is None:
            self.foreign_line = line[:_SAMPLE]
        return None

    def _dispatch(self) -> SSEEvent | None:
        data, kind = self._data, self._type
        self._data, self._type, self._event_bytes = [], "", 0
        if not data:
            return None
        return SSEEvent("\n".join(data), kind or "message")
