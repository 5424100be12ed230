"""Item 6 of issue 12: every field from a server is checked; a bad one is ignored with a
notice and never costs the reply (nor reaches the store as a number it cannot hold)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixchat.conversation import Message, Role, Status
from mixchat.engine.base import GenerationParams
from mixchat.engine.remote_fields import MAX_COUNT, read_chunk
from mixchat.prompt import prompt_messages
from mixchat.recorder import ReplyRecorder
from mixchat.store import ConversationStore
from mixchat.turn import stream_reply
from tests.examples import examples
from tests.remote import hostile as h
from tests.remote.hostile import HostileServer
from tests.remote.talk import converse, engine_for, failure, finished, notices, text_of

BAD_COUNTS = [
    '"7"',
    "7.5",
    "-1",
    "1e400",
    "-1e400",
    str(2**70),
    "1" + "0" * 5000,  # more digits than Python parses by default
    "NaN",
    "Infinity",
    "1e20",
    "true",
    '{"n": 7}',
    "[7]",
]


def stream_with_usage(raw_usage: str) -> h.Behaviour:
    return h.events(
        h.chunk("Hello"),
        h.chunk(" there", finish="stop"),
        h.chunk(choices=[], raw_usage=raw_usage),
        h.DONE,
    )


@pytest.mark.parametrize("bad", BAD_COUNTS)
@pytest.mark.parametrize("name", ["prompt_tokens", "completion_tokens"])
def test_a_bad_usage_count_is_ignored_with_a_notice(
    hostile: HostileServer, name: str, bad: str
) -> None:
    other = "completion_tokens" if name == "prompt_tokens" else "prompt_tokens"
    hostile.plan = [stream_with_usage(f'{{"{name}": {bad}, "{other}": 5}}')]
    events = converse(hostile.url)
    assert text_of(events) == "Hello there"
    end, usage = finished(events)
    assert end.reason == "stop"
    if name == "prompt_tokens":  # the good field is kept, the bad one falls back
        assert (usage.prompt_tokens, usage.completion_tokens) == (0, 5)
    else:
        assert (usage.prompt_tokens, usage.completion_tokens) == (5, 2)  # 2 chunks arrived
    (notice,) = notices(events)
    assert notice.startswith(f"ignored the server's usage.{name} ") and "\n" not in notice


@pytest.mark.parametrize(
    "raw_usage",
    [
        '"lots"',
        "42",
        "[1, 2]",
        "true",
        '{"prompt_tokens_details": "x", "prompt_tokens": 3}',
        '{"prompt_tokens": 3, "prompt_tokens_details": {"cached_tokens": -5}}',
    ],
)
def test_a_malformed_usage_object_is_ignored_with_a_notice(
    hostile: HostileServer, raw_usage: str
) -> None:
    hostile.plan = [stream_with_usage(raw_usage)]
    events = converse(hostile.url)
    assert text_of(events) == "Hello there" and finished(events)[0].reason == "stop"
    assert len(notices(events)) == 1 and "usage" in notices(events)[0]


def test_null_usage_and_null_counts_are_simply_absent(hostile: HostileServer) -> None:
    hostile.plan = [stream_with_usage("null"), stream_with_usage('{"prompt_tokens": null}')]
    for _ in range(2):
        events = converse(hostile.url)
        assert text_of(events) == "Hello there" and notices(events) == []
        assert finished(events)[1].completion_tokens == 2


def test_a_notice_is_given_once_per_field_not_per_chunk(hostile: HostileServer) -> None:
    bad = h.chunk(choices=[], raw_usage='{"prompt_tokens": "x"}')
    hostile.plan = [h.events(h.chunk("a"), bad, h.chunk("b"), bad, h.chunk(finish="stop"), bad)]
    events = converse(hostile.url)
    assert text_of(events) == "ab" and len(notices(events)) == 1


@pytest.fixture
def store() -> Iterator[ConversationStore]:
    with ConversationStore.open() as s:
        yield s


@pytest.mark.parametrize("bad", [str(2**70), "1e400", "-3", str(2**63)])
def test_the_reply_is_saved_whole_whatever_the_usage(
    hostile: HostileServer, store: ConversationStore, bad: str
) -> None:
    """The path that once lost a reply: usage -> ReplyRecorder.finish -> the store's
    INTEGER columns (OverflowError past 2**63 - 1 left the row empty)."""
    hostile.plan = [stream_with_usage(f'{{"prompt_tokens": {bad}, "completion_tokens": {bad}}}')]
    conv = store.create_conversation(
        model="ok", system_prompt=None, settings={}, first_message=Message(Role.USER, "hi")
    )
    engine = engine_for(hostile.url)
    outcome = stream_reply(
        engine,
        ReplyRecorder(store, conv.id),
        prompt_messages(store.get_conversation(conv.id).messages),
        None,
        GenerationParams(max_new_tokens=16),
        threading.Event(),
        lambda event: None,
    )
    engine.close()
    saved = store.get_conversation(conv.id).messages[-1]
    assert (saved.content, saved.status) == ("Hello there", Status.COMPLETE)
    assert outcome.error is None
    assert saved.prompt_tokens == 0 and saved.completion_tokens == 2


@pytest.mark.parametrize("reason", ["42", '{"why": 1}', "[]", '""', "true"])
def test_a_bad_finish_reason_is_ignored_and_done_still_ends_the_reply(
    hostile: HostileServer, reason: str
) -> None:
    bad = 'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": ' + reason + "}]}\n\n"
    hostile.plan = [h.events(h.chunk("Hello"), bad, h.DONE)]
    events = converse(hostile.url)
    assert text_of(events) == "Hello" and finished(events)[0].reason == "stop"
    assert any("finish_reason" in n for n in notices(events))


@pytest.mark.parametrize(
    ("reason", "ends_as", "noticed"),
    [
        ("length", "length", False),
        ("eos", "stop", False),
        ("tool_calls", "stop", True),
        ("content_filter", "stop", True),
    ],
)
def test_finish_reasons_map_to_stop_or_length(
    hostile: HostileServer, reason: str, ends_as: str, noticed: bool
) -> None:
    hostile.plan = [h.events(h.chunk("Hi"), h.chunk(finish=reason))]  # no [DONE]: still ends
    events = converse(hostile.url)
    assert finished(events)[0].reason == ends_as
    assert bool(notices(events)) == noticed


@pytest.mark.parametrize(
    "bad_chunk",
    [
        'data: {"choices": "abc"}\n\n',
        'data: {"choices": {"0": {"delta": {"content": "X"}}}}\n\n',
        'data: {"choices": [5, null, "x"]}\n\n',
        'data: {"choices": [{"index": 1, "delta": {"content": "X"}}]}\n\n',
        'data: {"choices": [{"index": true, "delta": {"content": "X"}}]}\n\n',
        'data: {"choices": [{"index": 0, "delta": "X"}]}\n\n',
        'data: {"choices": [{"index": 0, "delta": {"content": 5}}]}\n\n',
        'data: {"choices": [{"index": 0, "delta": {"content": ["X"]}}]}\n\n',
        'data: {"choices": [{"index": 0, "delta": {"content": {"text": "X"}}}]}\n\n',
        "data: [1, 2]\n\n",
        "data: 5\n\n",
        'data: "text"\n\n',
        "data: null\n\n",
    ],
)
def test_a_malformed_chunk_is_skipped_with_a_notice(hostile: HostileServer, bad_chunk: str) -> None:
    hostile.plan = [h.events(h.chunk("Hello"), bad_chunk, h.chunk(" there", finish="stop"))]
    events = converse(hostile.url)
    assert text_of(events) == "Hello there"  # nothing of the bad chunk, nothing lost
    assert finished(events)[0].reason == "stop"
    assert len(notices(events)) == 1


@pytest.mark.parametrize("role", ['"user"', '"system"', "7", '"tool"'])
def test_a_strange_role_is_noticed_and_the_text_kept(hostile: HostileServer, role: str) -> None:
    odd = 'data: {"choices": [{"index": 0, "delta": {"role": ' + role + ', "content": "!"}}]}\n\n'
    hostile.plan = [h.events(h.chunk("Hi"), odd, h.chunk(finish="stop"))]
    events = converse(hostile.url)
    assert text_of(events) == "Hi!" and finished(events)[0].reason == "stop"
    assert any("role" in n for n in notices(events))


@pytest.mark.parametrize(
    "event",
    ["data: {not json\n\n", "data: " + "[" * 50_000 + "\n\n", 'data: {"a": \xff}\n\n'],
    ids=["garbage", "nested-50k-deep", "not-utf8"],
)
def test_an_unreadable_event_fails_in_one_line_keeping_the_text(
    hostile: HostileServer, event: str
) -> None:
    hostile.plan = [h.events(h.chunk("Hello"), event, h.chunk(finish="stop"))]
    events = converse(hostile.url)
    assert text_of(events) == "Hello"
    assert "sent a malformed event" in failure(events).message


@pytest.mark.parametrize("length", ['"256"', str(2**70), "-1", "0", "true", "1.5", "null"])
def test_a_bad_context_length_in_the_listing_is_ignored(
    hostile: HostileServer, length: str
) -> None:
    hostile.models = h.body(
        200, '{"data": [{"id": "ok", "max_model_len": ' + length + "}]}", "application/json"
    )
    engine = engine_for(hostile.url)
    loaded = list(engine.load())
    engine.close()
    assert engine.context_size == 32768
    noticed = [e for e in loaded if type(e).__name__ == "Notice"]
    assert len(noticed) == (0 if length == "null" else 1)


@pytest.mark.parametrize(
    "listing",
    [
        '{"data": "x"}',
        '{"data": [5, {"id": 7}, {"id": ""}]}',
        "[]",
        "not json",
        '{"data": [{"id": "' + "m" * 5000 + '\\u001b[2J"}]}',
    ],
)
def test_a_malformed_listing_is_ignored(hostile: HostileServer, listing: str) -> None:
    hostile.models = h.body(200, listing, "application/json")
    engine = engine_for(hostile.url)
    loaded = list(engine.load())
    assert text_of(list(engine.stream(*_ask()))) == "Hello there"
    engine.close()
    for notice in notices(loaded):  # a long or hostile model id is shown short and inert
        assert len(notice) < 400 and "\x1b" not in notice


def _ask() -> tuple[list[Message], None, GenerationParams, threading.Event]:
    return [Message(Role.USER, "hi")], None, GenerationParams(max_new_tokens=8), threading.Event()


# -- the checks themselves, over any JSON a server could send ---------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
FIELD_NAMES = st.sampled_from(
    [
        "choices",
        "usage",
        "delta",
        "content",
        "role",
        "finish_reason",
        "index",
        "error",
        "prompt_tokens",
        "completion_tokens",
        "prompt_tokens_details",
        "cached_tokens",
    ]
)
SHAPED = st.recursive(
    JSON,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(FIELD_NAMES, inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=examples(400), deadline=None)
@given(SHAPED, st.sampled_from(["message", "error", ""]))
def test_read_chunk_takes_any_json_and_yields_only_checked_values(data: object, event: str) -> None:
    view = read_chunk(data, event)
    assert isinstance(view.text, str)
    assert view.finish in (None, "stop", "length")
    assert all(type(v) is int and 0 <= v <= MAX_COUNT for v in view.usage.values())
    assert view.error is None or isinstance(view.error, str)
    for key, line in view.notices:
        assert isinstance(key, str) and "\n" not in json.dumps(line)[1:-1].replace("\\n", "")


@pytest.mark.parametrize("depth", [3, 200, 900])
def test_deeply_nested_errors_are_one_line(hostile: HostileServer, depth: int) -> None:
    nested = '{"error": ' * depth + '"deep"' + "}" * depth
    hostile.plan = [
        h.events(h.chunk("Hi"), f"data: {nested}\n\n"),
        h.body(400, nested, "application/json"),
    ]
    events = converse(hostile.url)
    assert text_of(events) == "Hi" and "reported an error mid-reply:" in failure(events).message
    assert "rejected the request (400):" in failure(converse(hostile.url)).message


def test_a_404_names_served_models_briefly(hostile: HostileServer) -> None:
    hostile.models = h.listing({"id": "m" * 5000}, {"id": "\x1b[2Jother"})
    hostile.plan = [h.status(404, "no such model")]
    message = failure(converse(hostile.url, model="missing")).message
    assert "it serves mmm" in message and "\x1b" not in message and len(message) < 400
