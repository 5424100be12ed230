"""kill -9 of the interactive app while it streams a reply, then `mixchat -c`.

The app runs on a real pseudo-terminal (TERM=xterm-256color, 140x40), with the story
model, whose reply is known in advance. Synchronisation is by polling the database
read-only (never by reading the screen, except to find the partial reply after the
restart).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import mixchat_exe
from tests.reliability.cycle_model import expected_reply
from tests.reliability.helpers import Pty, cli, database, integrity, read_only

pytestmark = pytest.mark.e2e

CTRL_Q = b"\x11"
CSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _reply_so_far(db: Path) -> str | None:
    try:
        conn = read_only(db)
    except Exception:
        return None
    try:
        row = conn.execute("SELECT content FROM messages WHERE role = 'assistant'").fetchone()
    except Exception:  # the schema is still being created
        return None
    finally:
        conn.close()
    return None if row is None else str(row["content"])


def _wait_for_growing_reply(db: Path, app: Pty, timeout: float) -> str:
    """Poll until the reply row has been checkpointed twice (so it is growing)."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        assert app.proc.poll() is None, app.output[-3000:]
        text = _reply_so_far(db)
        if text and (not seen or len(text) > len(seen[-1])):
            seen.append(text)
            if len(seen) >= 2:
                return text
        time.sleep(0.05)
    raise AssertionError(f"the reply never grew; screen ends {app.output[-2000:]!r}")


def test_kill_9_while_the_app_streams_then_continue(
    story_model: Path, story_cycle: list[int], mixchat_home: Path
) -> None:
    db = database(mixchat_home)
    app = Pty([mixchat_exe(), "--model", str(story_model)])
    try:
        # The input takes keys once the app has painted; the model loads meanwhile.
        app.wait_for(lambda out: b"loading" in out or b"ready" in out, 60, "the first paint")
        app.write(b"tell me a story")
        app.write(b"\r")
        partial = _wait_for_growing_reply(db, app, timeout=90)
        app.kill()
        assert app.proc.returncode == -9
    finally:
        app.close()

    integrity(db)
    (conv_id,) = [c for (c,) in read_only(db).execute("SELECT id FROM conversations")]
    shown = cli("show", conv_id, "--json")
    assert shown.code == 0, shown.err
    messages = json.loads(shown.out)["messages"]
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "interrupted"),
    ]
    assert messages[0]["content"] == "tell me a story"
    saved = messages[1]["content"]
    assert len(saved) >= len(partial) > 0
    # The saved text is exactly the start of what the model says.
    assert expected_reply(story_cycle, 2000).startswith(saved)
    text = cli("show", conv_id)
    assert "--- assistant (interrupted) ---" in text.out

    # `mixchat -c` opens it: the partial reply is on the screen, marked stopped; the
    # conversation goes on, and Ctrl+Q while the next answer streams keeps that one too.
    words = saved.split()
    assert len(words) >= 3
    app = Pty([mixchat_exe(), "--model", str(story_model), "-c"])
    try:
        app.wait_for(
            lambda out: all(
                text in _plain(out)
                for text in [b"tell me a story", b"stopped", *(w.encode() for w in words[:-1])]
            ),  # the last word may be cut short
            60,
            "the partial reply after the restart",
        )
        app.wait_for(lambda out: b"ready" in out, 90, "the model")
        app.write(b"go on\r")
        deadline = time.monotonic() + 60
        while len(_messages(db)) < 4 or not _messages(db)[3][0]:
            assert time.monotonic() < deadline, app.output[-2000:]
            time.sleep(0.05)
        app.write(CTRL_Q)
        assert app.finish(timeout=60) == 0
    finally:
        app.close()
    integrity(db)
    after = _messages(db)
    assert after[:2] == [("tell me a story", "complete"), (saved, "interrupted")]
    assert after[2] == ("go on", "complete")
    assert after[3][1] == "interrupted"  # stopped by the quit, saved
    assert expected_reply(story_cycle, 4000).startswith(after[3][0])


def _plain(screen: bytes) -> bytes:
    """Terminal output without its CSI sequences (colours, cursor moves)."""
    return CSI.sub(b"", screen)


def _messages(db: Path) -> list[tuple[str, str]]:
    conn = read_only(db)
    try:
        found = conn.execute("SELECT content, status FROM messages ORDER BY position").fetchall()
    finally:
        conn.close()
    return [(str(r[0]), str(r[1])) for r in found]
