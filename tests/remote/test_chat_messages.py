"""chat_messages and base_url: pure conversions."""

from __future__ import annotations

import pytest

from mixchat.conversation import Message, Role, Status
from mixchat.engine.remote import base_url, chat_messages
from mixchat.prompt import PromptError


def test_system_prompt_joins_the_first_user_message() -> None:
    messages = [
        Message(Role.USER, "one"),
        Message(Role.ASSISTANT, "two"),
        Message(Role.USER, "three"),
    ]
    assert chat_messages(messages, "Be kind.") == [
        {"role": "user", "content": "Be kind.\n\none"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ]


def test_failed_replies_drop_out_and_same_role_runs_merge() -> None:
    messages = [
        Message(Role.USER, "a"),
        Message(Role.ASSISTANT, "boom", status=Status.ERROR),
        Message(Role.USER, "b"),
    ]
    assert chat_messages(messages, None) == [{"role": "user", "content": "a\n\nb"}]


def test_a_leading_assistant_turn_gets_an_empty_user_turn() -> None:
    messages = [Message(Role.ASSISTANT, "hi"), Message(Role.USER, "q")]
    assert chat_messages(messages, "S")[0] == {"role": "user", "content": "S"}


def test_the_last_message_must_be_the_user_s() -> None:
    with pytest.raises(PromptError):
        chat_messages([Message(Role.USER, "q"), Message(Role.ASSISTANT, "a")], None)
    with pytest.raises(PromptError):
        chat_messages([], None)


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://gpu:8000", "http://gpu:8000/v1"),
        ("http://gpu:8000/", "http://gpu:8000/v1"),
        ("https://host/v1/", "https://host/v1"),
        ("https://host/openai/v1", "https://host/openai/v1"),
    ],
)
def test_base_url(endpoint: str, url: str) -> None:
    assert base_url(endpoint) == url
