"""Conversation persistence over SQLite (stdlib ``sqlite3`` only).

One database file holds every conversation. It is opened in WAL mode with
``BEGIN IMMEDIATE`` write transactions and a long busy timeout, so several
mixchat processes can write at once without "database is locked". Message
text is indexed with FTS5 (external content, kept in sync by triggers).

Search uses the ``unicode61 remove_diacritics 2`` tokenizer rather than
``trigram``: chat history is mostly prose, where word matching ranks well
(bm25) and keeps the index small (trigram indexes are ~3x the text and cannot
match queries shorter than three characters). Query words match whole words,
ignoring case and accents ("cafe" finds "Café"); ``word*`` matches a word
prefix, and when no message has every word whole, the words are retried as
prefixes ("deploy" then finds "deployment"). Whole words come first because
FTS5 reads a term's index lazily, newest first, but merges every term of a
prefix into memory before the first hit, so a common prefix costs far more than a
common word. Hits are ranked by BM25 among the newest SEARCH_WINDOW matches, scored
from FTS5's ``highlight()`` in ``searchrank.py`` (FTS5's own ``bm25()`` first counts
every message holding each word). The measured costs are in the README's
Performance section (``benchmarks/startup.py``, ``benchmarks/search_bounds.py``).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import itertools
import json
import os
import re
import sqlite3
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from mixchat import dbfile, paths, storetree
from mixchat.conversation import (
    Attachment,
    Conversation,
    Message,
    Role,
    Status,
    TreeError,
    make_title,
    tree_order,
)
from mixchat.searchrank import (
    EXCERPT_SCAN_CHARS,
    MatchReader,
    QueryWord,
    bm25_scores,
    first_hit,
    mark_excerpt,
    normalize,
    snippet,
)
from mixchat.textsafe import scrub_surrogates

BUSY_TIMEOUT_S = 30.0
SEARCH_WINDOW = 1000  # search ranks at most this many of the newest matches
# FTS5's highlight() costs hits x length (see searchrank); longer messages are marked in
# an excerpt instead (searchrank; benchmarks/search_bounds.py measures both).
HIGHLIGHT_MAX_CHARS = 4_000
# Longer searches are refused: no one types them, and each word (above all a word
# retried as a prefix) is one more index lookup: 333 two-letter words took seconds.
MAX_QUERY_CHARS = 1000
MAX_QUERY_WORDS = 32
# Start/end markers around matched words in SearchHit.snippet (STX/ETX).
MARK_START = "\x02"
MARK_END = "\x03"

_ID_RE = re.compile(r"[0-9a-f]{1,32}")
_P = ParamSpec("_P")
_T = TypeVar("_T")


class StoreError(Exception):
    """The conversation store cannot do what was asked; the message is one line."""


class NotFoundError(StoreError):
    """No conversation (or message) has that id."""


class AmbiguousIdError(StoreError):
    """An id prefix matches more than one conversation."""


@dataclass(frozen=True)
class ConversationSummary:
    """One row of the conversation list."""

    id: str
    title: str
    created_at: float
    updated_at: float
    model: str
    message_count: int  # messages on the shown path (what `show` prints)
    preset: str | None = None  # the preset it was started with (or had applied last)


@dataclass(frozen=True)
class SearchHit:
    """A message matching a search; ``snippet`` marks hits with MARK_START/MARK_END."""

    conversation_id: str
    title: str
    message_id: int
    role: Role
    snippet: str
    # False when the message is on a branch the conversation does not show (an older
    # answer, an earlier version of an edited question): ``switch_to`` shows it.
    shown: bool = True


class _Unset(enum.Enum):
    UNSET = 0


UNSET = _Unset.UNSET

_SCHEMA_1 = (
    """CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        system_prompt TEXT,
        settings TEXT NOT NULL DEFAULT '{}',
        message_count INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX conversations_updated ON conversations(updated_at)",
    """CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        content TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('complete', 'interrupted', 'error')),
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        ttft_s REAL,
        duration_s REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL)""",
    "CREATE UNIQUE INDEX messages_position ON messages(conversation_id, position)",
    """CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages',
        content_rowid='id', tokenize='unicode61 remove_diacritics 2')""",
    # Keep the FTS index and conversations.message_count in step with messages.
    """CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
        UPDATE conversations SET message_count = message_count + 1
            WHERE id = new.conversation_id;
    END""",
    """CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content)
            VALUES ('delete', old.id, old.content);
        UPDATE conversations SET message_count = message_count - 1
            WHERE id = old.conversation_id;
    END""",
    """CREATE TRIGGER messages_au AFTER UPDATE OF content ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content)
            VALUES ('delete', old.id, old.content);
        INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
    END""",
)


def _migration_1(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_1:
        conn.execute(statement)


# Times later than the clock by more than this are brought back to it by migration 2.
FUTURE_SKEW_S = 600.0

_SCHEMA_2 = (
    # When the conversation was last used on this machine (created, continued, opened):
    # `-c` continues that one. NULL for an imported conversation until it is used.
    "ALTER TABLE conversations ADD COLUMN used_at REAL",
    "UPDATE conversations SET used_at = updated_at",
    "CREATE INDEX conversations_used ON conversations(used_at)",
    # Each message's length, so search highlights a huge message only in an excerpt
    # (a separate table: a column after `content` would be read through its overflow pages).
    """CREATE TABLE message_sizes (
        id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        chars INTEGER NOT NULL)""",
    "INSERT INTO message_sizes (id, chars) SELECT id, length(content) FROM messages",
    """CREATE TRIGGER message_sizes_ai AFTER INSERT ON messages BEGIN
        INSERT INTO message_sizes (id, chars) VALUES (new.id, length(new.content));
    END""",
    """CREATE TRIGGER message_sizes_au AFTER UPDATE OF content ON messages BEGIN
        UPDATE message_sizes SET chars = length(new.content) WHERE id = new.id;
    END""",
    """CREATE TRIGGER message_sizes_ad AFTER DELETE ON messages BEGIN
        DELETE FROM message_sizes WHERE id = old.id;
    END""",
)


def _migration_2(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_2:
        conn.execute(statement)
    # Imports by earlier versions kept times from the future (a year 5107 in `list`) or
    # before 1970.
    limit, now = time.time() + FUTURE_SKEW_S, time.time()
    for table in ("conversations", "messages"):
        for column in ("created_at", "updated_at"):  # fixed names
            conn.execute(f"UPDATE {table} SET {column} = ? WHERE {column} > ?", (now, limit))
            conn.execute(f"UPDATE {table} SET {column} = 0 WHERE {column} < 0")
    conn.execute("UPDATE conversations SET used_at = updated_at WHERE used_at > ?", (limit,))


def _migration_finish_reason(conn: sqlite3.Connection) -> None:
    # Why a reply ended: "stop", or "length" when the token limit cut it (it can be continued).
    conn.execute("ALTER TABLE messages ADD COLUMN finish_reason TEXT")


def _migration_attachments(conn: sqlite3.Connection) -> None:
    # The files put into a message (their text is part of its content): a JSON list of
    # {name, size, sha256}; NULL when there are none.
    conn.execute("ALTER TABLE messages ADD COLUMN attachments TEXT")


# Applied in order; the schema version is len(MIGRATIONS). Only ever append.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _migration_1,
    _migration_2,
    _migration_finish_reason,
    _migration_attachments,
    storetree.migrate,  # messages form a tree (branches instead of deletions)
]


def _error(exc: sqlite3.Error, path: Path) -> StoreError:
    """Turn a sqlite3 error into a one-line StoreError naming the file and what happened."""
    return StoreError(dbfile.sqlite_error_message(exc, path))


def _guarded(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """Re-raise sqlite3 errors of a ConversationStore method as StoreError."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            store = args[0]
            assert isinstance(store, ConversationStore)
            raise _error(exc, store.path) from exc

    return wrapper


def _retry_busy(action: Callable[[], _T], attempts: int = 6) -> _T:
    """Run ``action``, retrying with backoff while SQLite says locked/busy.

    The busy timeout absorbs ordinary contention, but SQLite fails at once
    where waiting could deadlock (e.g. two processes switching a new file to
    WAL), so this is the last resort.
    """
    for attempt in range(attempts):
        try:
            return action()
        except sqlite3.OperationalError as exc:
            msg = str(exc).lower()
            if attempt == attempts - 1 or ("locked" not in msg and "busy" not in msg):
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def _json(value: Any) -> str:
    """Settings as JSON text that SQLite can store (lone surrogates become U+FFFD)."""
    return scrub_surrogates(json.dumps(value, sort_keys=True, ensure_ascii=False))


def _opt_text(text: str | None) -> str | None:
    """Text SQLite can store: lone surrogates (from argv, env or a JSON import) cannot be
    encoded as UTF-8 and become U+FFFD; everything else is kept as it is."""
    return None if text is None else scrub_surrogates(text)


def _query_words(query: str) -> list[tuple[str, bool]]:
    """Searchable words of ``query`` as (word, typed as a prefix with ``*``)."""
    # The FTS5 parser stops at NUL and sqlite3 rejects lone surrogates; neither
    # can be part of a token, so blank them.
    clean = "".join(" " if ch == "\x00" or "\ud800" <= ch <= "\udfff" else ch for ch in query)
    words = []
    for word in clean.split():
        if any(unicodedata.category(ch)[0] in "LN" or ch >= "\ue000" for ch in word):
            stem = word.rstrip("*")
            words.append((stem, stem != word))
    return words


def _as_prefix(word: str, starred: bool, prefix: bool) -> bool:
    """Whether ``word`` matches as a prefix: typed with ``*`` or ``prefix`` asked for all.
    One-character words stay whole: such a prefix would expand to a large part of the
    vocabulary."""
    return (starred or prefix) and len(word) > 1


def _fts_query(words: list[tuple[str, bool]], prefix: bool = False) -> str:
    """Quote each word as an FTS5 phrase, a prefix phrase where ``_as_prefix``."""
    return " ".join(
        '"' + word.replace('"', '""') + '"' + ("*" if _as_prefix(word, starred, prefix) else "")
        for word, starred in words
    )


def _distinct_width(ids: list[str], least: int = 8) -> int:
    """How many leading characters tell every one of ``ids`` (sorted) from its neighbours."""
    width = least
    for a, b in itertools.pairwise(ids):
        common = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), len(a))
        width = max(width, common + 1)
    return width


def _one_line(text: str, width: int = 40) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


EXCERPT_FIRST_BYTES = 65_536  # read first; the rest of the scan only if no hit is in it


def _beginning(
    conn: sqlite3.Connection, message_id: int, words: list[QueryWord]
) -> tuple[str, bool]:
    """The beginning of a message, read without loading the rest (SQLite's incremental
    blob I/O): EXCERPT_FIRST_BYTES, or up to EXCERPT_SCAN_CHARS bytes when no query word
    is in those. Also whether that is the whole message."""
    with conn.blobopen("messages", "content", message_id, readonly=True) as blob:
        size = len(blob)
        data = blob.read(EXCERPT_FIRST_BYTES)
        # A character cut at the end is dropped; the stored text is valid UTF-8 otherwise.
        text = data.decode("utf-8", errors="ignore")
        if len(data) < size and first_hit(text, words) is None:
            data += blob.read(EXCERPT_SCAN_CHARS - len(data))
            text = data.decode("utf-8", errors="ignore")
    return text, len(data) == size


def _attachments_json(attachments: list[Attachment]) -> str | None:
    if not attachments:
        return None
    return _json([{"name": a.name, "size": a.size, "sha256": a.sha256} for a in attachments])


def _attachments(text: str | None) -> list[Attachment]:
    """The attachments column read back; anything unreadable counts as none."""
    try:
        items = json.loads(text) if text else []
        return [Attachment(str(i["name"]), int(i["size"]), str(i["sha256"])) for i in items]
    except (ValueError, TypeError, KeyError):
        return []


def _message(row: sqlite3.Row) -> Message:
    return Message(
        role=Role(row["role"]),
        content=row["content"],
        status=Status(row["status"]),
        id=row["id"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        ttft_s=row["ttft_s"],
        duration_s=row["duration_s"],
        created_at=row["created_at"],
        finish_reason=row["finish_reason"],
        attachments=_attachments(row["attachments"]),
        parent_id=row["parent_id"],
    )


def _shown(conn: sqlite3.Connection, conv_id: str, asked: str) -> Conversation:
    """The conversation ``conv_id`` with its shown path (in a read transaction)."""
    row = conn.execute("SELECT * FROM conversations WHERE id = ?", (conv_id,)).fetchone()
    if row is None:  # deleted by another process meanwhile
        raise NotFoundError(f"no conversation with id {asked!r}")
    rows = storetree.path_rows(conn, storetree.head(conn, conv_id))
    return Conversation(
        id=row["id"],
        title=row["title"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        model=row["model"],
        system_prompt=row["system_prompt"],
        settings=json.loads(row["settings"]),
        messages=[_message(r) for r in rows],
    )


def _parent_of(conn: sqlite3.Connection, message_id: int) -> int | None:
    row = conn.execute("SELECT parent_id FROM messages WHERE id = ?", (message_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no message with id {message_id}")
    return None if row[0] is None else int(row[0])


def _conversation_of(conn: sqlite3.Connection, message_id: int) -> str:
    """The id of the conversation holding ``message_id``."""
    row = conn.execute(
        "SELECT conversation_id FROM messages WHERE id = ?", (message_id,)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no message with id {message_id}")
    return str(row[0])


class ConversationStore:
    """Conversations and their messages in one SQLite file. Thread-safe."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        """Wrap an open connection; use :meth:`open` instead."""
        self._conn = conn
        self._lock = threading.RLock()
        self.path = path

    @classmethod
    def open(cls, path: Path | None = None, *, create: bool = True) -> ConversationStore:
        """Open (creating and migrating if needed) the store at ``path``.

        With ``create=False`` (read-only commands) nothing is created: a missing database
        opens as an empty store in memory. The file and its directory are checked first
        (``dbfile``): one that is not ours, or a dangling link, is a StoreError.
        """
        db = Path(path).expanduser() if path is not None else paths.database_file()
        try:
            exists = dbfile.prepare(db, create=create, tighten=path is None)
        except dbfile.DatabaseFileError as exc:
            raise StoreError(str(exc)) from None
        try:
            conn = sqlite3.connect(
                db if exists else ":memory:",
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise _error(exc, db) from exc
        conn.row_factory = sqlite3.Row
        store = cls(conn, db)
        try:
            store._setup()
        except BaseException:
            conn.close()
            raise
        return store

    @_guarded
    def _setup(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        # Read-only checks first (one snapshot, as another process may be
        # migrating): a foreign or newer file must stay byte-identical.
        with self._read():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            foreign = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        self._check_not_newer(version)
        if version == 0 and foreign:
            raise StoreError(f"{self.path} is not a valid mixchat database; left untouched")
        _retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA secure_delete = ON")  # zero deleted text in the file
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            with contextlib.suppress(OSError):  # best effort; SQLite copies the db's mode
                if side.stat().st_uid == os.getuid():
                    os.chmod(side, 0o600)
        if version < len(MIGRATIONS):
            with self._write():
                # Re-read under the write lock: another process may have migrated.
                current = conn.execute("PRAGMA user_version").fetchone()[0]
                self._check_not_newer(current)
                for migrate in MIGRATIONS[current:]:
                    migrate(conn)
                conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")

    def _check_not_newer(self, version: int) -> None:
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} was written by a newer mixchat "
                f"(schema {version}, this version knows {len(MIGRATIONS)})"
            )

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE, COMMIT or ROLLBACK on error."""
        with self._lock:
            _retry_busy(lambda: self._conn.execute("BEGIN IMMEDIATE"))
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so multi-query reads see one snapshot."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")

    # -- ids ----------------------------------------------------------------

    @_guarded
    def resolve_id(self, prefix: str) -> str:
        """Full id of the one conversation whose id starts with ``prefix`` (git style)."""
        key = prefix.strip().lower()
        if not _ID_RE.fullmatch(key):
            raise NotFoundError(f"no conversation with id {prefix!r}")
        # Ids are hex, so every id starting with key sorts in [key, key + "g").
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, title FROM conversations WHERE id >= ? AND id < ? ORDER BY id LIMIT 6",
                (key, key + "g"),
            ).fetchall()
        if not rows:
            raise NotFoundError(f"no conversation with id {prefix!r}")
        if len(rows) > 1:
            ids = [str(r["id"]) for r in rows[:5]]
            width = _distinct_width(ids)
            shown = ", ".join(
                f"{i[:width]} ({_one_line(r['title']) or 'untitled'})"
                for i, r in zip(ids, rows, strict=False)
            )
            more = ", …" if len(rows) > 5 else ""
            raise AmbiguousIdError(f"id {prefix!r} is ambiguous: {shown}{more}")
        return str(rows[0]["id"])

    @_guarded
    def last_conversation_id(self) -> str | None:
        """Id of the conversation last used on this machine (created, continued or opened;
        see :meth:`mark_used`), or None if none was. Imported conversations count only
        once used: their own timestamps say nothing about this machine."""
        with self._lock:
            row = self._conn.execute(
                "SELECT id FROM conversations WHERE used_at IS NOT NULL"
                " ORDER BY used_at DESC, rowid DESC LIMIT 1"
            ).fetchone()
        return None if row is None else str(row["id"])

    @_guarded
    def mark_used(self, id_or_prefix: str) -> None:
        """Note that the user opened this conversation now (the app calls this), so that
        ``-c`` continues it."""
        conv_id = self.resolve_id(id_or_prefix)
        with self._write() as conn:
            conn.execute(
                "UPDATE conversations SET used_at = ? WHERE id = ?", (time.time(), conv_id)
            )

    # -- conversations ------------------------------------------------------

    @_guarded
    def create_conversation(
        self,
        *,
        model: str,
        system_prompt: str | None,
        settings: dict[str, Any],
        title: str | None = None,
        first_message: Message | None = None,
    ) -> Conversation:
        """Create a conversation; with no title it gets one from the first user message.

        ``first_message`` is committed in the same transaction (and gets its id), so a
        failure (disk full, say) never leaves an empty conversation behind.
        """
        now = time.time()
        conv = Conversation(
            id=uuid.uuid4().hex,
            title=title or "",
            created_at=now,
            updated_at=now,
            model=model,
            system_prompt=system_prompt,
            settings=dict(settings),
        )
        with self._write() as conn:
            self._insert_conversation(conn, conv, used_at=now)
            if first_message is not None:
                self._append(conn, conv.id, first_message)
        return conv

    @staticmethod
    def _insert_conversation(
        conn: sqlite3.Connection, conv: Conversation, used_at: float | None
    ) -> None:
        conn.execute(
            "INSERT INTO conversations (id, title, created_at, updated_at, model,"
            " system_prompt, settings, used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                conv.id,
                scrub_surrogates(conv.title),
                conv.created_at,
                conv.updated_at,
                scrub_surrogates(conv.model),
                _opt_text(conv.system_prompt),
                _json(conv.settings),
                used_at,
            ),
        )

    @_guarded
    def get_conversation(self, id_or_prefix: str) -> Conversation:
        """The conversation with the messages of the path it shows, oldest first (the whole
        conversation when it has no branches)."""
        conv_id = self.resolve_id(id_or_prefix)
        with self._read() as conn:
            return _shown(conn, conv_id, id_or_prefix)

    @_guarded
    def get_tree(self, id_or_prefix: str) -> Conversation:
        """The conversation with every branch: ``messages`` is the shown path, ``branches``
        every other message (parents before children, oldest first); ``parent_id`` links
        them."""
        conv_id = self.resolve_id(id_or_prefix)
        with self._read() as conn:
            conv = _shown(conn, conv_id, id_or_prefix)
            shown = {m.id for m in conv.messages}
            rows = conn.execute(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conv_id,)
            ).fetchall()
        conv.branches = [_message(r) for r in rows if r["id"] not in shown]
        return conv

    @_guarded
    def list_conversations(
        self, limit: int | None = None, offset: int = 0
    ) -> list[ConversationSummary]:
        """Conversation summaries, most recently updated first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, title, created_at, updated_at, model, message_count,"
                " CASE WHEN json_type(settings, '$.preset') = 'text'"
                " THEN json_extract(settings, '$.preset') END"
                " FROM conversations ORDER BY updated_at DESC, rowid DESC LIMIT ? OFFSET ?",
                (-1 if limit is None else limit, offset),
            ).fetchall()
        return [ConversationSummary(*r) for r in rows]

    @_guarded
    def rename(self, id_or_prefix: str, title: str) -> None:
        """Set a conversation's title."""
        conv_id = self.resolve_id(id_or_prefix)
        with self._write() as conn:
            conn.execute(
                "UPDATE conversations SET title = ? WHERE id = ?",
                (scrub_surrogates(title), conv_id),
            )

    @_guarded
    def update_settings(
        self,
        id_or_prefix: str,
        *,
        system_prompt: str | _Unset | None = UNSET,
        settings: dict[str, Any] | _Unset = UNSET,
        model: str | _Unset = UNSET,
    ) -> None:
        """Change the system prompt, settings and/or model; omitted ones stay."""
        conv_id = self.resolve_id(id_or_prefix)
        changes: dict[str, Any] = {}
        if not isinstance(system_prompt, _Unset):
            changes["system_prompt"] = _opt_text(system_prompt)
        if not isinstance(settings, _Unset):
            changes["settings"] = _json(settings)
        if not isinstance(model, _Unset):
            changes["model"] = scrub_surrogates(model)
        if not changes:
            return
        assignments = ", ".join(f"{column} = ?" for column in changes)  # fixed column names
        with self._write() as conn:
            conn.execute(
                f"UPDATE conversations SET {assignments}, updated_at = ?, used_at = ? WHERE id = ?",
                (*changes.values(), *[time.time()] * 2, conv_id),
            )

    @_guarded
    def delete(self, id_or_prefix: str) -> None:
        """Delete a conversation and its messages, leaving no trace of their text."""
        conv_id = self.resolve_id(id_or_prefix)
        with self._write() as conn:
            conn.execute("DELETE FROM conversations WHERE id = ?", (conv_id,))
            # FTS5 only marks entries deleted; merging rewrites the index without
            # them (secure_delete zeroes the freed pages).
            conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('optimize')")
        with self._lock:
            # Copy everything into the main file and empty the WAL, which still
            # holds old page images. Best effort: other readers can delay it.
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- branches -----------------------------------------------------------

    @_guarded
    def truncate_from(self, message_id: int) -> int:
        """Delete a message and everything below it (what followed it, on every branch);
        returns how many messages were deleted. When the conversation showed a path through
        it, it shows its parent's most recently shown remaining branch instead (or ends at
        the parent)."""
        with self._write() as conn:
            conv_id = _conversation_of(conn, message_id)
            count = self._delete_branch(conn, conv_id, message_id)
            conn.execute(
                "UPDATE conversations SET updated_at = ?, used_at = ? WHERE id = ?",
                (*[time.time()] * 2, conv_id),
            )
            return count

    @_guarded
    def replace_from(self, message_id: int, message: Message) -> Message:
        """Delete a message and everything below it and put ``message`` in its place (the
        same parent), shown, in one transaction: a crash leaves the old branch or the new
        message, never neither. Sets and returns it with its id. (``add_sibling`` keeps the
        old branch.)"""
        with self._write() as conn:
            conv_id = _conversation_of(conn, message_id)
            parent = _parent_of(conn, message_id)
            self._delete_branch(conn, conv_id, message_id)
            self._append(conn, conv_id, message, parent)
        return message

    @staticmethod
    def _delete_branch(conn: sqlite3.Connection, conv_id: str, message_id: int) -> int:
        parent = _parent_of(conn, message_id)
        head = storetree.head(conn, conv_id)
        shown = head is not None and head in storetree.subtree_ids(conn, message_id)
        count = storetree.delete_subtree(conn, message_id)
        if shown:
            storetree.set_head(
                conn,
                conv_id,
                storetree.newest_leaf(conn, conv_id)
                if parent is None
                else storetree.leaf_below(conn, parent),
            )
        return count

    @_guarded
    def add_sibling(
        self, message_id: int, message: Message, *, conversation_id: str | None = None
    ) -> Message:
        """Add ``message`` beside ``message_id`` (with the same parent) and show it: an
        edited question resent, the earlier version and its answers kept as a branch. With
        ``conversation_id``, ``message_id`` must belong to it. Sets and returns ``message``
        with its id."""
        with self._write() as conn:
            conv_id = _conversation_of(conn, message_id)
            if conversation_id is not None and conversation_id != conv_id:
                raise NotFoundError(f"no message with id {message_id} in this conversation")
            self._append(conn, conv_id, message, _parent_of(conn, message_id))
        return message

    @_guarded
    def switch_to(self, message_id: int) -> Conversation:
        """Show the path through ``message_id`` (a sibling, a search hit on another branch),
        going on below it by the most recently shown (or newest) messages to a leaf; the
        conversation counts as used now. Returns the conversation as it is now shown."""
        with self._write() as conn:
            conv_id = _conversation_of(conn, message_id)
            storetree.set_head(conn, conv_id, storetree.leaf_below(conn, message_id))
            return _shown(conn, conv_id, conv_id)

    @_guarded
    def siblings(self, message_id: int) -> list[Message]:
        """``message_id`` and the other messages with its parent (the other answers to its
        question, the other versions of an edited question), oldest first."""
        with self._read() as conn:
            rows = storetree.sibling_rows(conn, message_id)
        if not rows:
            raise NotFoundError(f"no message with id {message_id}")
        return [_message(r) for r in rows]

    @_guarded
    def sibling_places(self, id_or_prefix: str) -> dict[int, tuple[int, int]]:
        """For each message of the shown path that has siblings, its place among them (from
        1, oldest first) and how many there are: ``{42: (2, 3)}`` shows as "2/3"."""
        conv_id = self.resolve_id(id_or_prefix)
        with self._read() as conn:
            return storetree.sibling_places(conn, storetree.head(conn, conv_id))

    @_guarded
    def fork(self, message_id: int) -> Conversation:
        """A new conversation holding copies of the path from a first message down to
        ``message_id`` (any message, shown or not), with the same model, system prompt and
        settings, titled after the original with " (fork)"; it counts as used now (``-c``
        continues it). Copies keep ``rm`` of either conversation exact."""
        now = time.time()
        with self._write() as conn:
            source = _shown(conn, _conversation_of(conn, message_id), str(message_id))
            rows = storetree.path_rows(conn, message_id)
            first = next((r for r in rows if r["role"] == Role.USER.value), None)
            title = source.title or (make_title(first["content"]) if first else "")
            conv = replace(
                source,
                id=uuid.uuid4().hex,
                title=f"{title} (fork)".lstrip(),
                created_at=now,
                updated_at=now,
                settings=dict(source.settings),
                messages=[],
            )
            self._insert_conversation(conn, conv, used_at=now)
            parent: int | None = None
            for position, row in enumerate(rows):
                copy = self._insert_message(conn, conv.id, position, _message(row), parent)
                conv.messages.append(copy)
                parent = copy.id
            storetree.set_head(conn, conv.id, parent)
        return conv

    @_guarded
    def data_version(self) -> int:
        """A number that changes whenever another connection (another mixchat process or
        window) commits to the database, and only then: this store's own writes leave it
        alone. Costs no disk read, so it can be polled (SQLite's ``PRAGMA data_version``)."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    @_guarded
    def import_conversation(self, conv: Conversation) -> Conversation:
        """Store a whole conversation; keeps its id if valid and free, else a new one.

        ``conv.messages`` is the path to show; ``conv.branches`` (optional) the rest of its
        tree, linked by ``id``/``parent_id`` (see ``tree_order``; without ids the messages
        are a straight line). Returns it with the new ids. Times later than this machine's
        clock (plus FUTURE_SKEW_S) become now, so an import cannot claim the top of the list
        for years (and times before 1970 become 1970: no year -1199 either); the
        conversation is not "used" here until it is opened or continued (see
        ``last_conversation_id``).
        """
        try:
            order = tree_order(conv)
        except TreeError as exc:
            raise StoreError(f"cannot import the conversation: {exc}") from None
        on_path = {id(m) for m in conv.messages}
        with self._write() as conn:
            conv_id = conv.id.lower()
            taken = conn.execute("SELECT 1 FROM conversations WHERE id = ?", (conv_id,))
            if not re.fullmatch(r"[0-9a-f]{32}", conv_id) or taken.fetchone():
                conv_id = uuid.uuid4().hex
            title = conv.title
            if not title:
                first = next((m for m in conv.messages if m.role == Role.USER), None)
                title = make_title(first.content) if first else ""
            now = time.time()

            def clamp(ts: float) -> float:  # from the future: now; before 1970: 1970
                return now if ts > now + FUTURE_SKEW_S else max(ts, 0.0)

            stored = replace(
                conv,
                id=conv_id,
                title=title,
                settings=dict(conv.settings),
                messages=[],
                branches=[],
                created_at=clamp(conv.created_at),
                updated_at=clamp(conv.updated_at),
            )
            # Not used here yet: `-c` goes on with what the user last used, not with
            # whatever an imported file says is newest.
            self._insert_conversation(conn, stored, used_at=None)
            new_ids: dict[int, int] = {}  # the file's ids -> ours
            depth: dict[int | None, int] = {None: -1}
            last: int | None = None  # without ids: the path's message before
            for message in order:  # parents first, so the path stays in its order
                if message.id is None:
                    parent = last
                else:
                    parent = None if message.parent_id is None else new_ids[message.parent_id]
                dated = replace(message, created_at=clamp(message.created_at))
                saved = self._insert_message(conn, conv_id, depth[parent] + 1, dated, parent)
                assert saved.id is not None
                depth[saved.id] = depth[parent] + 1
                if message.id is not None:
                    new_ids[message.id] = saved.id
                last = saved.id
                (stored.messages if id(message) in on_path else stored.branches).append(saved)
            storetree.set_head(
                conn, conv_id, stored.messages[-1].id if stored.messages else None, used=False
            )
        return stored

    # -- messages -----------------------------------------------------------

    @staticmethod
    def _insert_message(
        conn: sqlite3.Connection,
        conv_id: str,
        position: int,
        m: Message,
        parent_id: int | None,
    ) -> Message:
        role, status = Role(m.role), Status(m.status)
        stats = (m.prompt_tokens, m.completion_tokens, m.ttft_s, m.duration_s)
        cur = conn.execute(
            "INSERT INTO messages (conversation_id, position, role, content, status,"
            " prompt_tokens, completion_tokens, ttft_s, duration_s, created_at, updated_at,"
            " finish_reason, attachments, parent_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                conv_id,
                position,
                role.value,
                scrub_surrogates(m.content),
                status.value,
                *stats,
                *[m.created_at] * 2,
                m.finish_reason,
                _attachments_json(m.attachments),
                parent_id,
            ),
        )
        return replace(m, id=cur.lastrowid, role=role, status=status, parent_id=parent_id)

    @_guarded
    def append_message(
        self,
        conversation_id: str,
        message: Message,
        *,
        parent_id: int | _Unset | None = UNSET,
    ) -> Message:
        """Add and commit ``message`` at the end of the shown path (or below ``parent_id``;
        None: as another first message) and show it; sets and returns it with its id.

        The first user message of an untitled conversation gives it its title.
        """
        conv_id = self.resolve_id(conversation_id)
        with self._write() as conn:
            self._append(conn, conv_id, message, parent_id)
        return message

    @classmethod
    def _append(
        cls,
        conn: sqlite3.Connection,
        conv_id: str,
        message: Message,
        parent: int | _Unset | None = UNSET,
    ) -> None:
        if isinstance(parent, _Unset):
            parent = storetree.head(conn, conv_id)
        position = 0
        if parent is not None:
            row = conn.execute(
                "SELECT position FROM messages WHERE id = ? AND conversation_id = ?",
                (parent, conv_id),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no message with id {parent} in this conversation")
            position = int(row[0]) + 1
        saved = cls._insert_message(conn, conv_id, position, message, parent)
        message.id, message.parent_id = saved.id, parent
        storetree.set_head(conn, conv_id, saved.id, updated=True)
        if message.role == Role.USER:
            conn.execute(
                "UPDATE conversations SET title = ? WHERE id = ? AND title = ''",
                (scrub_surrogates(make_title(message.content)), conv_id),
            )

    def start_reply(
        self, conversation_id: str, *, parent_id: int | _Unset | None = UNSET
    ) -> Message:
        """Add an empty assistant reply marked INTERRUPTED until finished, at the end of the
        shown path (or below ``parent_id``: a question answered again), and show it."""
        reply = Message(role=Role.ASSISTANT, content="", status=Status.INTERRUPTED)
        return self.append_message(conversation_id, reply, parent_id=parent_id)

    @_guarded
    def reopen_reply(self, message_id: int, conversation_id: str) -> Message:
        """Mark a saved assistant reply as streaming again (INTERRUPTED until finished), to be
        continued where it ended; its text stays."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE messages SET status = ?, finish_reason = NULL, updated_at = ?"
                " WHERE id = ? AND conversation_id = ? AND role = ?",
                (Status.INTERRUPTED.value, time.time(), message_id, conversation_id, "assistant"),
            )
            if cur.rowcount == 0:
                raise NotFoundError(f"no reply with id {message_id} in this conversation")
            row = conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        return _message(row)

    @_guarded
    def checkpoint_reply(
        self, message_id: int, content: str, *, conversation_id: str | None = None
    ) -> None:
        """Save the partial text of a streaming reply (cheap; call often).

        With ``conversation_id`` the row must still belong to that conversation: message ids
        of deleted rows are reused, so a reply whose conversation was deleted while it
        streamed would otherwise overwrite another conversation's message.
        """
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE messages SET content = ?, updated_at = ? WHERE id = ?"
                " AND (? IS NULL OR conversation_id = ?)",
                (scrub_surrogates(content), time.time(), message_id, *[conversation_id] * 2),
            )
            if cur.rowcount == 0:
                raise NotFoundError(f"no message with id {message_id}")

    @_guarded
    def finish_reply(
        self,
        message_id: int,
        content: str,
        status: Status,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        ttft_s: float | None = None,
        duration_s: float | None = None,
        *,
        conversation_id: str | None = None,
        finish_reason: str | None = None,
    ) -> None:
        """Save a reply's final text, status, statistics and why it ended (``stop``,
        ``length``; ``conversation_id``: as for ``checkpoint_reply``)."""
        now = time.time()
        stats = (prompt_tokens, completion_tokens, ttft_s, duration_s)
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE messages SET content = ?, status = ?, prompt_tokens = ?,"
                " completion_tokens = ?, ttft_s = ?, duration_s = ?, updated_at = ?,"
                " finish_reason = ? WHERE id = ? AND (? IS NULL OR conversation_id = ?)",
                (
                    scrub_surrogates(content),
                    Status(status).value,
                    *stats,
                    now,
                    finish_reason,
                    message_id,
                    *[conversation_id] * 2,
                ),
            )
            if cur.rowcount == 0:
                raise NotFoundError(f"no message with id {message_id}")
            conn.execute(
                "UPDATE conversations SET updated_at = ?, used_at = ? WHERE id ="
                " (SELECT conversation_id FROM messages WHERE id = ?)",
                (now, now, message_id),
            )

    # -- search -------------------------------------------------------------

    @_guarded
    def search(self, query: str, limit: int = 50, *, typing: bool = False) -> list[SearchHit]:
        """Messages containing every word of ``query``, best first.

        ``query`` is plain words, never FTS syntax. Words match whole words,
        case- and accent-insensitively; ``word*`` matches a word prefix. With
        ``typing`` (search as you type) the last word is a prefix too, as it
        may be unfinished. When nothing matches, every word is retried as a
        prefix (one-character words stay whole). Results are the best BM25
        matches (all words weighted alike) among the newest SEARCH_WINDOW
        matching messages.
        """
        if len(query) > MAX_QUERY_CHARS:
            raise StoreError(
                f"the search is {len(query):,} characters long; mixchat searches at most"
                f" {MAX_QUERY_CHARS:,} (use fewer words)"
            )
        words = _query_words(query)
        if not words or limit <= 0:
            return []
        if typing:
            words[-1] = (words[-1][0], True)
        # A word said twice filters nothing more (every word must match anyway).
        words = list({(w.casefold(), starred): (w, starred) for w, starred in words}.values())
        if len(words) > MAX_QUERY_WORDS:
            raise StoreError(
                f"the search has {len(words)} different words; mixchat searches at most"
                f" {MAX_QUERY_WORDS}"
            )
        hits = self._ranked_matches(words, prefix=False, limit=limit)
        if not hits and _fts_query(words, prefix=True) != _fts_query(words):
            hits = self._ranked_matches(words, prefix=True, limit=limit)
        return hits

    def _ranked_matches(
        self, words: list[tuple[str, bool]], prefix: bool, limit: int
    ) -> list[SearchHit]:
        # Only the newest SEARCH_WINDOW matches are ranked: FTS5 walks rowids newest
        # first and stops there, so very common words stay fast. Ranking and snippets
        # come from highlight() (searchrank.py), which is cheaper than bm25() and snippet().
        window = max(SEARCH_WINDOW, limit)
        with self._read() as conn:
            rows = conn.execute(
                "SELECT m.conversation_id, c.title, m.id, m.role, hit.marked, hit.chars FROM"
                " (SELECT messages_fts.rowid AS id, size.chars AS chars,"
                "   CASE WHEN size.chars <= ? THEN highlight(messages_fts, 0, ?, ?) END AS marked"
                "   FROM messages_fts LEFT JOIN message_sizes size ON size.id = messages_fts.rowid"
                "   WHERE messages_fts MATCH ? ORDER BY messages_fts.rowid DESC LIMIT ?) hit"
                " JOIN messages m ON m.id = hit.id"
                " JOIN conversations c ON c.id = m.conversation_id",
                (HIGHLIGHT_MAX_CHARS, MARK_START, MARK_END, _fts_query(words, prefix), window),
            ).fetchall()
            query = [
                QueryWord(tuple(normalize(word)), _as_prefix(word, starred, prefix))
                for word, starred in words
            ]
            beginnings = {r[2]: _beginning(conn, r[2], query) for r in rows if r[4] is None}
        reader = MatchReader(query, MARK_START, MARK_END)
        marked: list[tuple[str, dict[str, Any]]] = []  # highlighted text, how to read it
        for row in rows:
            if row[4] is not None:
                marked.append((row[4], {}))
                continue
            text, whole = beginnings[row[2]]
            excerpt, lo, hi = mark_excerpt(text, query, MARK_START, MARK_END, whole=whole)
            chars = max(row[5] or 0, len(text))
            # BM25's length: the excerpt's words per character, over the whole message.
            length = len(excerpt.split()) * chars // max(1, len(excerpt))
            marked.append(
                (excerpt, {"length": length, "cut_before": lo > 0, "cut_after": hi < chars})
            )
        # Every match is counted for ranking; only the ones shown are placed for a snippet.
        scores = bm25_scores([reader.read(text, place=False, **how) for text, how in marked])
        best = sorted(range(len(rows)), key=lambda i: (-scores[i], -rows[i][2]))[:limit]
        found: dict[str, list[int]] = {}
        for i in best:
            found.setdefault(rows[i][0], []).append(rows[i][2])
        with self._read() as conn:
            away = storetree.off_path(conn, found)
        return [
            SearchHit(
                rows[i][0],
                rows[i][1],
                rows[i][2],
                Role(rows[i][3]),
                " ".join(
                    snippet(reader.read(marked[i][0], **marked[i][1]), MARK_START, MARK_END).split()
                ),
                shown=rows[i][2] not in away,
            )
            for i in best
        ]

    # -- lifetime -----------------------------------------------------------

    def close(self) -> None:
        """Close the database; further calls fail. Safe to call twice."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ConversationStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
