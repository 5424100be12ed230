"""The store notices other writers (data_version) and replaces an edited turn atomically."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mixchat.conversation import Message, Role, Status
from mixchat.store import ConversationStore, NotFoundError


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "db" / "conversations.db"


@pytest.fixture
def store(db: Path) -> Iterator[ConversationStore]:
    with ConversationStore.open(db) as s:
        yield s


def test_data_version_moves_only_for_other_writers(store: ConversationStore, db: Path) -> None:
    before = store.data_version()
    conv = store.create_conversation(model="m", system_prompt=None, settings={})
    store.append_message(conv.id, Message(Role.USER, "mine"))
    assert store.data_version() == before  # our own writes are not news
    with ConversationStore.open(db) as other:
        other.append_message(conv.id, Message(Role.USER, "from another window"))
        after = store.data_version()
        assert after != before
        assert store.data_version() == after  # stable until the next foreign commit
        other.rename(conv.id, "renamed elsewhere")
        assert store.data_version() != after


def test_replace_from_swaps_the_turn_in_one_go(store: ConversationStore) -> None:
    conv = store.create_conversation(model="m", system_prompt=None, settings={})
    first = store.append_message(conv.id, Message(Role.USER, "one"))
    store.append_message(conv.id, Message(Role.ASSISTANT, "answer one"))
    edited = store.append_message(conv.id, Message(Role.USER, "tow"))
    reply = store.start_reply(conv.id)
    store.finish_reply(reply.id, "answer tow", Status.COMPLETE)  # type: ignore[arg-type]
    assert edited.id is not None
    new = store.replace_from(edited.id, Message(Role.USER, "two"))
    assert new.id is not None
    messages = store.get_conversation(conv.id).messages
    assert [m.content for m in messages] == ["one", "answer one", "two"]
    assert messages[0].id == first.id
    with pytest.raises(NotFoundError):
        store.replace_from(10**9, Message(Role.USER, "gone"))
    assert [m.content for m in store.get_conversation(conv.id).messages] == [
        "one",
        "answer one",
        "two",
    ]


def test_replace_from_the_first_message_keeps_the_title(store: ConversationStore) -> None:
    first = Message(Role.USER, "Waht is 2+2")
    conv = store.create_conversation(
        model="m", system_prompt=None, settings={}, first_message=first
    )
    assert first.id is not None
    store.replace_from(first.id, Message(Role.USER, "What is 2+2?"))
    again = store.get_conversation(conv.id)
    assert [m.content for m in again.messages] == ["What is 2+2?"]
    assert again.title == "Waht is 2+2"
