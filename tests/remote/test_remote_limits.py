"""Item 5 of issue 12: nothing a server sends can grow our memory or hold us forever.

Sizes (one event or line, an error body, a whole reply), --max-tokens, the idle timeout
and the overall deadline, against the hostile server. Every limit's line names the
setting to raise.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mixchat.engine.base import GenerationParams
from tests.remote import hostile as h
from tests.remote.hostile import HostileServer
from tests.remote.talk import HELLO, converse, engine_for, failure, finished, notices, text_of

ROOT = Path(__file__).resolve().parents[2]
ASK = (HELLO, None, GenerationParams(max_new_tokens=8), threading.Event())
FAR_BELOW = 64 << 20  # a stopped reader lets the server write socket buffers, not 512 MB


def assert_reader_stopped_early(server: HostileServer) -> None:
    """The client hung up long before the server's bound: it did not read it all."""
    sent = server.last_response()
    assert sent.hung_up and sent.bytes < FAR_BELOW, sent


@pytest.mark.parametrize("behaviour", [h.huge_line, h.huge_event], ids=["line", "event"])
def test_an_endless_event_stops_at_the_event_cap(hostile: HostileServer, behaviour) -> None:
    hostile.plan = [behaviour()]
    message = failure(converse(hostile.url, server_max_event_bytes=64 * 1024)).message
    assert message == (
        f"{hostile.url} sent a stream event larger than 65,536 bytes; stopped reading "
        "(raise server_max_event_bytes to accept it)"
    )
    assert_reader_stopped_early(hostile)


def test_an_event_under_the_cap_is_read(hostile: HostileServer) -> None:
    big = "x" * 50_000  # one chunk of 50 KB of text, under a 64 KiB cap
    hostile.plan = [h.events(h.chunk(big), h.chunk(finish="stop"), h.DONE)]
    events = converse(hostile.url, server_max_event_bytes=64 * 1024, max_tokens=1000)
    assert text_of(events) == big
    assert finished(events)[0].reason == "stop"


@pytest.mark.parametrize("code", [500, 400, 503])
def test_a_huge_error_body_is_read_only_in_part(hostile: HostileServer, code: int) -> None:
    hostile.plan = [h.huge_error(code)]
    message = failure(converse(hostile.url, server_retries=0)).message
    assert f"({code})" in message or f"error {code}" in message
    assert "yyyyyy" in message and message.endswith("…")
    assert_reader_stopped_early(hostile)


def test_a_huge_page_instead_of_a_stream_is_read_only_in_part(hostile: HostileServer) -> None:
    hostile.plan = [
        h.endless_body(b"<html><title>Login</title>", b"z" * h.BLOCK, content_type="text/html")
    ]
    message = failure(converse(hostile.url)).message
    assert message.startswith(f"{hostile.url} answered with an HTML page (Login) instead")
    assert_reader_stopped_early(hostile)


def test_an_endless_stream_stops_at_max_tokens(hostile: HostileServer) -> None:
    hostile.plan = [h.endless("tok ")]
    events = converse(hostile.url, max_tokens=20)
    assert text_of(events) == "tok " * 20
    end, usage = finished(events)
    assert end.reason == "length" and usage.completion_tokens == 20
    assert notices(events) == [
        f"{hostile.url} kept sending past --max-tokens 20; stopped reading "
        "(raise max_new_tokens for longer replies)"
    ]
    assert hostile.requests[-1]["max_tokens"] == 20  # asked for, and enforced
    assert_reader_stopped_early(hostile)


def test_text_is_bounded_even_in_few_huge_chunks(hostile: HostileServer) -> None:
    hostile.plan = [h.events(*[h.chunk("y" * 300)] * 3, h.chunk(finish="stop"), h.DONE)]
    events = converse(hostile.url, max_tokens=2)  # 64 characters a token at most: 128
    assert text_of(events) == "y" * 128
    assert finished(events)[0].reason == "length"


def test_a_reply_of_exactly_max_tokens_chunks_is_not_cut(hostile: HostileServer) -> None:
    hostile.plan = [h.reply("a", "b", "c")]
    events = converse(hostile.url, max_tokens=3)
    assert text_of(events) == "abc" and finished(events)[0].reason == "stop"
    assert notices(events) == []


@pytest.mark.parametrize(
    "event",
    [h.chunk(delta={"role": "assistant"}), ": keep-alive\n\n", "data: {}\n\n"],
    ids=["empty-deltas", "comments", "empty-objects"],
)
def test_endless_events_without_text_stop_at_the_reply_cap(
    hostile: HostileServer, event: str
) -> None:
    hostile.plan = [h.events(h.chunk("Hi")), h.endless_keepalive(event)]
    hostile.plan = [h.endless_body(h.chunk("Hi").encode(), event.encode() * 256)]
    events = converse(hostile.url, server_max_reply_bytes=256 * 1024)
    assert text_of(events) == "Hi"
    assert failure(events).message == (
        f"{hostile.url} sent more than 262,144 bytes; stopped reading "
        "(raise server_max_reply_bytes to accept it)"
    )
    assert_reader_stopped_early(hostile)


def test_a_server_dripping_bytes_hits_the_idle_timeout(hostile: HostileServer) -> None:
    hostile.plan = [h.drip(h.chunk("never complete"), 0.05, first=[h.chunk("Hi")])]
    events = converse(hostile.url, server_idle_timeout_s=2.0)
    assert text_of(events) == "Hi"
    assert failure(events).message == (
        f"{hostile.url} sent no data for 2s (raise server_idle_timeout_s to wait longer)"
    )
    assert_reader_stopped_early(hostile)


def test_silence_before_the_first_event_hits_the_idle_timeout(hostile: HostileServer) -> None:
    hostile.plan = [h.silent()]
    events = converse(hostile.url, server_idle_timeout_s=2)
    assert "(raise server_idle_timeout_s to wait longer)" in failure(events).message
    assert len(hostile.requests) == 1  # a silent server is not asked again


def test_a_slow_endless_reply_hits_the_overall_deadline(hostile: HostileServer) -> None:
    hostile.plan = [h.slow("tok ", 0.05)]
    events = converse(hostile.url, server_reply_timeout_s=3.0, max_tokens=10_000)
    assert text_of(events).startswith("tok tok ")  # what came is kept
    assert failure(events).message == (
        f"{hostile.url} took more than 3s for this reply "
        "(raise server_reply_timeout_s to wait longer)"
    )


def test_memory_stays_bounded_while_a_server_sends_hundreds_of_mb(
    hostile: HostileServer,
) -> None:
    """In a fresh process (its peak RSS is its own): one line that would be 512 MB, read
    with the default 1 MiB event cap, grows the peak by a few MB, not hundreds."""
    hostile.plan = [h.reply("warm", "up"), h.huge_line()]
    result = subprocess.run(
        [sys.executable, "-m", "tests.remote.rss_driver", hostile.url, json.dumps({})],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=True,
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert "server_max_event_bytes" in figures["failure"]
    growth_mib = (figures["after_kib"] - figures["before_kib"]) / 1024
    assert growth_mib < 32, figures
    assert_reader_stopped_early(hostile)


@pytest.mark.parametrize(
    "listing",
    [
        h.endless_body(b'{"data": [', b'{"id": "m"}, ' * 4096, content_type="application/json"),
        h.huge_error(200),
    ],
    ids=["endless-listing", "endless-string"],
)
def test_a_huge_model_listing_is_ignored_and_the_reply_works(
    hostile: HostileServer, listing: h.Behaviour
) -> None:
    hostile.models = listing
    engine = engine_for(hostile.url)
    loaded = list(engine.load())
    assert notices(loaded) == [  # type: ignore[arg-type]
        f"ignored {hostile.url}'s model listing: over 4,194,304 bytes"
    ]
    assert_reader_stopped_early(hostile)
    events = list(engine.stream(*ASK))
    engine.close()
    assert text_of(events) == "Hello there"
