"""The store's bounds: search over huge messages and long queries, `-c` as last used here,
times from the future, schema 2's migration, and the database file's own checks."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixchat import paths
from mixchat.conversation import Conversation, Message, Role, Status
from mixchat.searchrank import EXCERPT_SCAN_CHARS, SNIPPET_MAX_CHARS, SNIPPET_TOKENS
from mixchat.store import (
    FUTURE_SKEW_S,
    HIGHLIGHT_MAX_CHARS,
    MARK_END,
    MARK_START,
    MAX_QUERY_CHARS,
    MAX_QUERY_WORDS,
    MIGRATIONS,
    AmbiguousIdError,
    ConversationStore,
    StoreError,
    _distinct_width,
    _error,
)

S, E = MARK_START, MARK_END


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "home"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ConversationStore]:
    with ConversationStore.open(tmp_path / "db" / "conversations.db") as s:
        yield s


def conv_with(store: ConversationStore, *texts: str) -> tuple[Conversation, list[Message]]:
    conv = store.create_conversation(model="m", system_prompt=None, settings={})
    return conv, [store.append_message(conv.id, Message(Role.USER, t)) for t in texts]


# -- search: bounded work ------------------------------------------------------------------


def test_huge_messages_are_found_with_short_marked_snippets(store: ConversationStore) -> None:
    prose = "the quick brown fox jumps over the lazy dog "
    _, (short, one_word, big, deep) = conv_with(
        store,
        "the kettle sings, the kettle whistles",
        "kettle " * 160_000,
        prose * 2_000 + "then the kettle sings " + prose * 2_000,
        prose * (EXCERPT_SCAN_CHARS // len(prose) + 100) + " kettle",
    )
    assert len(big.content) > HIGHLIGHT_MAX_CHARS
    hits = {h.message_id: h.snippet for h in store.search("kettle")}
    assert set(hits) == {short.id, one_word.id, big.id, deep.id}
    assert hits[short.id] == f"the {S}kettle{E} sings, the {S}kettle{E} whistles"
    assert hits[one_word.id].count(f"{S}kettle{E}") == SNIPPET_TOKENS
    assert f"{S}kettle{E} sings" in hits[big.id]
    assert hits[big.id].startswith("…") and hits[big.id].endswith("…")
    assert S not in hits[deep.id] and hits[deep.id].startswith("the quick")  # beyond the scan
    for snippet in hits.values():
        assert len(snippet.replace(S, "").replace(E, "")) <= SNIPPET_MAX_CHARS + 2
    # A short message that says it twice ranks above a huge one that says it once.
    assert store.search("kettle whistles")[0].message_id == short.id
    ranked = [h.message_id for h in store.search("kettle sings")]
    assert ranked.index(short.id) < ranked.index(big.id)


def test_sizes_follow_edits_and_deletes(store: ConversationStore) -> None:
    conv, (msg,) = conv_with(store, "short kettle")
    reply = store.start_reply(conv.id)
    store.checkpoint_reply(reply.id or 0, "kettle " * 5_000)
    store.finish_reply(reply.id or 0, "kettle " * 10_000, Status.COMPLETE)
    conn = sqlite3.connect(store.path)
    sizes = dict(conn.execute("SELECT id, chars FROM message_sizes").fetchall())
    assert sizes == {msg.id: 12, reply.id: 70_000}
    store.delete(conv.id)
    assert conn.execute("SELECT count(*) FROM message_sizes").fetchone()[0] == 0
    conn.close()


def test_long_queries_are_refused_in_one_line(store: ConversationStore) -> None:
    _, (msg,) = conv_with(store, "word " * 10 + " ".join(f"w{i}" for i in range(40)))
    # A word said many times (in any case) is searched once.
    repeated = " ".join(["word", "WORD", "Word"] * (MAX_QUERY_CHARS // 15))
    assert [h.message_id for h in store.search(repeated)] == [msg.id]
    with pytest.raises(StoreError, match=f"at most {MAX_QUERY_CHARS:,}") as err:
        store.search("w" * 100_000)
    assert "100,000 characters" in str(err.value) and "\n" not in str(err.value)
    many = [f"w{i}" for i in range(40)]
    assert store.search(" ".join(many[:MAX_QUERY_WORDS]))
    with pytest.raises(StoreError, match=f"40 different words; .* at most {MAX_QUERY_WORDS}"):
        store.search(" ".join(many))


# -- `-c`: the conversation last used here --------------------------------------------------


def test_last_conversation_is_the_one_last_used_here(store: ConversationStore) -> None:
    assert store.last_conversation_id() is None
    future = time.time() + 10 * 365 * 86400
    imported = store.import_conversation(
        Conversation("", "stranger", future, future, messages=[Message(Role.USER, "x")])
    )
    assert store.last_conversation_id() is None  # imported: not used here
    assert store.list_conversations()[0].updated_at <= time.time()  # brought back to now
    mine, _ = conv_with(store, "mine")
    assert store.last_conversation_id() == mine.id
    store.mark_used(imported.id)  # opened in the app
    assert store.last_conversation_id() == imported.id
    store.append_message(mine.id, Message(Role.USER, "again"))
    assert store.last_conversation_id() == mine.id
    other, _ = conv_with(store)
    assert store.last_conversation_id() == other.id
    reply = store.start_reply(mine.id)
    store.finish_reply(reply.id or 0, "done", Status.COMPLETE)
    assert store.last_conversation_id() == mine.id
    store.update_settings(imported.id, system_prompt="terse")
    assert store.last_conversation_id() == imported.id


def test_imported_times_from_the_future_become_now(store: ConversationStore) -> None:
    now = time.time()
    near, far = now + FUTURE_SKEW_S / 2, now + 10 * FUTURE_SKEW_S
    msgs = [Message(Role.USER, "a", created_at=far), Message(Role.USER, "b", created_at=near)]
    saved = store.import_conversation(Conversation("", "t", far, 1e11, messages=msgs))
    got = store.get_conversation(saved.id)
    assert now <= got.created_at <= time.time() and now <= got.updated_at <= time.time()
    assert got.messages[0].created_at <= time.time() and got.messages[1].created_at == near
    assert (saved.created_at, saved.updated_at) == (got.created_at, got.updated_at)


# -- migration 2 ------------------------------------------------------------------------------


def test_schema_1_databases_are_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](conn)
    conn.execute("PRAGMA user_version = 1")
    now = time.time()
    rows = [("a" * 32, "mine", now - 100), ("b" * 32, "year 5138", 1e11)]
    for conv_id, title, stamp in rows:
        conn.execute(
            "INSERT INTO conversations (id, title, created_at, updated_at) VALUES (?, ?, ?, ?)",
            (conv_id, title, stamp, stamp),
        )
        conn.execute(
            "INSERT INTO messages (conversation_id, position, role, content, status,"
            " created_at, updated_at) VALUES (?, 0, 'user', ?, 'complete', ?, ?)",
            (conv_id, "kettle " * 5_000, stamp, stamp),
        )
    conn.close()
    with ConversationStore.open(path) as store:
        listed = store.list_conversations()
        assert all(c.updated_at <= time.time() for c in listed)
        assert store.get_conversation("b" * 32).messages[0].created_at <= time.time()
        assert len(store.search("kettle")) == 2
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 4
    assert conn.execute("SELECT sum(chars) FROM message_sizes").fetchone()[0] == 70_000
    used = dict(conn.execute("SELECT id, used_at FROM conversations").fetchall())
    assert used["a" * 32] == pytest.approx(now - 100) and used["b" * 32] <= time.time()
    conn.close()


# -- ids ----------------------------------------------------------------------------------------


def test_ambiguous_ids_are_shown_long_enough_to_tell_apart(store: ConversationStore) -> None:
    ids = ["0123456789abcdef0123" + tail for tail in ("000000000000", "000000000001")]
    for conv_id in ids:
        store.import_conversation(Conversation(conv_id, "t\nx", 1.0, 1.0, messages=[]))
    with pytest.raises(AmbiguousIdError) as err:
        store.resolve_id("0123")
    assert ids[0] in str(err.value) and ids[1] in str(err.value)
    assert "t x" in str(err.value) and "\n" not in str(err.value)
    assert _distinct_width(["abcdef12", "abcdef34"]) == 8
    assert _distinct_width(["abcdef1234", "abcdef1299", "abcdef9"]) == 9


# -- the file itself ----------------------------------------------------------------------------


def test_read_only_opening_of_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "none" / "conversations.db"
    with ConversationStore.open(path, create=False) as empty:
        assert empty.list_conversations() == [] and empty.search("x") == []
        assert empty.last_conversation_id() is None
    assert not (tmp_path / "none").exists()
    ConversationStore.open(path).close()
    assert path.exists()
    with ConversationStore.open(path, create=False) as existing:
        assert existing.list_conversations() == []


def test_the_database_path_must_be_a_file_of_ours(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    db = directory / "conversations.db"
    db.symlink_to(elsewhere / "planted.db")
    for create in (True, False):
        with pytest.raises(StoreError, match="symbolic link") as err:
            ConversationStore.open(db, create=create)
        assert "\n" not in str(err.value)
    assert list(elsewhere.iterdir()) == []
    db.unlink()
    os.mkfifo(db)  # opening a FIFO would hang SQLite
    with pytest.raises(StoreError, match="not a regular file"):
        ConversationStore.open(db)
    db.unlink()
    db.mkdir()
    with pytest.raises(StoreError, match="not a regular file"):
        ConversationStore.open(db)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("SQLITE_IOERR_SHORT_READ", "write-ahead log) was deleted"),
        ("SQLITE_FULL", "disk is full"),
        ("SQLITE_IOERR_WRITE", "the disk is full, a file size limit or quota"),
        ("SQLITE_IOERR_READ", "reading"),
        ("SQLITE_IOERR_LOCK", "does not support SQLite's locks"),
        ("SQLITE_READONLY_DIRECTORY", "read-only"),
        ("SQLITE_CORRUPT_VTAB", "not a valid mixchat database"),
        ("SQLITE_BUSY_TIMEOUT", "locked"),
        ("SQLITE_IOERR_NOMEM", "out of memory"),
    ],
)
def test_sqlite_errors_are_told_by_their_extended_code(
    tmp_path: Path, name: str, expected: str
) -> None:
    exc = sqlite3.OperationalError("disk I/O error")  # SQLite's text hides which one
    exc.sqlite_errorname = name
    message = str(_error(exc, tmp_path / "c.db"))
    assert expected in message and str(tmp_path / "c.db") in message, message
    assert "\n" not in message


def test_a_truncated_log_that_is_still_there_is_not_called_deleted(tmp_path: Path) -> None:
    (tmp_path / "c.db-wal").write_bytes(b"x" * 100)
    exc = sqlite3.OperationalError("disk I/O error")
    exc.sqlite_errorname = "SQLITE_IOERR_SHORT_READ"
    assert "shorter than SQLite expects" in str(_error(exc, tmp_path / "c.db"))
