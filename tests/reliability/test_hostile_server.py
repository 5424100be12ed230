"""Hostile or broken servers against the installed command (issue 12, items 5-9).

``mixchat ask --endpoint`` meets the hostile server of tests/remote/hostile.py: a line of
hundreds of MB, an endless stream, a dripping one, absurd usage figures, transient
errors. Each run ends in one line (or a clean reply), bounded memory, and a database
that holds what was shown. The finer variants live in tests/remote/.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import mixchat_exe
from tests.reliability.helpers import (
    Result,
    assert_one_line_error,
    cli,
    database,
    integrity,
    rows,
)
from tests.remote import hostile as h
from tests.remote.hostile import HostileServer, running

pytestmark = pytest.mark.e2e


@pytest.fixture
def server() -> Iterator[HostileServer]:
    with running() as hostile:
        yield hostile


def ask(server: HostileServer, *args: str, env: dict[str, str] | None = None) -> Result:
    return cli("ask", "--endpoint", server.url, "--model", "ok", *args, env=env)


def last_reply(home: Path) -> tuple[str, str]:
    (row,) = rows(
        database(home),
        "SELECT content, status FROM messages WHERE role = 'assistant' ORDER BY id DESC LIMIT 1",
    )
    return row["content"], row["status"]


def peak_rss_kib(*args: str) -> int:
    """The peak RSS of one ``mixchat`` run, measured by a fresh parent process."""
    code = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, mixchat_exe(), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return int(done.stdout.strip())


def test_a_line_of_hundreds_of_mb_costs_a_few_mb(server: HostileServer) -> None:
    base = ("ask", "--endpoint", server.url, "--model", "ok", "--no-save", "hi")
    server.plan = [h.reply("Hello")]
    normal = peak_rss_kib(*base)
    server.plan = [h.huge_line()]
    hostile = peak_rss_kib(*base)
    sent = server.last_response()
    assert sent.hung_up and sent.bytes < h.MAX_BYTES // 8
    assert (hostile - normal) / 1024 < 32, (normal, hostile)
    result = ask(server, "hi")
    assert_one_line_error(result, 1, "server_max_event_bytes")


def test_an_endless_stream_stops_at_max_tokens_and_is_saved(
    server: HostileServer, mixchat_home: Path
) -> None:
    server.plan = [h.endless("tok ")]
    result = ask(server, "--max-tokens", "20", "--json", "hi")
    assert result.code == 0, result.err
    payload = json.loads(result.out)
    assert payload["reply"] == "tok " * 20 and payload["finish_reason"] == "length"
    assert "raise max_new_tokens" in result.err
    assert last_reply(mixchat_home) == ("tok " * 20, "complete")


def test_a_dripping_server_times_out_in_one_line_keeping_the_text(
    server: HostileServer, mixchat_home: Path
) -> None:
    server.plan = [h.drip(h.chunk("never"), 0.05, first=[h.chunk("Partial")])]
    result = ask(server, "hi", env={"MIXCHAT_SERVER_IDLE_TIMEOUT_S": "2"})
    assert_one_line_error(result, 1, "sent no data for 2s", "server_idle_timeout_s")
    assert result.out == "Partial"
    assert last_reply(mixchat_home) == ("Partial", "error")
    integrity(database(mixchat_home))


@pytest.mark.parametrize("bad", [str(2**70), "1e400", "-5", '"many"', '{"x": 1}'])
def test_absurd_usage_never_costs_the_reply(
    server: HostileServer, mixchat_home: Path, bad: str
) -> None:
    raw = f'{{"prompt_tokens": {bad}, "completion_tokens": {bad}}}'
    server.plan = [
        h.events(
            h.chunk("Hello"), h.chunk(finish="stop"), h.chunk(choices=[], raw_usage=raw), h.DONE
        )
    ]
    result = ask(server, "--json", "hi")
    assert result.code == 0 and "Traceback" not in result.err, result.err
    assert json.loads(result.out)["usage"]["completion_tokens"] == 1
    assert "ignored the server's usage" in result.err
    assert last_reply(mixchat_home) == ("Hello", "complete")


def test_transient_errors_are_retried_and_the_reply_arrives(server: HostileServer) -> None:
    server.plan = [
        h.status(503, retry_after="0"),
        h.reset(before_headers=True),
        h.reply("Hello", " there"),
    ]
    result = ask(server, "hi")
    assert result.code == 0 and result.out == "Hello there", result.err
    assert result.err.count("retrying in") == 2 and len(server.requests) == 3
