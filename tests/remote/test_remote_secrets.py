"""Item 7 of issue 12: the API key never shows, whatever the server echoes back.

A server reflects the Authorization header in error bodies, plain-text errors, a
redirect, an HTML page, error events mid-stream, a model name and the reply itself;
the key's value (and any bearer token) is redacted from every message, notice, reply
text, saved row and --json output.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixchat.engine.base import EngineError
from tests.e2e.helpers import run
from tests.remote import hostile as h
from tests.remote.hostile import HostileServer
from tests.remote.talk import converse, engine_for, failure, finished, notices, text_of

KEY = "sk-test-Secret0123456789abcdef"


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MIXCHAT_API_KEY", KEY)
    return KEY


def everything_said(events: list[object]) -> str:
    return repr(events)


@pytest.mark.parametrize(
    ("where", "shown"),
    [
        ("error", "rejected the request (400): bad request; you sent Authorization: Bearer "),
        ("plain-error", "server error 502 from"),
        ("redirect", "redirects (307) to http://127.0.0.1:1/login?token=[redacted]"),
        ("html", "answered with an HTML page (Denied Bearer [redacted])"),
        ("stream-error", "reported an error mid-reply: denied Bearer [redacted]"),
        ("error-event", "reported an error mid-reply: Bearer [redacted]"),
    ],
)
def test_an_echoed_key_is_redacted_from_the_error_line(
    hostile: HostileServer, key: str, where: str, shown: str
) -> None:
    hostile.plan = [h.echo_auth(where)]
    events = converse(hostile.url, server_retries=0)
    assert hostile.auth[-1] == f"Bearer {key}"  # the server did get the key
    message = failure(events).message
    assert shown in message and "[redacted]" in message
    assert key not in everything_said(events) and key[4:20] not in everything_said(events)


def test_a_key_echoed_in_the_reply_is_redacted_even_when_split(
    hostile: HostileServer, key: str
) -> None:
    hostile.plan = [h.echo_auth("content")]
    events = converse(hostile.url)
    assert text_of(events) == "Your key is [redacted], and again: [redacted]."
    assert finished(events)[0].reason == "stop"
    assert key not in everything_said(events)


def test_held_back_text_is_released_when_it_is_not_the_key(
    hostile: HostileServer, key: str
) -> None:
    hostile.plan = [h.reply("prefix ", key[:6], " and more", key[:10])]
    events = converse(hostile.url)
    assert text_of(events) == f"prefix {key[:6]} and more{key[:10]}"


def test_a_key_in_a_model_name_is_redacted_from_the_notice(
    hostile: HostileServer, key: str
) -> None:
    hostile.models = h.listing({"id": f"model-{key}"}, {"id": "other"})
    engine = engine_for(hostile.url, model="mixtral")
    loaded = list(engine.load())
    engine.close()
    assert notices(loaded) == [  # type: ignore[arg-type]
        f"{hostile.url} lists model-[redacted], other, not mixtral; pass the served name "
        "with --model"
    ]


def test_a_key_echoed_at_load_is_redacted(hostile: HostileServer, key: str) -> None:
    hostile.models = lambda handler: h.status(403, f"no: {handler.headers['Authorization']}")(
        handler
    )
    engine = engine_for(hostile.url)
    with pytest.raises(EngineError) as caught:
        list(engine.load())
    assert str(caught.value) == f"{hostile.url} denied access (403): no: Bearer [redacted]"


@pytest.mark.parametrize("bad", ["line\nbreak-0123456789", "ключ-0123456789", "sp ace-0123456789"])
def test_a_key_a_header_cannot_carry_is_one_line_without_the_key(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("MIXCHAT_API_KEY", bad)
    events = converse(hostile.url)
    message = failure(events).message
    assert message.startswith("$MIXCHAT_API_KEY holds characters an HTTP header cannot carry")
    assert "0123456789" not in message and hostile.requests == []


def test_short_placeholder_keys_do_not_garble_replies(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIXCHAT_API_KEY", "none")  # what keyless servers are often given
    hostile.plan = [h.reply("none of them")]
    assert text_of(converse(hostile.url)) == "none of them"


# -- the installed command: stdout, stderr, --json and the database ---------------------


def files_under(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())


@pytest.mark.e2e
def test_the_command_never_prints_or_saves_the_key(
    hostile: HostileServer, mixchat_home: Path
) -> None:
    env = {"MIXCHAT_API_KEY": KEY, "MIXCHAT_SERVER_RETRIES": "0"}
    base = ("ask", "--endpoint", hostile.url, "--model", "ok")
    hostile.plan = [
        h.echo_auth("content"),
        h.echo_auth("content"),
        h.echo_auth("stream-error"),
        h.echo_auth("error"),
    ]
    plain = run(*base, "hi", env=env)
    as_json = run(*base, "--json", "hi", env=env)
    mid = run(*base, "hi", env=env)
    refused = run(*base, "hi", env=env)
    assert (plain.returncode, as_json.returncode, mid.returncode, refused.returncode) == (
        0,
        0,
        1,
        1,
    )
    assert plain.stdout == "Your key is [redacted], and again: [redacted]."
    assert json.loads(as_json.stdout)["reply"] == plain.stdout
    assert mid.stdout == "Hi" and "[redacted]" in mid.stderr and "[redacted]" in refused.stderr
    assert all(hostile.auth[i] == f"Bearer {KEY}" for i in range(len(hostile.auth)))
    for result in (plain, as_json, mid, refused):
        assert KEY not in result.stdout + result.stderr
    saved = files_under(mixchat_home)
    assert b"[redacted]" in saved and KEY.encode() not in saved


@pytest.mark.parametrize(
    ("endpoint", "warned"),
    [
        ("http://8.8.8.8:8000", True),  # a public address (never contacted: the warning is first)
        ("http://api.example.com/v1", True),
        ("http://[2606:4700::1111]:8000", True),
        ("https://api.example.com/v1", False),
        ("http://127.0.0.1:8000", False),
        ("http://localhost:8000", False),
        ("http://10.1.2.3:8000", False),
        ("http://192.168.1.20:8000", False),
        ("http://[::1]:8000", False),
        ("http://gpu-box:8000", False),  # one label: a machine on the user's own network
        ("http://gpu-box.lan:8000", False),
    ],
)
def test_plain_http_to_a_public_address_with_a_key_is_warned(
    endpoint: str, warned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mixchat.engine.base import Notice
    from mixchat.engine.remote import _private_transport

    assert _private_transport(endpoint) is not warned
    if not warned:
        return
    # The warning comes before any connection is tried.
    monkeypatch.setenv("MIXCHAT_API_KEY", "sk-secret-value")
    engine = engine_for(endpoint)
    load = engine.load()
    events = [next(load), next(load)]
    engine.close()
    (note,) = [e.message for e in events if isinstance(e, Notice)]
    assert "unencrypted" in note and "use https" in note and "sk-secret-value" not in note


def test_no_warning_for_a_local_server_or_without_a_key(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIXCHAT_API_KEY", "sk-secret-value")
    assert not [n for n in notices(converse(hostile.url)) if "unencrypted" in n]
