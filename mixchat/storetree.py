"""Messages as a tree, in SQL: the schema change and the queries ``store.py`` builds on.

Each message has a parent (``parent_id``; NULL for a first message), so a regenerated answer
or an edited question is a sibling of the one it replaces and nothing is deleted. A
conversation shows one path: from a first message down to its ``head_id``, the last
message shown. ``position`` is a message's depth (its index on any path through it), so the
shown path is ordered by it and ``message_count`` (what ``list`` shows) is the head's
``position + 1``, kept by a trigger whenever the head moves. ``shown_at`` is when a message
last became the head (created or switched to): switching to a sibling follows the most
recently shown messages below it down to a leaf.

Invariant kept by every writer: a parent exists before its children, so a child's id is
larger than its parent's (SQLite gives a new row the largest rowid plus one), and the
parent links have no cycles. Queries walk parents with ``UNION`` anyway, which stops on a
cycle a damaged file might hold.
"""

from __future__ import annotations

import sqlite3
import time

_SCHEMA_BRANCHES = (
    "ALTER TABLE messages ADD COLUMN parent_id INTEGER REFERENCES messages(id)",
    "ALTER TABLE messages ADD COLUMN shown_at REAL",
    "ALTER TABLE conversations ADD COLUMN head_id INTEGER",
    # position was unique per conversation (a line); siblings now share their depth.
    "DROP INDEX messages_position",
    # Each message follows the one before it; positions become depths 0, 1, 2, ... (they
    # were already, unless a file was edited by hand).
    """CREATE TEMP TABLE branch_migration (
        id INTEGER PRIMARY KEY, parent_id INTEGER, depth INTEGER NOT NULL)""",
    """INSERT INTO branch_migration (id, parent_id, depth)
        SELECT id, lag(id) OVER line, row_number() OVER line - 1 FROM messages
        WINDOW line AS (PARTITION BY conversation_id ORDER BY position)""",
    """UPDATE messages SET
        parent_id = (SELECT parent_id FROM branch_migration b WHERE b.id = messages.id),
        position = (SELECT depth FROM branch_migration b WHERE b.id = messages.id)""",
    "DROP TABLE branch_migration",
    "CREATE INDEX messages_position ON messages(conversation_id, position)",
    # Children of a message (and the foreign key's own check when one is deleted).
    "CREATE INDEX messages_parent ON messages(parent_id)",
    # The count follows the head, not every insert and delete.
    "DROP TRIGGER messages_ai",
    "DROP TRIGGER messages_ad",
    """CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
    END""",
    """CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content)
            VALUES ('delete', old.id, old.content);
    END""",
    """CREATE TRIGGER conversations_head AFTER UPDATE OF head_id ON conversations BEGIN
        UPDATE conversations SET message_count =
            coalesce((SELECT position + 1 FROM messages WHERE id = new.head_id), 0)
            WHERE id = new.id;
    END""",
    # The head of a straight line is its last message.
    """UPDATE conversations SET head_id = (SELECT id FROM messages
        WHERE conversation_id = conversations.id ORDER BY position DESC LIMIT 1)""",
)


def migrate(conn: sqlite3.Connection) -> None:
    """Turn every conversation's line of messages into a tree with one path."""
    for statement in _SCHEMA_BRANCHES:
        conn.execute(statement)


# The ids of the path from message ? up to its first message (a message and its ancestors).
_ANCESTORS = """WITH RECURSIVE path(id) AS (
    SELECT ? UNION SELECT m.parent_id FROM messages m JOIN path ON m.id = path.id
        WHERE m.parent_id IS NOT NULL)"""
# The ids of message ? and everything below it.
_SUBTREE = """WITH RECURSIVE sub(id) AS (
    SELECT ? UNION SELECT m.id FROM messages m JOIN sub ON m.parent_id = sub.id)"""
# Most recently shown first; never shown (imported, from before branches): newest first.
_RECENT = "coalesce(m.shown_at, -1) DESC, m.id DESC"


def head(conn: sqlite3.Connection, conversation_id: str) -> int | None:
    """The last message of the conversation's shown path; None when it has no messages.

    A head that is missing (a file damaged by hand) falls back to the newest message,
    which is always a leaf."""
    row = conn.execute(
        "SELECT m.id FROM conversations c JOIN messages m"
        " ON m.id = c.head_id AND m.conversation_id = c.id WHERE c.id = ?",
        (conversation_id,),
    ).fetchone()
    if row is not None:
        return int(row[0])
    row = conn.execute(
        "SELECT max(id) FROM messages WHERE conversation_id = ?", (conversation_id,)
    ).fetchone()
    return None if row[0] is None else int(row[0])


def path_rows(conn: sqlite3.Connection, last: int | None) -> list[sqlite3.Row]:
    """The messages from a first message down to ``last``, in order."""
    if last is None:
        return []
    return conn.execute(
        f"{_ANCESTORS} SELECT m.* FROM path JOIN messages m ON m.id = path.id ORDER BY m.position",
        (last,),
    ).fetchall()


def set_head(
    conn: sqlite3.Connection,
    conversation_id: str,
    message_id: int | None,
    *,
    used: bool = True,
    updated: bool = False,
) -> None:
    """Show the path that ends at ``message_id``; with ``used`` the conversation counts as
    used now (``-c`` continues it), with ``updated`` as changed now."""
    now = time.time()
    conn.execute(
        "UPDATE conversations SET head_id = ?,"
        " used_at = CASE WHEN ? THEN ? ELSE used_at END,"
        " updated_at = CASE WHEN ? THEN ? ELSE updated_at END WHERE id = ?",
        (message_id, used, now, updated, now, conversation_id),
    )
    if message_id is not None:
        conn.execute("UPDATE messages SET shown_at = ? WHERE id = ?", (now, message_id))


def leaf_below(conn: sqlite3.Connection, message_id: int) -> int:
    """Where the shown path goes from ``message_id``: the most recently shown message at or
    below it (the newest if none was), then on down the newest children to a leaf."""
    row = conn.execute(
        f"{_SUBTREE} SELECT m.id FROM sub JOIN messages m ON m.id = sub.id"
        f" ORDER BY {_RECENT} LIMIT 1",
        (message_id,),
    ).fetchone()
    current = int(row[0]) if row is not None else message_id
    while True:  # only when the most recent one has children (an imported tree)
        child = conn.execute(
            "SELECT max(id) FROM messages WHERE parent_id = ?", (current,)
        ).fetchone()[0]
        if child is None:
            return current
        current = int(child)


def newest_leaf(conn: sqlite3.Connection, conversation_id: str) -> int | None:
    """The conversation's most recently shown leaf (after its shown path was deleted)."""
    row = conn.execute(
        f"SELECT m.id FROM messages m WHERE m.conversation_id = ? ORDER BY {_RECENT} LIMIT 1",
        (conversation_id,),
    ).fetchone()
    return None if row is None else leaf_below(conn, int(row[0]))


def subtree_ids(conn: sqlite3.Connection, message_id: int) -> list[int]:
    """``message_id`` and every message below it."""
    return [int(r[0]) for r in conn.execute(f"{_SUBTREE} SELECT id FROM sub", (message_id,))]


def delete_subtree(conn: sqlite3.Connection, message_id: int) -> int:
    """Delete ``message_id`` and everything below it (in one statement: the parent links'
    foreign key is checked at its end). Returns how many messages went."""
    conn.execute(
        f"{_SUBTREE} DELETE FROM messages WHERE messages.id IN (SELECT sub.id FROM sub)",
        (message_id,),
    )
    # (sqlite3's rowcount is -1 for a statement that starts with WITH.)
    return int(conn.execute("SELECT changes()").fetchone()[0])


def sibling_rows(conn: sqlite3.Connection, message_id: int) -> list[sqlite3.Row]:
    """``message_id`` and the other messages with its parent, oldest first."""
    return conn.execute(
        "SELECT s.* FROM messages m JOIN messages s ON s.conversation_id = m.conversation_id"
        " AND s.position = m.position AND s.parent_id IS m.parent_id WHERE m.id = ?"
        " ORDER BY s.id",
        (message_id,),
    ).fetchall()


def sibling_places(conn: sqlite3.Connection, last: int | None) -> dict[int, tuple[int, int]]:
    """For each message on the path ending at ``last`` that has siblings: its place among
    them (from 1, oldest first) and how many there are."""
    if last is None:
        return {}
    rows = conn.execute(
        f"{_ANCESTORS} SELECT m.id, s.id FROM path JOIN messages m ON m.id = path.id"
        " JOIN messages s ON s.conversation_id = m.conversation_id"
        " AND s.position = m.position AND s.parent_id IS m.parent_id ORDER BY m.id, s.id",
        (last,),
    ).fetchall()
    groups: dict[int, list[int]] = {}
    for mine, sibling in rows:
        groups.setdefault(int(mine), []).append(int(sibling))
    return {
        mine: (siblings.index(mine) + 1, len(siblings))
        for mine, siblings in groups.items()
        if len(siblings) > 1
    }


def off_path(conn: sqlite3.Connection, hits: dict[str, list[int]]) -> set[int]:
    """Of the message ids found in each conversation, those not on its shown path.

    Cheap: a conversation without branches (its shown path holds all its messages) is
    skipped after one count over its index; otherwise the path is walked up from its head
    only as far as the shallowest message found."""
    away: set[int] = set()
    for conversation_id, ids in hits.items():
        branched = conn.execute(
            "SELECT message_count < (SELECT count(*) FROM messages WHERE conversation_id = ?)"
            " FROM conversations WHERE id = ?",
            (conversation_id, conversation_id),
        ).fetchone()
        if branched is None or not branched[0]:
            continue
        marks = ",".join("?" * len(ids))
        shallowest = conn.execute(
            f"SELECT min(position) FROM messages WHERE id IN ({marks})", ids
        ).fetchone()[0]
        on_path = {
            int(r[0])
            for r in conn.execute(
                "WITH RECURSIVE path(id, position) AS ("
                " SELECT id, position FROM messages WHERE id = ?"
                " UNION SELECT m.parent_id, m.position - 1 FROM messages m"
                " JOIN path ON m.id = path.id WHERE m.parent_id IS NOT NULL AND m.position > ?)"
                " SELECT id FROM path",
                (head(conn, conversation_id), shallowest),
            )
        }
        away.update(i for i in ids if i not in on_path)
    return away
