"""Checkpoints go through a writer thread: streaming never waits on the database.

A second connection holding ``BEGIN EXCLUSIVE`` stands for another program locking the
file (SQLite locks per connection, so in one process it blocks the store all the same).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import pytest

import mixchat.recorder as session
import mixchat.store as store_module
from mixchat.conversation import Message, Role, Status
from mixchat.engine.base import Event, Finished, GenerationParams, TextDelta, Usage
from mixchat.recorder import ReplyNotSaved, ReplyRecorder
from mixchat.store import ConversationStore, StoreError
from mixchat.turn import stream_reply

PARAMS = GenerationParams(temperature=0.0, max_new_tokens=32)


@dataclass
class Engine:
    """Yields the given pieces, then Usage and Finished; ``before`` runs before piece i."""

    pieces: list[str]
    before: dict[int, object] = field(default_factory=dict)

    def stream(
        self,
        messages: Sequence[Message],
        system_prompt: str | None,
        params: GenerationParams,
        cancel: threading.Event,
    ) -> Iterable[Event]:
        for i, piece in enumerate(self.pieces):
            action = self.before.get(i)
            if callable(action):
                action()
            if cancel.is_set():
                yield Finished("cancelled")
                return
            yield TextDelta(piece)
        yield Usage(1, len(self.pieces), 0.01, 0.1, 10.0)
        yield Finished("stop")


@pytest.fixture(autouse=True)
def every_delta_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "CHECKPOINT_INTERVAL_S", 0)


@pytest.fixture
def store() -> Iterator[ConversationStore]:
    with ConversationStore.open() as s:
        yield s


def new_chat(store: ConversationStore) -> str:
    conv = store.create_conversation(
        model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "hi")
    )
    return conv.id


def reply_row(store: ConversationStore, message_id: int | None) -> sqlite3.Row | None:
    with sqlite3.connect(store.path) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()


class Lock:
    """Another connection holding the database's write lock."""

    def __init__(self, store: ConversationStore) -> None:
        self._conn = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)

    def take(self) -> None:
        self._conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self._conn.execute("COMMIT")
        self._conn.close()


def run(
    store: ConversationStore, recorder: ReplyRecorder, engine: Engine, seen: list[str]
) -> session.TurnOutcome:
    def on_event(event: Event) -> None:
        if isinstance(event, TextDelta):
            seen.append(event.text)

    history = [Message(Role.USER, "hi")]
    return stream_reply(engine, recorder, history, None, PARAMS, threading.Event(), on_event)


def test_a_locked_database_does_not_hold_the_stream_back(store: ConversationStore) -> None:
    conv_id = new_chat(store)
    recorder = ReplyRecorder(store, conv_id)
    lock = Lock(store)
    pieces = [f"piece {i} " for i in range(50)]
    seen: list[str] = []
    # The engine waits after its last piece until the test has looked: the whole reply has
    # then been shown (and recorded) while the lock is still held.
    looked = threading.Event()
    all_shown = threading.Event()

    def last_piece_shown() -> None:
        all_shown.set()
        looked.wait(60)

    engine = Engine([*pieces, ""], before={0: lock.take, len(pieces): last_piece_shown})
    result: list[session.TurnOutcome] = []
    worker = threading.Thread(target=lambda: result.append(run(store, recorder, engine, seen)))
    worker.start()
    assert all_shown.wait(60), "the stream stalled on the locked database"
    assert "".join(seen) == "".join(pieces)
    row = reply_row(store, recorder.outcome.message_id)
    assert row is not None and row["content"] == ""  # nothing could be written yet
    looked.set()
    lock.release()
    worker.join(60)
    assert not worker.is_alive()
    (outcome,) = result
    assert outcome.text == "".join(pieces) and outcome.status is Status.COMPLETE
    row = reply_row(store, recorder.outcome.message_id)
    assert row is not None
    assert (row["content"], row["status"]) == ("".join(pieces), "complete")
    assert outcome.not_saved is None and recorder.saved


@pytest.fixture
def writer_threads(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """The thread of every checkpoint writer started in the test."""
    threads: list[threading.Thread] = []

    class Recorded(session._CheckpointWriter):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            threads.append(self._thread)

    monkeypatch.setattr(session, "_CheckpointWriter", Recorded)
    return threads


def assert_writers_end(threads: list[threading.Thread]) -> None:
    """Every checkpoint writer's thread ends (bounded wait)."""
    assert threads
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads), "a writer went on after its final write"


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that gives up on a lock after ~3 s (0.2 s waits, six tries) instead of ~3 min."""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.2)


@pytest.mark.usefixtures("short_busy_timeout")
def test_a_lock_that_outlasts_the_reply_is_reported_exactly(
    writer_threads: list[threading.Thread],
) -> None:
    with ConversationStore.open() as store:
        conv_id = new_chat(store)
        recorder = ReplyRecorder(store, conv_id)
        lock = Lock(store)
        engine = Engine(["saved ", "early. ", "never ", "saved"])

        def flush_then_lock() -> None:
            recorder.flush()  # "saved " is on disk before the lock...
            lock.take()  # ...which is held before any later text reaches the writer

        engine.before[1] = flush_then_lock
        seen: list[str] = []
        with pytest.raises(ReplyNotSaved) as info:
            run(store, recorder, engine, seen)
        # Reported means done: the writer has stopped trying, so the report stays true
        # once the lock goes (it used to retry the final write until it got through).
        assert_writers_end(writer_threads)
        lock.release()
        assert "".join(seen) == "saved early. never saved"  # all of it was shown
        message = str(info.value)
        assert message.startswith("the answer was shown but not saved in full: ")
        assert "locked" in message
        assert message.endswith("the saved copy holds its first 6 of 24 characters")
        assert "\n" not in message
        assert info.value.outcome.text == "saved early. never saved"
        row = reply_row(store, recorder.outcome.message_id)
        assert row is not None and (row["content"], row["status"]) == ("saved ", "interrupted")


@pytest.mark.usefixtures("short_busy_timeout")
def test_nothing_saved_is_said_too() -> None:
    with ConversationStore.open() as store:
        conv_id = new_chat(store)
        recorder = ReplyRecorder(store, conv_id)
        lock = Lock(store)
        with pytest.raises(ReplyNotSaved, match=r"; none of it was saved$"):
            run(store, recorder, Engine(["a", "b"], before={0: lock.take}), [])
        lock.release()


def test_conversation_deleted_while_streaming(store: ConversationStore) -> None:
    """Ids of deleted rows are reused: the reply must not land in another conversation."""
    doomed = new_chat(store)
    recorder = ReplyRecorder(store, doomed)
    other = new_chat(store)  # its message id is the next one after the reply's

    def delete_and_reuse() -> None:
        recorder.flush()
        with ConversationStore.open() as elsewhere:
            elsewhere.delete(doomed)
            elsewhere.delete(other)
            again = new_chat(elsewhere)
            elsewhere.append_message(again, Message(Role.USER, "a stranger's words"))

    seen: list[str] = []
    engine = Engine(["one ", "two ", "three"], before={1: delete_and_reuse})
    with pytest.raises(ReplyNotSaved) as info:
        run(store, recorder, engine, seen)
    assert info.value.deleted
    assert str(info.value) == (
        "the conversation was deleted while the answer streamed; the answer was shown but not saved"
    )
    assert "".join(seen) == "one two three"
    with sqlite3.connect(store.path) as conn:
        contents = [r[0] for r in conn.execute("SELECT content FROM messages ORDER BY id")]
    assert "a stranger's words" in contents
    assert not any("one" in c or "two" in c for c in contents)


def test_a_store_that_fails_for_good_stops_the_reply(
    store: ConversationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    conv_id = new_chat(store)
    recorder = ReplyRecorder(store, conv_id)

    def full(*args: object, **kwargs: object) -> None:
        raise StoreError(f"cannot write {store.path}: the disk is full")

    monkeypatch.setattr(store, "checkpoint_reply", full)
    monkeypatch.setattr(store, "finish_reply", full)
    seen: list[str] = []
    engine = Engine([f"{i} " for i in range(20)], before={2: recorder.flush})
    with pytest.raises(StoreError, match="disk is full"):
        run(store, recorder, engine, seen)
    assert len(seen) < 20  # stopped at the failure, not at the end
    assert recorder.outcome.not_saved is not None and "disk is full" in recorder.outcome.not_saved


@pytest.mark.parametrize(
    "failure",
    [
        StoreError("cannot write: the disk is full"),
        StoreError("attempt to write a readonly database"),
        RuntimeError("the store was closed"),
    ],
    ids=["disk-full", "read-only", "closed"],
)
def test_a_failed_final_save_is_tried_once_and_the_writer_ends(
    store: ConversationStore,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
    writer_threads: list[threading.Thread],
) -> None:
    """A final write that fails is reported, not retried in a loop behind the report's back
    (the writer used to spin on it for as long as the process lived)."""
    conv_id = new_chat(store)
    recorder = ReplyRecorder(store, conv_id)
    tries: list[str] = []

    def fails(*args: object, **kwargs: object) -> None:
        tries.append(str(kwargs.get("content")))
        raise failure

    monkeypatch.setattr(store, "finish_reply", fails)
    with pytest.raises(StoreError):
        run(store, recorder, Engine(["a", "b"]), [])
    assert_writers_end(writer_threads)
    assert tries == ["ab"]
    assert not recorder.saved


def test_without_a_store_nothing_is_written(store: ConversationStore) -> None:
    recorder = ReplyRecorder(None, None)
    outcome = run(store, recorder, Engine(["x", "y"]), [])
    assert (outcome.text, outcome.status, outcome.not_saved) == ("xy", Status.COMPLETE, None)
    assert not recorder.saved


def test_finishing_twice_writes_the_second_status(store: ConversationStore) -> None:
    """The app marks a reply failed after the stream ended: the writer is gone by then."""
    conv_id = new_chat(store)
    recorder = ReplyRecorder(store, conv_id)
    run(store, recorder, Engine(["fine"]), [])
    recorder.finish(Status.ERROR)
    row = reply_row(store, recorder.outcome.message_id)
    assert row is not None and (row["content"], row["status"]) == ("fine", "error")
