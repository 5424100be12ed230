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
prefix into memory before the first hit: over a million messages a common
prefix costs ~45 ms, a common word well under 1 ms. Hits are ranked by BM25
among the newest SEARCH_WINDOW matches, scored from FTS5's ``highlight()`` in
``searchrank.py`` (FTS5's own ``bm25()`` first counts every message holding each
word: ~25 ms per common word over a million messages).
"""

from __future__ import annotations

import contextlib
import enum
import functools
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

from mixchat import paths
from mixchat.conversation import Attachment, Conversation, Message, Role, Status, make_title
from mixchat.searchrank import MatchReader, QueryWord, bm25_scores, normalize, snippet
from mixchat.textsafe import scrub_surrogates

BUSY_TIMEOUT_S = 30.0
SEARCH_WINDOW = 1000  # search ranks at most this many of the newest matches
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
    message_count: int
    preset: str | None = None  # the preset it was started with (or had applied last)


@dataclass(frozen=True)
class SearchHit:
    """A message matching a search; ``snippet`` marks hits with MARK_START/MARK_END."""

    conversation_id: str
    title: str
    message_id: int
    role: Role
    snippet: str


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


def _migration_attachments(conn: sqlite3.Connection) -> None:
    # The files put into a message (their text is part of its content): a JSON list of
    # {name, size, sha256}; NULL when there are none.
    conn.execute("ALTER TABLE messages ADD COLUMN attachments TEXT")


# Applied in order; the schema version is len(MIGRATIONS). Only ever append.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migration_1, _migration_attachments]


def _error(exc: sqlite3.Error, path: Path) -> StoreError:
    """Turn a sqlite3 error into a one-line StoreError naming the file."""
    text = " ".join(str(exc).split())
    low = text.lower()
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return StoreError(f"{path} is not a valid mixchat database ({text}); left untouched")
    if "readonly" in low or "read-only" in low:
        return StoreError(f"cannot write {path}: the file or its directory is read-only")
    if "full" in low:
        return StoreError(f"cannot write {path}: the disk is full")
    if "disk i/o" in low:
        return StoreError(f"disk I/O error on {path} (is the disk full or failing?)")
    if "unable to open" in low:
        return StoreError(f"cannot open {path}: is its directory there and writable?")
    if "locked" in low or "busy" in low:
        return StoreError(f"{path} stayed locked by another mixchat for too long")
    return StoreError(f"database error on {path}: {text}")


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


def _make_private_dir(directory: Path, tighten: bool) -> None:
    """Create ``directory`` (and missing parents) as 0700; optionally tighten it."""
    missing: list[Path] = []
    probe = directory
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)  # another process may race us
        os.chmod(d, 0o700)  # mkdir's mode is masked by the umask
    if tighten and directory.stat().st_uid == os.getuid():
        # Best effort: an immutable directory must fail later, when writing, with a
        # message saying so, not here with a misleading "cannot create".
        with contextlib.suppress(OSError):
            os.chmod(directory, 0o700)


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
        attachments=_attachments(row["attachments"]),
    )


class ConversationStore:
    """Conversations and their messages in one SQLite file. Thread-safe."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        """Wrap an open connection; use :meth:`open` instead."""
        self._conn = conn
        self._lock = threading.RLock()
        self.path = path

    @classmethod
    def open(cls, path: Path | None = None) -> ConversationStore:
        """Open (creating and migrating if needed) the store at ``path``."""
        db = Path(path).expanduser() if path is not None else paths.database_file()
        try:
            _make_private_dir(db.parent, tighten=path is None)
            # Create the file ourselves so it is 0600 whatever the umask; SQLite
            # gives the -wal and -shm files the same mode.
            os.close(os.open(db, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot create {db}: {exc.strerror or exc}") from exc
        try:
            conn = sqlite3.connect(
                db, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
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
            shown = ", ".join(f"{r['id'][:12]} ({r['title'] or 'untitled'})" for r in rows[:5])
            more = ", …" if len(rows) > 5 else ""
            raise AmbiguousIdError(f"id {prefix!r} is ambiguous: {shown}{more}")
        return str(rows[0]["id"])

    @_guarded
    def last_conversation_id(self) -> str | None:
        """Id of the most recently updated conversation, or None if there are none."""
        with self._lock:
            row = self._conn.execute(
                "SELECT id FROM conversations ORDER BY updated_at DESC, rowid DESC LIMIT 1"
            ).fetchone()
        return None if row is None else str(row["id"])

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
            self._insert_conversation(conn, conv)
            if first_message is not None:
                self._append(conn, conv.id, first_message)
        return conv

    @staticmethod
    def _insert_conversation(conn: sqlite3.Connection, conv: Conversation) -> None:
        conn.execute(
            "INSERT INTO conversations (id, title, created_at, updated_at, model,"
            " system_prompt, settings) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                conv.id,
                scrub_surrogates(conv.title),
                conv.created_at,
                conv.updated_at,
                scrub_surrogates(conv.model),
                _opt_text(conv.system_prompt),
                _json(conv.settings),
            ),
        )

    @_guarded
    def get_conversation(self, id_or_prefix: str) -> Conversation:
        """The conversation with its messages, oldest first."""
        conv_id = self.resolve_id(id_or_prefix)
        with self._read() as conn:
            row = conn.execute("SELECT * FROM conversations WHERE id = ?", (conv_id,)).fetchone()
            rows = conn.execute(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY position", (conv_id,)
            ).fetchall()
        if row is None:  # deleted by another process meanwhile
            raise NotFoundError(f"no conversation with id {id_or_prefix!r}")
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
                f"UPDATE conversations SET {assignments}, updated_at = ? WHERE id = ?",
                (*changes.values(), time.time(), conv_id),
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

    @_guarded
    def truncate_from(self, message_id: int) -> int:
        """Delete a message and every later message of its conversation (regenerate,
        edit and resend); returns how many were deleted."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT conversation_id, position FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no message with id {message_id}")
            cursor = conn.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND position >= ?",
                (row["conversation_id"], row["position"]),
            )
            conn.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = ?",
                (time.time(), row["conversation_id"]),
            )
            return int(cursor.rowcount)

    @_guarded
    def replace_from(self, message_id: int, message: Message) -> Message:
        """Delete a message and every later one of its conversation and append ``message``
        in their place, in one transaction (an edited message resent: a crash leaves the
        old turn or the new message, never neither). Sets and returns it with its id."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT conversation_id, position FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no message with id {message_id}")
            conn.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND position >= ?",
                (row["conversation_id"], row["position"]),
            )
            self._append(conn, row["conversation_id"], message)
        return message

    @_guarded
    def data_version(self) -> int:
        """A number that changes whenever another connection (another mixchat process or
        window) commits to the database, and only then: this store's own writes leave it
        alone. Costs no disk read, so it can be polled (SQLite's ``PRAGMA data_version``)."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    @_guarded
    def import_conversation(self, conv: Conversation) -> Conversation:
        """Store a whole conversation; keeps its id if valid and free, else a new one."""
        with self._write() as conn:
            conv_id = conv.id.lower()
            taken = conn.execute("SELECT 1 FROM conversations WHERE id = ?", (conv_id,))
            if not re.fullmatch(r"[0-9a-f]{32}", conv_id) or taken.fetchone():
                conv_id = uuid.uuid4().hex
            title = conv.title
            if not title:
                first = next((m for m in conv.messages if m.role == Role.USER), None)
                title = make_title(first.content) if first else ""
            stored = replace(
                conv, id=conv_id, title=title, settings=dict(conv.settings), messages=[]
            )
            self._insert_conversation(conn, stored)
            for position, message in enumerate(conv.messages):
                stored.messages.append(self._insert_message(conn, conv_id, position, message))
        return stored

    # -- messages -----------------------------------------------------------

    @staticmethod
    def _insert_message(
        conn: sqlite3.Connection, conv_id: str, position: int, m: Message
    ) -> Message:
        role, status = Role(m.role), Status(m.status)
        stats = (m.prompt_tokens, m.completion_tokens, m.ttft_s, m.duration_s)
        cur = conn.execute(
            "INSERT INTO messages (conversation_id, position, role, content, status,"
            " prompt_tokens, completion_tokens, ttft_s, duration_s, created_at, updated_at,"
            " attachments) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                conv_id,
                position,
                role.value,
                scrub_surrogates(m.content),
                status.value,
                *stats,
                *[m.created_at] * 2,
                _attachments_json(m.attachments),
            ),
        )
        return replace(m, id=cur.lastrowid, role=role, status=status)

    @_guarded
    def append_message(self, conversation_id: str, message: Message) -> Message:
        """Append and commit ``message``; sets and returns it with its id.

        The first user message of an untitled conversation gives it its title.
        """
        conv_id = self.resolve_id(conversation_id)
        with self._write() as conn:
            self._append(conn, conv_id, message)
        return message

    @classmethod
    def _append(cls, conn: sqlite3.Connection, conv_id: str, message: Message) -> None:
        position = conn.execute(
            "SELECT coalesce(max(position), -1) + 1 FROM messages WHERE conversation_id = ?",
            (conv_id,),
        ).fetchone()[0]
        message.id = cls._insert_message(conn, conv_id, position, message).id
        conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (time.time(), conv_id))
        if message.role == Role.USER:
            conn.execute(
                "UPDATE conversations SET title = ? WHERE id = ? AND title = ''",
                (scrub_surrogates(make_title(message.content)), conv_id),
            )

    def start_reply(self, conversation_id: str) -> Message:
        """Append an empty assistant reply marked INTERRUPTED until finished."""
        reply = Message(role=Role.ASSISTANT, content="", status=Status.INTERRUPTED)
        return self.append_message(conversation_id, reply)

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
    ) -> None:
        """Save a reply's final text, status and statistics (``conversation_id``: as for
        ``checkpoint_reply``)."""
        now = time.time()
        stats = (prompt_tokens, completion_tokens, ttft_s, duration_s)
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE messages SET content = ?, status = ?, prompt_tokens = ?,"
                " completion_tokens = ?, ttft_s = ?, duration_s = ?, updated_at = ? WHERE id = ?"
                " AND (? IS NULL OR conversation_id = ?)",
                (
                    scrub_surrogates(content),
                    Status(status).value,
                    *stats,
                    now,
                    message_id,
                    *[conversation_id] * 2,
                ),
            )
            if cur.rowcount == 0:
                raise NotFoundError(f"no message with id {message_id}")
            conn.execute(
                "UPDATE conversations SET updated_at = ? WHERE id ="
                " (SELECT conversation_id FROM messages WHERE id = ?)",
                (now, message_id),
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
        words = _query_words(query)
        if not words or limit <= 0:
            return []
        if typing:
            words[-1] = (words[-1][0], True)
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
                "SELECT m.conversation_id, c.title, m.id, m.role, hit.marked FROM"
                " (SELECT rowid AS id, highlight(messages_fts, 0, ?, ?) AS marked"
                "   FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rowid DESC LIMIT ?) hit"
                " JOIN messages m ON m.id = hit.id"
                " JOIN conversations c ON c.id = m.conversation_id",
                (MARK_START, MARK_END, _fts_query(words, prefix), window),
            ).fetchall()
        query = [
            QueryWord(tuple(normalize(word)), _as_prefix(word, starred, prefix))
            for word, starred in words
        ]
        reader = MatchReader(query, MARK_START, MARK_END)
        matches = [reader.read(r[4]) for r in rows]
        scores = bm25_scores(matches)
        best = sorted(range(len(rows)), key=lambda i: (-scores[i], -rows[i][2]))[:limit]
        return [
            SearchHit(
                rows[i][0],
                rows[i][1],
                rows[i][2],
                Role(rows[i][3]),
                " ".join(snippet(matches[i], MARK_START, MARK_END).split()),
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
