"""The database is locked or changed under a streaming ``mixchat ask``.

Streaming never waits on the database: a foreign process holding ``BEGIN EXCLUSIVE``
while ``ask`` streams does not hold the answer back (the whole answer reaches stdout while
the lock is still held), and once the lock goes the full answer is saved. Deleting the
conversation (``mixchat rm``) while the answer streams gives the whole answer on stdout
and one line saying it was not saved.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mixchat.store import ConversationStore
from tests.reliability.asking import Asking, Locker, reply_rows, wait_for_rows
from tests.reliability.cycle_model import expected_reply
from tests.reliability.helpers import database, integrity, rows

pytestmark = pytest.mark.e2e

# Long enough that the answer streams for seconds here (checkpoints come every 0.5 s).
TOKENS = 400


def test_foreign_exclusive_lock_does_not_hold_back_the_answer(
    story_model: Path, story_cycle: list[int], mixchat_home: Path
) -> None:
    db = database(mixchat_home)
    expected = expected_reply(story_cycle, TOKENS).encode()
    ask = Asking("--model", str(story_model), "--max-tokens", str(TOKENS), "tell me")
    locker = Locker(db)
    try:
        # The reply's row is made just before the first token; lock the file from then on.
        wait_for_rows(db, lambda found: bool(found), ask, "the reply row")
        locker.lock()
        ask.wait_for_output(lambda out: out == expected, "the whole answer")
        # The whole answer is out while the lock is still held; ask waits to save it.
        assert ask.proc.poll() is None
        assert locker.proc.poll() is None
        locker.release()
        assert ask.finish() == 0, ask.err
    finally:
        locker.close()
        ask.close()
    assert "locked" not in ask.err and "Traceback" not in ask.err
    (reply,) = reply_rows(db)
    assert reply["status"] == "complete"
    assert reply["content"].encode() == ask.out == expected
    integrity(db)


def test_rm_while_the_answer_streams(
    story_model: Path, story_cycle: list[int], mixchat_home: Path
) -> None:
    db = database(mixchat_home)
    expected = expected_reply(story_cycle, TOKENS).encode()
    ask = Asking("--model", str(story_model), "--max-tokens", str(TOKENS), "tell me")
    try:
        found = wait_for_rows(db, lambda r: bool(r and r[0]["content"]), ask, "a checkpoint")
        (conv_id,) = {row["conversation_id"] for row in found}
        # What `mixchat rm` does, from another connection, without a process start that
        # a slow machine could stretch past the end of the answer.
        with ConversationStore.open(db) as other:
            other.delete(conv_id)
        assert ask.proc.poll() is None  # still streaming: the delete came first
        code = ask.finish()
    finally:
        ask.close()
    assert ask.out == expected  # the whole answer was shown
    assert ask.err.splitlines() == [
        "mixchat: error: the conversation was deleted while the answer streamed; "
        "the answer was shown but not saved"
    ]
    assert code == 1
    assert rows(db, "SELECT count(*) FROM messages")[0][0] == 0
    assert rows(db, "SELECT count(*) FROM conversations")[0][0] == 0
    integrity(db)
