"""What was attached to a message is kept with it: the migration, the store, show/export."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from mixchat.config import PRESET_KEY
from mixchat.conversation import Attachment, Message, Role
from mixchat.store import MIGRATIONS, ConversationStore
from mixchat.transcript import from_json, to_json, to_markdown, to_text

FILES = [Attachment("notes.txt", 1234, "a" * 64), Attachment("src/main.py", 0, "b" * 64)]


def test_a_version_1_database_gains_the_column_and_keeps_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](conn)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO conversations (id, title, created_at, updated_at) VALUES (?, 't', 1, 1)",
        ("c" * 32,),
    )
    conn.execute(
        "INSERT INTO messages (conversation_id, position, role, content, status, created_at,"
        " updated_at) VALUES (?, 0, 'user', 'old words', 'complete', 1, 1)",
        ("c" * 32,),
    )
    conn.close()
    with ConversationStore.open(path) as store:
        conv = store.get_conversation("c" * 32)
        assert conv.messages[0].content == "old words"
        assert conv.messages[0].attachments == []
        store.append_message(conv.id, Message(Role.USER, "new", attachments=FILES))
        assert store.get_conversation(conv.id).messages[-1].attachments == FILES
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.close()


def test_attachments_are_kept_by_every_way_in() -> None:
    with ConversationStore.open() as store:
        first = Message(Role.USER, "q", attachments=FILES[:1])
        conv = store.create_conversation(
            model="m", system_prompt=None, settings={}, first_message=first
        )
        reply = store.start_reply(conv.id)
        assert store.get_conversation(conv.id).messages[0].attachments == FILES[:1]
        assert store.get_conversation(conv.id).messages[1].attachments == []
        assert reply.id is not None
        store.replace_from(first.id or 0, Message(Role.USER, "q2", attachments=FILES))
        again = store.get_conversation(conv.id)
        assert [m.attachments for m in again.messages] == [FILES]
        copy = store.import_conversation(again)
        assert store.get_conversation(copy.id).messages[0].attachments == FILES


def test_an_unreadable_column_counts_as_no_attachments() -> None:
    with ConversationStore.open() as store:
        conv = store.create_conversation(
            model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "q")
        )
        path = store.path
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE messages SET attachments = '{broken'")
    conn.close()
    with ConversationStore.open() as store:
        assert store.get_conversation(conv.id).messages[0].attachments == []


def test_show_and_export_say_what_was_attached() -> None:
    with ConversationStore.open() as store:
        conv = store.create_conversation(
            model="m",
            system_prompt=None,
            settings={"temperature": 0.2, PRESET_KEY: "coder"},
            first_message=Message(Role.USER, "look", attachments=FILES),
        )
        conv = store.get_conversation(conv.id)
    text = to_text(conv)
    assert f"[attached notes.txt, 1,234 bytes, sha256 {'a' * 64}]" in text
    assert f"[attached src/main.py, 0 bytes, sha256 {'b' * 64}]" in text
    assert "preset coder" in text.splitlines()[1]
    markdown = to_markdown(conv)
    assert f"- attached notes.txt, 1,234 bytes, sha256 {'a' * 64}" in markdown
    assert "- preset: coder" in markdown
    exported = to_json(conv)
    assert exported["messages"][0]["mixchat"]["attachments"][0] == {
        "name": "notes.txt",
        "size": 1234,
        "sha256": "a" * 64,
    }
    assert exported["settings"][PRESET_KEY] == "coder"
    back = from_json(json.loads(json.dumps(exported)))
    assert back.messages[0].attachments == FILES
    assert back.settings[PRESET_KEY] == "coder"


def test_list_summaries_name_the_preset() -> None:
    with ConversationStore.open() as store:
        store.create_conversation(model="m", system_prompt=None, settings={PRESET_KEY: "p"})
        store.create_conversation(model="m", system_prompt=None, settings={PRESET_KEY: 3})
        store.create_conversation(model="m", system_prompt=None, settings={})
        presets = sorted(str(s.preset) for s in store.list_conversations())
    assert presets == ["None", "None", "p"]
