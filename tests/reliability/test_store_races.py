"""Several processes on one store at once: appends, a streaming reply, deletes (whose
checkpoint waits for readers) and readers. Nothing is lost and no "database is locked"
reaches anyone. (Two plain appenders are in tests/unit/test_store.py; real `mixchat
ask` processes racing are in test_kill_ask.py.)"""

from __future__ import annotations

import contextlib
import multiprocessing
import sqlite3
from pathlib import Path

from mixchat.conversation import Message, Role, Status
from mixchat.store import ConversationStore, NotFoundError

APPENDS = 500
CHECKPOINTS = 300
DELETES = 25


def _worker(kind: str, path: str, shared: str, tag: str, barrier: object, done: object) -> None:
    """One process of the race (spawned); any exception makes its exit code non-zero."""
    barrier.wait()  # type: ignore[attr-defined]
    with ConversationStore.open(Path(path)) as store:
        if kind == "append":
            for i in range(APPENDS):
                role = Role.USER if i % 2 else Role.ASSISTANT
                store.append_message(shared, Message(role, f"{tag} {i} zebra"))
        elif kind == "stream":
            conv = store.create_conversation(
                model="m", system_prompt=None, settings={}, title=f"stream {tag}"
            )
            reply = store.start_reply(conv.id)
            text = ""
            for i in range(CHECKPOINTS):
                text += f"token{i} "
                store.checkpoint_reply(reply.id or 0, text)
            store.finish_reply(reply.id or 0, text, Status.COMPLETE)
        elif kind == "delete":
            for i in range(DELETES):
                conv = store.create_conversation(
                    model="m",
                    system_prompt=None,
                    settings={},
                    first_message=Message(Role.USER, f"doomed {i} zebra " * 50),
                )
                store.delete(conv.id)
        else:  # read until the writers are done
            while not done.is_set():  # type: ignore[attr-defined]
                for summary in store.list_conversations(limit=20):
                    with contextlib.suppress(NotFoundError):  # deleted since it was listed
                        store.get_conversation(summary.id)
                store.search("zebra")


def test_appends_stream_deletes_and_reads_at_once(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with ConversationStore.open(path) as store:
        shared = store.create_conversation(model="m", system_prompt=None, settings={}).id
    ctx = multiprocessing.get_context("spawn")
    writers = [("append", "a"), ("append", "b"), ("stream", "s"), ("delete", "d")]
    readers = [("read", "r1"), ("read", "r2")]
    barrier = ctx.Barrier(len(writers) + len(readers))
    done = ctx.Event()
    procs = {
        tag: ctx.Process(target=_worker, args=(kind, str(path), shared, tag, barrier, done))
        for kind, tag in writers + readers
    }
    for proc in procs.values():
        proc.start()
    for _, tag in writers:
        procs[tag].join(timeout=120)
    done.set()
    for _, tag in readers:
        procs[tag].join(timeout=60)
    assert {tag: p.exitcode for tag, p in procs.items()} == dict.fromkeys(procs, 0)

    with ConversationStore.open(path) as store:
        conv = store.get_conversation(shared)
        assert sorted(m.content for m in conv.messages) == sorted(
            f"{tag} {i} zebra" for tag in "ab" for i in range(APPENDS)
        )
        (streamed,) = [c for c in store.list_conversations() if c.title == "stream s"]
        (reply,) = store.get_conversation(streamed.id).messages
        assert reply.status is Status.COMPLETE
        assert reply.content == "".join(f"token{i} " for i in range(CHECKPOINTS))
        assert len(store.list_conversations()) == 2  # every doomed one is gone
        assert store.search("doomed") == []
    conn = sqlite3.connect(path)
    positions = [r[0] for r in conn.execute("SELECT position FROM messages WHERE conversation_id"
                                            " = ? ORDER BY position", (shared,))]  # fmt: skip
    assert positions == list(range(2 * APPENDS))
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
    conn.close()
