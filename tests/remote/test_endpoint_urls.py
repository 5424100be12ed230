"""Item 8 of issue 12: bad endpoints are refused when settings load, a failure before the
request is sent leaves no conversation behind, and an answer that is not a stream says
what it is."""

from __future__ import annotations

import json
import threading

import pytest

from mixchat import paths
from mixchat.config import ConfigError, Settings, load_settings
from mixchat.engine.base import Failed, GenerationParams
from mixchat.engine.remote import RemoteEngine
from tests.e2e.helpers import run
from tests.remote import hostile as h
from tests.remote.hostile import HostileServer
from tests.remote.talk import HELLO, converse, failure

BAD_ENDPOINTS = [
    ("http://[::1", "is not a valid URL"),
    ("http://[::1]]:8000", "is not a valid URL"),
    ("http://[::g]:8000", "is not a valid URL"),
    ("http://[gpu]:8000", "gpu"),  # how it is worded depends on the Python version
    ("http://a[b]c:8000", "is not a valid URL"),
    ("http://gpu-box:99999", "is not a valid URL"),
    ("http://gpu-box:0", "invalid port"),
    ("http://gpu-box:-1", "is not a valid URL"),
    ("http://gpu-box:80a", "is not a valid URL"),
    ("http://gpu-box:", "invalid port"),
    ("http://gpu box:8000", "spaces"),
    ("http://gpu-box:8000/v1 ", None),  # surrounding spaces are dropped: valid
    ("http://gpu-box/\tv1", "control characters"),
    ("http://gpu-box/v1\x1b[2J", "control characters"),
    ("http://user:secret@gpu-box:8000", "user name or password"),
    ("http://token@gpu-box", "user name or password"),
    ("http://", "no host"),
    ("http://:8000/v1", "no host"),
    ("http:///v1", "no host"),
    ("https://gpu<box>", "invalid host name"),
    ("ftp://gpu-box", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("gpu-box:8000", "http:// or https://"),
    ("//gpu-box:8000", "http:// or https://"),
    ("http://gpu-box/v1?key=1", "query"),
    ("http://gpu-box/v1#frag", "fragment"),
]


def write_config(text: str) -> str:
    path = paths.config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(("url", "problem"), BAD_ENDPOINTS)
@pytest.mark.parametrize("source", ["flag", "env", "file"])
def test_a_bad_endpoint_is_refused_naming_its_source(
    url: str, problem: str | None, source: str
) -> None:
    where = {"flag": "--endpoint", "env": "environment variable MIXCHAT_ENDPOINT"}.get(source, "")
    flags, environ = {}, {}
    if source == "flag":
        flags = {"endpoint": url}
    elif source == "env":
        environ = {"MIXCHAT_ENDPOINT": url}
    else:
        where = write_config(f"endpoint = {json.dumps(url)}\n")
    if problem is None:
        assert load_settings(flags, environ=environ).endpoint == url.strip()
        return
    with pytest.raises(ConfigError) as caught:
        load_settings(flags, environ=environ)
    message = str(caught.value)
    # A flag is named as typed ("--endpoint is ..."); a file or variable with the key.
    lead = f"{where} " if source == "flag" else f"{where}: endpoint "
    assert message.startswith(lead) and problem in message
    if "@" in url:  # the user name or password is not repeated back
        assert "secret" not in message and "token" not in message and "***@gpu-box" in message


@pytest.mark.parametrize(
    "url",
    [
        "http://gpu-box:8000",
        "https://gpu-box/openai/v1/",
        "HTTP://GPU-BOX",
        "http://[::1]:8000",
        "http://10.0.0.2:8000/v1",
        "http://gpu_box.lan",
        "http://例え.jp/v1",
        "",
    ],
)
def test_good_endpoints_load(url: str) -> None:
    assert load_settings({"endpoint": url}).endpoint == url


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("server_idle_timeout_s", "0"),
        ("server_idle_timeout_s", "soon"),
        ("server_reply_timeout_s", "-1"),
        ("server_max_event_bytes", "10"),
        ("server_max_event_bytes", "1.5"),
        ("server_max_reply_bytes", "x"),
        ("server_retries", "-1"),
        ("server_retries", "1000"),
        ("server_retry_max_wait_s", "nan"),
    ],
)
def test_bad_server_limits_are_refused(key: str, value: str) -> None:
    # These are set in config.toml or the environment (no flags).
    variable = f"MIXCHAT_{key.upper()}"
    with pytest.raises(ConfigError, match=f"environment variable {variable}: {key} "):
        load_settings(environ={variable: value})


def test_an_engine_given_a_bad_url_directly_fails_in_one_line() -> None:
    engine = RemoteEngine(Settings(model="m"), "http://[::1")
    params = GenerationParams(max_new_tokens=4)
    events = list(engine.stream(HELLO, None, params, threading.Event()))
    assert events[-1] == Failed(
        "--endpoint 'http://[::1' is not a valid URL (Invalid IPv6 URL)", kind="engine", unsent=True
    )


# -- answers that are not a stream say what they are ----------------------------------


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (
            h.body(200, "<!doctype html><html><title>Welcome</title>", "text/html"),
            "answered with an HTML page (Welcome) instead of an event stream; is --endpoint the "
            "address of its OpenAI-compatible API?",
        ),
        (
            h.body(200, "<html>no title", "text/html; charset=utf-8"),
            "answered with an HTML page instead of an event stream",
        ),
        (h.body(200, "<html>sniffed", ""), "answered with an HTML page instead"),
        (
            h.json_body(
                200,
                {
                    "id": "c",
                    "object": "chat.completion",
                    "choices": [{"message": {"role": "assistant", "content": "hi"}}],
                },
            ),
            "answered with a whole JSON reply instead of streaming it (it ignored stream=true)",
        ),
        (
            h.json_body(200, {"error": {"message": "quota exceeded"}}),
            "reported an error: quota exceeded",
        ),
        (
            h.json_body(200, {"hello": "world"}),
            'answered with application/json instead of an event stream: {"hello": "world"}',
        ),
        (
            h.body(200, "OK", "text/plain"),
            "answered with text/plain instead of an event stream: OK",
        ),
        (
            h.body(200, '{"id": "c", "choices": []}\n', "text/event-stream"),
            'ended the stream without sending any event; it began: \'{"id": "c", "choices": []}\'',
        ),
        (h.events(), "ended the stream without sending any event"),
        (
            h.body(200, "\x1f\x8b\x08junk", "text/event-stream", [("Content-Encoding", "gzip")]),
            "sent a compressed (gzip) stream though mixchat asked for none",
        ),
        (
            h.body(301, "", "text/plain", [("Location", "https://elsewhere/v1")]),
            "redirects (301) to https://elsewhere/v1; point --endpoint there",
        ),
        (h.events(h.chunk("Hel")), "ended the stream before the reply finished"),
    ],
)
def test_an_answer_that_is_not_a_stream_says_what_it_is(
    hostile: HostileServer, behaviour: h.Behaviour, expected: str
) -> None:
    hostile.plan = [behaviour]
    message = failure(converse(hostile.url, server_retries=0)).message
    assert message.startswith(f"{hostile.url} {expected}") or expected in message, message


def test_done_without_a_finish_reason_is_a_complete_reply(hostile: HostileServer) -> None:
    hostile.plan = [h.events(h.chunk("Hello"), h.DONE)]
    events = converse(hostile.url)
    assert events[-1].reason == "stop"  # type: ignore[union-attr]


# -- the installed command -------------------------------------------------------------


def saved_conversations() -> list[object]:
    result = run("list", "--json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


@pytest.mark.e2e
@pytest.mark.parametrize("how", ["flag", "env", "file"])
def test_ask_with_a_malformed_endpoint_is_one_line_exit_2_and_saves_nothing(how: str) -> None:
    url = "http://[::1"
    args, env = ["ask", "hi"], {}
    if how == "flag":
        args = ["ask", "--endpoint", url, "hi"]
    elif how == "env":
        env = {"MIXCHAT_ENDPOINT": url}
    else:
        write_config(f"endpoint = {json.dumps(url)}\n")
    result = run(*args, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("mixchat: error: ")
    assert "Invalid IPv6 URL" in result.stderr and "Traceback" not in result.stderr
    assert saved_conversations() == []


@pytest.mark.e2e
def test_failures_before_the_request_is_sent_leave_no_conversation(
    hostile: HostileServer,
) -> None:
    hostile.models = h.listing({"id": "short", "max_model_len": 64})
    base = ["ask", "--endpoint", hostile.url]
    too_long = run(*base, "--model", "short", "--max-tokens", "8", "word " * 200)
    assert too_long.returncode == 2 and "context" in too_long.stderr, too_long.stderr
    bad_key = run(*base, "--model", "short", "hi", env={"MIXCHAT_API_KEY": "ab\u00e9cdefghij"})
    assert bad_key.returncode == 1 and "MIXCHAT_API_KEY" in bad_key.stderr
    assert hostile.requests == []  # neither reached the server's chat endpoint
    assert saved_conversations() == []
    # A question that was sent and failed is kept, as before (with its error reply).
    hostile.plan = [h.status(400, "no")]
    sent = run(*base, "--model", "short", "--max-tokens", "8", "hi")
    assert sent.returncode == 1 and len(saved_conversations()) == 1
    # Continuing that conversation with a question too long takes back only that one.
    again = run(*base, "--model", "short", "-c", "--max-tokens", "8", "word " * 200)
    assert again.returncode == 2
    (conversation,) = saved_conversations()
    shown = run("show", conversation["id"], "--json")  # type: ignore[index]
    assert json.loads(shown.stdout)["messages"][0]["content"] == "hi"
    assert "word word" not in shown.stdout
