"""A hostile (or just broken) OpenAI-compatible server for tests.

Loopback only (127.0.0.1, an ephemeral port), and bounded: no response writes more
than ``MAX_BYTES`` or runs longer than ``MAX_SECONDS``, and every response stops when the
fixture ends (``stopping``). Behaviours are plain functions of the handler; a test lists
them in ``plan``, one per ``POST /chat/completions`` (the last one repeats), and reads
back what was asked (``requests``, ``auth``) and what each response managed to send
(``sent``: bytes written, whether the client hung up first).

Streams use chunked transfer encoding, as real servers do, so a connection that breaks
off mid-body is a broken body rather than a clean end.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BYTES = 512 << 20  # what the hugest behaviour would send, were it read to the end
MAX_SECONDS = 60.0
BLOCK = 64 * 1024

Behaviour = Callable[["HostileHandler"], None]


@dataclass
class Sent:
    """What one response wrote before it ended."""

    bytes: int = 0
    hung_up: bool = False  # the client closed the connection while we were writing
    done: threading.Event = field(default_factory=threading.Event)


class HostileHandler(BaseHTTPRequestHandler):
    """Runs the planned behaviour; ``send`` enforces the bounds."""

    server: HostileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    # -- writing, bounded ------------------------------------------------------

    def start(
        self,
        status: int = 200,
        content_type: str | None = "text/event-stream",
        headers: Iterable[tuple[str, str]] = (),
        chunked: bool = True,
        length: int | None = None,
    ) -> None:
        """Status line and headers; the body is chunked unless ``length`` is given."""
        self.chunked = chunked and length is None
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        if self.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.flush()

    def send(self, data: bytes | str) -> bool:
        """Write part of the body; False once the client hung up or a bound was reached."""
        raw = data.encode() if isinstance(data, str) else data
        record = self.record
        if not raw:
            return True  # an empty chunk would end a chunked body
        if (
            self.server.stopping.is_set()
            or record.bytes + len(raw) > MAX_BYTES
            or time.monotonic() > self.deadline
        ):
            return False
        framed = f"{len(raw):x}\r\n".encode() + raw + b"\r\n" if self.chunked else raw
        try:
            self.wfile.write(framed)
            self.wfile.flush()
        except OSError:  # BrokenPipeError, ConnectionResetError: the client is gone
            record.hung_up = True
            return False
        record.bytes += len(raw)
        return True

    def end(self) -> None:
        """The body is complete."""
        if self.chunked:
            try:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                self.record.hung_up = True

    def pause(self, seconds: float) -> bool:
        """Wait (a drip's interval); False when the fixture is stopping."""
        return not self.server.stopping.wait(seconds) and time.monotonic() < self.deadline

    def reset(self) -> None:
        """Abort the connection with a TCP reset (SO_LINGER 0), not a clean close."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    # -- requests --------------------------------------------------------------

    def _run(self, behaviour: Behaviour) -> None:
        self.record = Sent()
        self.server.sent.append(self.record)
        self.deadline = time.monotonic() + MAX_SECONDS
        try:
            behaviour(self)
        except OSError:
            self.record.hung_up = True
        finally:
            self.close_connection = True
            self.record.done.set()

    def do_GET(self) -> None:
        self.server.auth.append(self.headers.get("Authorization", ""))
        self._run(self.server.models)

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length", "0")), 16 << 20)
        self.server.requests.append(json.loads(self.rfile.read(length)))
        self.server.auth.append(self.headers.get("Authorization", ""))
        plan = self.server.plan
        index = min(len(self.server.requests), len(plan)) - 1
        self._run(plan[index])


class HostileServer(ThreadingHTTPServer):
    """The server; set ``plan`` (and ``models``) before the client asks."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HostileHandler)
        self.plan: list[Behaviour] = [reply("Hello", " there")]
        self.models: Behaviour = listing({"id": "ok"})
        self.requests: list[dict] = []
        self.auth: list[str] = []
        self.sent: list[Sent] = []
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def last_response(self, timeout: float = 30.0) -> Sent:
        """The latest response, once its handler has finished."""
        record = self.sent[-1]
        assert record.done.wait(timeout), "the hostile server's handler did not finish"
        return record


@contextmanager
def running() -> Iterator[HostileServer]:
    """A hostile server serving on a thread until the block ends."""
    server = HostileServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()


# -- building events -----------------------------------------------------------------


def chunk(
    content: str | None = None,
    finish: str | None = None,
    *,
    delta: object = None,
    choices: object = None,
    usage: object = None,
    raw_usage: str | None = None,
) -> str:
    """One SSE event of a Chat Completions stream. ``raw_usage`` is spliced in as written
    (for JSON that Python would not produce, such as ``1e400``)."""
    if choices is None:
        body_delta = delta if delta is not None else ({"content": content} if content else {})
        choices = [{"index": 0, "delta": body_delta, "finish_reason": finish}]
    body: dict[str, object] = {"id": "x", "object": "chat.completion.chunk", "choices": choices}
    if usage is not None:
        body["usage"] = usage
    text = json.dumps(body)
    if raw_usage is not None:
        text = text[:-1] + f', "usage": {raw_usage}}}'
    return f"data: {text}\n\n"


USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
DONE = "data: [DONE]\n\n"


def events(*parts: str, status: int = 200, content_type: str = "text/event-stream") -> Behaviour:
    """A stream of exactly these SSE texts, ended cleanly."""

    def run(h: HostileHandler) -> None:
        h.start(status, content_type)
        for part in parts:
            if not h.send(part):
                return
        h.end()

    return run


def reply(*pieces: str, usage: object = USAGE) -> Behaviour:
    """A well-formed reply: text chunks, a stop, a usage chunk, [DONE]."""
    parts = [chunk(p) for p in pieces]
    return events(*parts, chunk(finish="stop"), chunk(choices=[], usage=usage), DONE)


def listing(*models: dict[str, object]) -> Behaviour:
    """``GET /v1/models`` answering with these entries."""
    return json_body(200, {"object": "list", "data": list(models)})


def json_body(status: int, payload: object, headers: Iterable[tuple[str, str]] = ()) -> Behaviour:
    """A whole JSON body with a Content-Length."""
    data = json.dumps(payload).encode()

    def run(h: HostileHandler) -> None:
        h.start(status, "application/json", headers, length=len(data))
        h.send(data)

    return run


def body(
    status: int, text: str | bytes, content_type: str, headers: Iterable[tuple[str, str]] = ()
) -> Behaviour:
    """Any body with a Content-Length."""
    data = text.encode() if isinstance(text, str) else text

    def run(h: HostileHandler) -> None:
        h.start(status, content_type, headers, length=len(data))
        h.send(data)

    return run


def endless_body(
    head: bytes,
    block: bytes,
    *,
    status: int = 200,
    content_type: str = "text/event-stream",
    headers: Iterable[tuple[str, str]] = (),
) -> Behaviour:
    """``head`` then ``block`` again and again until the client hangs up (or the bounds)."""

    def run(h: HostileHandler) -> None:
        h.start(status, content_type, headers)
        if not h.send(head):
            return
        while h.send(block):
            pass

    return run


def huge_line() -> Behaviour:
    """One ``data:`` line that never ends: hundreds of MB without a newline."""
    return endless_body(b"data: ", b"x" * BLOCK)


def huge_event() -> Behaviour:
    """One event of endless short ``data:`` lines, never a blank line to end it."""
    return endless_body(b"", b"data: x\n" * (BLOCK // 8))


def huge_error(status: int = 500) -> Behaviour:
    """An error status whose body goes on for hundreds of MB."""
    return endless_body(
        b'{"error": {"message": "', b"y" * BLOCK, status=status, content_type="application/json"
    )


def endless(text: str = "tok ") -> Behaviour:
    """Valid text chunks forever, never a finish."""
    return endless_body(chunk(text).encode(), chunk(text).encode() * 16)


def endless_keepalive(event: str = ": keep-alive\n\n") -> Behaviour:
    """Events that carry no text, forever (comments, or empty deltas)."""
    return endless_body(b"", event.encode() * 256)


def drip(data: str, interval: float, *, first: Iterable[str] = ()) -> Behaviour:
    """``first`` events at once, then ``data`` one byte every ``interval`` seconds."""

    def run(h: HostileHandler) -> None:
        h.start()
        for part in first:
            h.send(part)
        for byte in data.encode():
            if not h.pause(interval) or not h.send(bytes([byte])):
                return

    return run


def slow(text: str, interval: float) -> Behaviour:
    """Valid chunks, one every ``interval`` seconds, never a finish."""

    def run(h: HostileHandler) -> None:
        h.start()
        while h.send(chunk(text)) and h.pause(interval):
            pass

    return run


def silent(*first: str) -> Behaviour:
    """``first`` events, then nothing at all until the fixture stops."""

    def run(h: HostileHandler) -> None:
        h.start()
        for part in first:
            h.send(part)
        h.pause(MAX_SECONDS)

    return run


def reset(*first: str, before_headers: bool = False) -> Behaviour:
    """``first`` events, then a TCP reset (or a reset before any response at all)."""

    def run(h: HostileHandler) -> None:
        if not before_headers:
            h.start()
            for part in first:
                h.send(part)
        h.reset()

    return run


def status(code: int, message: str = "try later", *, retry_after: str | None = None) -> Behaviour:
    """An OpenAI-style error with this status (and a Retry-After header if given)."""
    headers = [("Retry-After", retry_after)] if retry_after is not None else []
    return json_body(code, {"error": {"message": message, "code": code}}, headers)


def echo_auth(where: str) -> Behaviour:
    """Reflect the request's Authorization header back: ``where`` says how."""

    def run(h: HostileHandler) -> None:
        auth = h.headers.get("Authorization", "")
        if where == "error":
            status(400, f"bad request; you sent Authorization: {auth}")(h)
        elif where == "plain-error":
            body(502, f"upstream said: headers={{'authorization': '{auth}'}}", "text/plain")(h)
        elif where == "redirect":
            headers = [("Location", f"http://127.0.0.1:1/login?token={auth.split()[-1]}")]
            body(307, "", "text/plain", headers)(h)
        elif where == "content":
            key = auth.split()[-1]
            cut = len(key) // 2  # the key split across two chunks
            pieces = ["Your key is ", key[:cut], key[cut:], ", and again: ", key, "."]
            reply(*pieces)(h)
        elif where == "stream-error":
            events(chunk("Hi"), f'data: {{"error": {{"message": "denied {auth}"}}}}\n\n')(h)
        elif where == "error-event":
            events(chunk("Hi"), f"event: error\ndata: {json.dumps(auth)}\n\n")(h)
        elif where == "html":
            page = f"<html><head><title>Denied {auth}</title></head></html>"
            body(200, page, "text/html")(h)
        else:
            raise ValueError(where)

    return run
