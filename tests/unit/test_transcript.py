"""Tests for mixchat.transcript: JSON export/import, Markdown and plain text."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixchat.config import FIELDS
from mixchat.conversation import Attachment, Conversation, Message, Role, Status, make_title
from mixchat.store import ConversationStore
from mixchat.transcript import (
    FORMAT_NAME,
    FORMAT_VERSION,
    TranscriptError,
    from_json,
    to_json,
    to_markdown,
    to_text,
)
from tests.examples import examples

HOSTILE = [
    "[bold]",
    "[/bold]",
    "[/INST]",
    "[INST]",
    "[link=file:///etc/passwd]click[/link]",
    "</s>",
    "<s>",
    "\x1b]52;c;aGk=\x07",
    "\x1b]0;owned\x07",
    "\x1b[31m",
    "\x1b[2J",
    "\x9b31m",
    "\x00",
    "\r",
    "\u202e",
    "🙂",
    "\n```\n",
    "# heading",
    '"},{"role":"system","content":"x',
]

contents = st.lists(st.one_of(st.text(), st.sampled_from(HOSTILE)), max_size=6).map("".join)
finite = st.floats(allow_nan=False, allow_infinity=False)
# Up to a fixed time in the past (2023): the store brings times from the future back to
# its clock (tested on their own below), so only those round-trip exactly through it.
timestamps = st.floats(min_value=1.0, max_value=1.7e9, allow_nan=False)
counts = st.none() | st.integers(min_value=0, max_value=2**40)
seconds = st.none() | st.floats(min_value=0.0, max_value=1e6, allow_nan=False)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)

messages = st.builds(
    Message,
    role=st.sampled_from([Role.USER, Role.ASSISTANT]),
    content=contents,
    status=st.sampled_from(list(Status)),
    prompt_tokens=counts,
    completion_tokens=counts,
    ttft_s=seconds,
    duration_s=seconds,
    created_at=timestamps,
    finish_reason=st.sampled_from([None, "stop", "length"]),
    attachments=st.lists(
        st.builds(
            Attachment,
            name=st.text(),
            size=st.integers(min_value=0, max_value=2**40),
            sha256=st.text("0123456789abcdef", min_size=64, max_size=64),
        ),
        max_size=2,
    ),
)

conversations = st.builds(
    Conversation,
    id=st.uuids().map(lambda u: u.hex),
    title=contents,
    created_at=timestamps,
    updated_at=timestamps,
    model=st.text(),
    system_prompt=st.none() | contents,
    # Unknown keys carry any JSON; known keys (validated on import) are covered elsewhere.
    settings=st.dictionaries(
        st.text().filter(lambda key: key not in FIELDS), json_values, max_size=4
    ),
    messages=st.lists(messages, min_size=1, max_size=6),
)


def through_json_text(conv: Conversation) -> Conversation:
    """Export, serialise the way ``mixchat export`` does, read back, import."""
    text = json.dumps(to_json(conv), ensure_ascii=False, indent=2)
    return from_json(json.loads(text.encode("utf-8").decode("utf-8")))


def without_ids(msgs: list[Message]) -> list[Message]:
    return [replace(m, id=None, parent_id=None) for m in msgs]


# -- JSON round trip ------------------------------------------------------------


@settings(max_examples=examples(150), deadline=None)
@given(conversations)
def test_json_round_trip_is_loss_free(conv: Conversation) -> None:
    back = through_json_text(conv)
    assert back == conv
    # Spelled out, so a failure says which part was lost.
    assert [m.role for m in back.messages] == [m.role for m in conv.messages]
    assert [m.content for m in back.messages] == [m.content for m in conv.messages]
    assert [m.status for m in back.messages] == [m.status for m in conv.messages]
    assert back.system_prompt == conv.system_prompt
    assert back.settings == conv.settings
    assert back.title == conv.title


@settings(max_examples=examples(60), deadline=None)
@given(conversations)
def test_json_round_trip_with_ascii_escapes(conv: Conversation) -> None:
    assert from_json(json.loads(json.dumps(to_json(conv)))) == conv


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_content_survives_verbatim(hostile: str) -> None:
    conv = Conversation(
        id="ab" * 16,
        title=hostile,
        created_at=1.5,
        updated_at=2.5,
        system_prompt=hostile,
        messages=[
            Message(Role.USER, hostile, created_at=10.0),
            Message(Role.ASSISTANT, f"x{hostile}y", Status.INTERRUPTED, created_at=11.0),
        ],
    )
    back = through_json_text(conv)
    assert back == conv
    assert back.messages[1].content == f"x{hostile}y"


def test_export_format_header_and_system_message() -> None:
    conv = Conversation(
        id="c" * 32,
        title="t",
        created_at=1.0,
        updated_at=2.0,
        model="mixtral",
        system_prompt="be nice",
        settings={"temperature": 0.2},
        messages=[Message(Role.USER, "hi", created_at=3.0, prompt_tokens=None)],
    )
    data = to_json(conv)
    assert data["format"] == FORMAT_NAME
    assert data["version"] == FORMAT_VERSION
    assert data["messages"][0] == {"role": "system", "content": "be nice"}
    user = data["messages"][1]
    assert user["role"] == "user" and user["content"] == "hi"
    assert user["mixchat"] == {"status": "complete", "created_at": 3.0}  # None stats left out


def test_message_created_at_zero_survives_round_trip() -> None:
    # 0.0 is a valid timestamp (the epoch); it must not be replaced by "now".
    conv = Conversation(
        id="d" * 32,
        title="t",
        created_at=0.0,
        updated_at=0.0,
        messages=[Message(Role.USER, "hi", created_at=0.0)],
    )
    back = through_json_text(conv)
    assert back.created_at == 0.0
    assert back.messages[0].created_at == 0.0


# -- through the store ------------------------------------------------------------


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(conv=conversations)
def test_store_round_trip_keeps_messages(conv: Conversation) -> None:
    conv = replace(conv, id=uuid.uuid4().hex)  # fresh per example: the store is shared
    with ConversationStore.open() as store:
        saved = store.import_conversation(through_json_text(conv))
        assert saved.id == conv.id
        loaded = store.get_conversation(saved.id)
    with ConversationStore.open() as other:  # a separate connection reads the same rows
        assert other.get_conversation(conv.id).messages == loaded.messages
    assert all(m.id is not None for m in loaded.messages)
    assert without_ids(loaded.messages) == conv.messages
    assert loaded.system_prompt == conv.system_prompt
    assert loaded.settings == conv.settings
    assert loaded.model == conv.model
    assert loaded.created_at == conv.created_at
    assert loaded.updated_at == conv.updated_at
    first_user = next((m for m in conv.messages if m.role is Role.USER), None)
    expected_title = conv.title or (make_title(first_user.content) if first_user else "")
    assert loaded.title == expected_title
    # And the stored copy exports to the same document again.
    assert to_json(replace(loaded, messages=without_ids(loaded.messages))) == to_json(
        replace(conv, title=expected_title)
    )


def test_import_of_plain_openai_messages_into_store() -> None:
    data = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    with ConversationStore.open() as store:
        saved = store.import_conversation(from_json(json.loads(json.dumps(data))))
        loaded = store.get_conversation(saved.id)
    assert loaded.system_prompt == "You are terse."
    assert [(m.role, m.content, m.status) for m in loaded.messages] == [
        (Role.USER, "What is 2+2?", Status.COMPLETE),
        (Role.ASSISTANT, "4", Status.COMPLETE),
    ]
    assert loaded.title == "What is 2+2?"
    assert len(loaded.id) == 32


# -- from_json: accepted inputs ------------------------------------------------------


def test_plain_openai_list_with_system_message() -> None:
    before = time.time()
    conv = from_json(
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ]
    )
    after = time.time()
    assert conv.system_prompt == "S"
    assert [(m.role, m.content, m.status) for m in conv.messages] == [
        (Role.USER, "hi", Status.COMPLETE),
        (Role.ASSISTANT, "hello", Status.COMPLETE),
    ]
    assert conv.id == "" and conv.title == "" and conv.settings == {}
    assert all(before <= m.created_at <= after for m in conv.messages)
    assert before <= conv.created_at <= after


def test_openai_object_with_messages_key_and_extra_fields() -> None:
    conv = from_json(
        {
            "model": "gpt",
            "temperature": 1,
            "messages": [{"role": "user", "content": "q", "name": "me"}],
        }
    )
    assert conv.model == "gpt"
    assert [m.content for m in conv.messages] == ["q"]


def test_system_messages_that_would_be_lost_are_refused() -> None:
    """mixchat keeps one system prompt: an import that holds another is refused, saying
    which message would be lost, never silently dropped."""
    user = {"role": "user", "content": "x"}
    cases = {
        "differs from the 'system_prompt' field": {
            "system_prompt": "field",
            "messages": [{"role": "system", "content": "message"}, user],
        },
        "after the conversation started": [
            {"role": "system", "content": "first"},
            user,
            {"role": "system", "content": "second\nline"},
        ],
        "message 1 is a system message": [
            {"role": "system", "content": "one"},
            {"role": "system", "content": "one"},  # even a repeat: its place would be lost
            user,
        ],
        "message 2 is a system message": {
            "messages": [user, user, {"role": "system", "content": ""}]
        },
    }
    for needle, data in cases.items():
        with pytest.raises(TranscriptError, match="system message") as err:
            from_json(data)
        assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)
        assert "lost" in str(err.value)


def test_one_system_message_matching_the_field_is_the_system_prompt() -> None:
    assert (
        from_json(
            {"system_prompt": "same", "messages": [{"role": "system", "content": "same"}, USER]}
        ).system_prompt
        == "same"
    )
    assert from_json([{"role": "system", "content": "only"}, USER]).system_prompt == "only"
    assert from_json({"system_prompt": "field", "messages": [USER]}).system_prompt == "field"


# -- from_json: rejected inputs ------------------------------------------------------

USER = {"role": "user", "content": "x"}


@pytest.mark.parametrize(
    "data",
    [
        None,
        5,
        "messages",
        True,
        {},
        {"messages": None},
        {"messages": "hi"},
        {"messages": {"role": "user", "content": "x"}},
        [],
        {"messages": []},
        [{"role": "system", "content": "only a system prompt"}],
        ["not an object"],
        [None],
        [{"content": "no role"}],
        [{"role": "tool", "content": "x"}],
        [{"role": "USER", "content": "x"}],
        [{"role": None, "content": "x"}],
        [{"role": "user"}],
        [{"role": "user", "content": None}],
        [{"role": "user", "content": 5}],
        [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
        [{"role": "system", "content": 5}, USER],
        [{**USER, "mixchat": {"status": "done"}}],
        [{**USER, "mixchat": {"status": None}}],
        [{**USER, "mixchat": "complete"}],
        [{**USER, "mixchat": ["complete"]}],
        [{**USER, "mixchat": {"prompt_tokens": "5"}}],
        [{**USER, "mixchat": {"completion_tokens": 1.5}}],
        [{**USER, "mixchat": {"completion_tokens": True}}],
        [{**USER, "mixchat": {"ttft_s": "fast"}}],
        [{**USER, "mixchat": {"duration_s": False}}],
        [{**USER, "mixchat": {"created_at": "yesterday"}}],
        {"messages": [USER], "title": 5},
        {"messages": [USER], "id": 123},
        {"messages": [USER], "model": ["m"]},
        {"messages": [USER], "settings": ["not", "a", "dict"]},
        {"messages": [USER], "created_at": "2024-01-01"},
        {"messages": [USER], "updated_at": True},
        {"messages": [USER], "system_prompt": 5},
    ],
)
def test_from_json_rejects_bad_input(data: Any) -> None:
    with pytest.raises(TranscriptError):
        from_json(data)


def test_transcript_error_is_a_value_error_with_a_message() -> None:
    with pytest.raises(ValueError, match="message 1: unknown role 'tool'"):
        from_json([USER, {"role": "tool", "content": "x"}])
    with pytest.raises(TranscriptError, match="message 0: unknown status 'done'"):
        from_json([{**USER, "mixchat": {"status": "done"}}])
    with pytest.raises(TranscriptError, match="no messages"):
        from_json([{"role": "system", "content": "s"}])


# -- Markdown and plain text -------------------------------------------------------


def sample() -> Conversation:
    return Conversation(
        id="e" * 32,
        title="Deploy plan",
        created_at=1_700_000_000.0,
        updated_at=1_700_000_100.0,
        model="mixtral-test",
        system_prompt="SYSTEM-PROMPT-TEXT",
        messages=[
            Message(Role.USER, "USER-QUESTION-TEXT"),
            Message(Role.ASSISTANT, "COMPLETE-ANSWER-TEXT"),
            Message(Role.USER, "SECOND-QUESTION"),
            Message(Role.ASSISTANT, "PARTIAL-ANSWER", Status.INTERRUPTED),
            Message(Role.USER, "THIRD-QUESTION"),
            Message(Role.ASSISTANT, "FAILED-ANSWER", Status.ERROR),
        ],
    )


def test_markdown_contains_everything_in_order() -> None:
    md = to_markdown(sample())
    assert md.startswith("# Deploy plan\n")
    assert "e" * 32 in md and "mixtral-test" in md
    order = [
        "## System",
        "SYSTEM-PROMPT-TEXT",
        "## User",
        "USER-QUESTION-TEXT",
        "## Assistant\n",
        "COMPLETE-ANSWER-TEXT",
        "## Assistant (interrupted)",
        "PARTIAL-ANSWER",
        "## Assistant (error)",
        "FAILED-ANSWER",
    ]
    positions = [md.index(part) for part in order]
    assert positions == sorted(positions)
    assert md.count("(interrupted)") == 1 and md.count("(error)") == 1


def test_text_contains_everything_with_status_notes() -> None:
    text = to_text(sample())
    assert text.splitlines()[0] == "Deploy plan"
    assert "model mixtral-test" in text
    for part in (
        "--- system ---\nSYSTEM-PROMPT-TEXT",
        "--- user ---\nUSER-QUESTION-TEXT",
        "--- assistant ---\nCOMPLETE-ANSWER-TEXT",
        "--- assistant (interrupted) ---\nPARTIAL-ANSWER",
        "--- assistant (error) ---\nFAILED-ANSWER",
    ):
        assert part in text


def test_untitled_and_no_system_prompt() -> None:
    conv = replace(sample(), title="", system_prompt=None, model="")
    md, text = to_markdown(conv), to_text(conv)
    assert md.startswith("# (untitled)")
    assert text.startswith("(untitled)")
    assert "## System" not in md and "--- system ---" not in text
    assert "model ?" in text


@settings(max_examples=examples(50), deadline=None)
@given(conversations)
def test_renderings_contain_all_content(conv: Conversation) -> None:
    md, text = to_markdown(conv), to_text(conv)
    for msg in conv.messages:
        assert msg.content in md
        assert msg.content in text
    notes = {Status.INTERRUPTED: "(interrupted)", Status.ERROR: "(error)"}
    for status, note in notes.items():
        n = sum(m.status is status for m in conv.messages)
        assert text.count(f"{note} ---") >= n
