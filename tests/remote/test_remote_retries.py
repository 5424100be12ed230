"""Item 9 of issue 12: transient failures before the first token are retried with
backoff, a bounded number of times (``server_retries``), honouring Retry-After up to
``server_retry_max_wait_s``; after the first token, never. Waits are recorded, not slept."""

from __future__ import annotations

import email.utils
import threading
import time

import pytest

from mixchat.engine.base import Event, Finished, GenerationParams, Notice
from tests.remote import hostile as h
from tests.remote.conftest import free_port
from tests.remote.hostile import HostileServer
from tests.remote.talk import HELLO, converse, engine_for, failure, finished, notices, text_of

OK = h.reply("Hello", " there")


def test_two_503s_then_an_answer(hostile: HostileServer) -> None:
    hostile.plan = [h.status(503, "warming up"), h.status(503, "warming up"), OK]
    waits: list[float] = []
    events = converse(hostile.url, waits=waits)
    assert text_of(events) == "Hello there" and finished(events)[0].reason == "stop"
    assert len(hostile.requests) == 3 and waits == [0.5, 1.0]
    assert notices(events) == [
        f"server error 503 from {hostile.url}: warming up; retrying in 0.5s (retry 1 of 3)",
        f"server error 503 from {hostile.url}: warming up; retrying in 1s (retry 2 of 3)",
    ]


@pytest.mark.parametrize("code", [408, 429, 502, 503, 504])
def test_each_transient_status_is_retried(hostile: HostileServer, code: int) -> None:
    hostile.plan = [h.status(code), OK]
    waits: list[float] = []
    assert text_of(converse(hostile.url, waits=waits)) == "Hello there"
    assert len(hostile.requests) == 2 and waits == [0.5]


@pytest.mark.parametrize(
    ("header", "value", "expected"),
    [
        ("Retry-After", "2", 2.0),
        ("Retry-After", "0", 0.0),
        ("Retry-After", "1.5", 1.5),
        ("retry-after-ms", "250", 0.25),
        ("Retry-After", "soon", 0.5),  # unreadable: the usual backoff
        ("Retry-After", "-5", 0.5),
        ("Retry-After", "1e400", 0.5),
    ],
)
def test_retry_after_is_honoured(
    hostile: HostileServer, header: str, value: str, expected: float
) -> None:
    asked = h.json_body(429, {"error": {"message": "slow down"}}, [(header, value)])
    hostile.plan = [asked, OK]
    waits: list[float] = []
    assert text_of(converse(hostile.url, waits=waits)) == "Hello there"
    assert waits == [expected]


def test_retry_after_as_an_http_date(hostile: HostileServer) -> None:
    # Far enough ahead that a slow machine does not reach it before the retry is planned
    # (the waits are recorded, not slept).
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    hostile.plan = [h.status(503, retry_after=when), OK]
    waits: list[float] = []
    assert text_of(converse(hostile.url, waits=waits)) == "Hello there"
    assert len(waits) == 1 and 5.0 < waits[0] <= 20.0  # whole seconds in the date


def test_a_retry_after_longer_than_allowed_is_not_waited_for(hostile: HostileServer) -> None:
    hostile.plan = [h.status(429, retry_after="120"), OK]
    waits: list[float] = []
    events = converse(hostile.url, waits=waits, server_retry_max_wait_s=30)
    assert failure(events).message == (
        f"{hostile.url} is busy (429 too many requests); try again shortly; it asks to wait "
        "120s, more than server_retry_max_wait_s (30s)"
    )
    assert len(hostile.requests) == 1 and waits == []


def test_no_retry_past_the_reply_deadline(hostile: HostileServer) -> None:
    hostile.plan = [h.status(503, retry_after="20"), OK]
    events = converse(hostile.url, waits=[], server_reply_timeout_s=5)
    assert "no time is left to retry within server_reply_timeout_s" in failure(events).message
    assert len(hostile.requests) == 1


@pytest.mark.parametrize("retries", [0, 1, 2, 5])
def test_retries_are_bounded_by_the_setting(hostile: HostileServer, retries: int) -> None:
    hostile.plan = [h.status(502, "bad gateway")]
    waits: list[float] = []
    events = converse(hostile.url, waits=waits, server_retries=retries, server_retry_max_wait_s=1.5)
    assert len(hostile.requests) == retries + 1
    assert waits == [0.5, 1.0, 1.5, 1.5, 1.5][:retries]  # doubling, capped
    gave_up = f" (gave up after {retries} retries)" if retries else ""
    assert failure(events).message == f"server error 502 from {hostile.url}: bad gateway{gave_up}"


@pytest.mark.parametrize(
    "dropped",
    [
        h.reset(before_headers=True),
        h.reset(),
        h.reset(h.chunk(delta={"role": "assistant"})),  # a role, but no text yet
        h.reset(": keep-alive\n\n"),
    ],
    ids=["before-headers", "after-headers", "after-a-role-chunk", "after-a-comment"],
)
def test_a_connection_dropped_before_the_first_token_is_retried(
    hostile: HostileServer, dropped: h.Behaviour
) -> None:
    hostile.plan = [dropped, OK]
    waits: list[float] = []
    events = converse(hostile.url, waits=waits)
    assert text_of(events) == "Hello there" and finished(events)[0].reason == "stop"
    assert len(hostile.requests) == 2 and waits == [0.5]


@pytest.mark.parametrize(
    "broken",
    [
        h.reset(h.chunk("Hel")),
        h.events(h.chunk("Hel"), 'data: {"error": {"message": "oom"}}\n\n'),
        h.events(h.chunk("Hel")),  # a clean end, but no finish
        h.drip("data: {", 0.05, first=[h.chunk("Hel")]),
    ],
    ids=["reset", "error-event", "ended-early", "went-quiet"],
)
def test_never_a_retry_after_the_first_token(hostile: HostileServer, broken: h.Behaviour) -> None:
    hostile.plan = [broken, OK]
    waits: list[float] = []
    events = converse(hostile.url, waits=waits, server_idle_timeout_s=2)
    assert text_of(events) == "Hel" and waits == [] and len(hostile.requests) == 1
    failure(events)


@pytest.mark.parametrize(
    "final",
    [
        h.status(500, "boom"),
        h.status(400, "bad"),
        h.status(401),
        h.status(404),
        h.silent(),
        h.events("data: {nope\n\n"),
        h.events('data: {"error": {"message": "x"}}\n\n'),
        h.body(200, "<html></html>", "text/html"),
    ],
    ids=["500", "400", "401", "404", "silent", "malformed", "error-event", "html"],
)
def test_lasting_failures_are_not_retried(hostile: HostileServer, final: h.Behaviour) -> None:
    hostile.plan = [final, OK]
    waits: list[float] = []
    events = converse(hostile.url, waits=waits, server_idle_timeout_s=2)
    failure(events)
    assert len(hostile.requests) == 1 and waits == []


def test_a_refused_connection_is_retried_then_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    waits: list[float] = []
    events = converse(url, waits=waits, server_retries=3)
    assert waits == [0.5, 1.0, 2.0]
    message = failure(events).message
    assert message.startswith(f"cannot reach {url}") and message.endswith(
        "(gave up after 3 retries)"
    )
    assert events[-1].unsent  # type: ignore[union-attr]
    assert len([e for e in events if isinstance(e, Notice)]) == 3


def test_a_cancel_during_the_wait_ends_at_once(hostile: HostileServer) -> None:
    hostile.plan = [h.status(503), OK]
    engine = engine_for(hostile.url)
    cancel = threading.Event()

    def cancelled_while_waiting(seconds: float, event: threading.Event) -> bool:
        cancel.set()  # the user presses Esc during the wait
        return event.wait(seconds)

    engine.wait = cancelled_while_waiting
    events: list[Event] = list(
        engine.stream(HELLO, None, GenerationParams(max_new_tokens=8), cancel)
    )
    engine.close()
    assert events[-1] == Finished("cancelled") and len(hostile.requests) == 1


def test_the_real_wait_retries(hostile: HostileServer) -> None:
    hostile.plan = [h.status(503), OK]
    events = converse(hostile.url, server_retry_max_wait_s=0.01)  # sleeps 0.01 s
    assert text_of(events) == "Hello there" and len(hostile.requests) == 2


def test_a_connection_the_server_closed_is_never_reused(hostile: HostileServer) -> None:
    """The stand-in server closes each connection after its response without saying so
    (as servers do with idle keep-alive connections), here a moment after the response
    ends. A pooled connection would carry the next request into that close, failing it
    with "disconnected without a response" and costing a retry and a notice; each
    request gets a fresh connection instead."""

    def lingering(handler: h.HostileHandler) -> None:
        OK(handler)
        time.sleep(0.3)  # the next request arrives on this connection, then it closes

    hostile.plan = [lingering]
    engine = engine_for(hostile.url)
    waits: list[float] = []
    engine.wait = lambda seconds, cancel: bool(waits.append(seconds))
    params = GenerationParams(temperature=0.0, max_new_tokens=16)
    try:
        for _ in range(3):
            events = list(engine.stream(HELLO, None, params, threading.Event()))
            assert text_of(events) == "Hello there" and notices(events) == []
    finally:
        engine.close()
    assert waits == [] and len(hostile.requests) == 3
