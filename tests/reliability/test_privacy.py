"""What is left on disk: private modes, --no-save leaves nothing, rm removes every copy."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mixchat.conversation import Message, Role, Status
from mixchat.store import ConversationStore
from tests.e2e.helpers import mixchat_exe
from tests.reliability.helpers import Pty, cli, database, files_bytes, read_only

pytestmark = pytest.mark.e2e


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _permissive_umask() -> None:  # in the child: nothing masked, so modes are mixchat's own
    os.umask(0)


def test_private_modes_while_and_after_a_real_ask(story_model: Path, mixchat_home: Path) -> None:
    db = database(mixchat_home)
    proc = subprocess.Popen(
        [mixchat_exe(), "ask", "--model", str(story_model), "--max-tokens", "20000", "hi"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
        preexec_fn=_permissive_umask,
    )
    try:
        deadline = time.monotonic() + 90
        sides = [db.with_name(db.name + s) for s in ("-wal", "-shm")]
        # While it streams (so the -wal and -shm exist): every file is the owner's only.
        while not (all(p.exists() for p in sides) and _reply_started(db)):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        for path in (mixchat_home, db.parent):
            assert _mode(path) == 0o700, path
        for path in (db, *sides):
            assert _mode(path) == 0o600, path
    finally:
        proc.terminate()  # SIGTERM: stops, saves the partial reply, exits 143 (128 + 15)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()
    for path in db.parent.iterdir():
        assert _mode(path) == 0o600, path


def _reply_started(db: Path) -> bool:
    try:
        conn = read_only(db)
        try:
            row = conn.execute("SELECT content FROM messages WHERE role = 'assistant'").fetchone()
        finally:
            conn.close()
    except Exception:
        return False
    return bool(row and row[0])


def test_no_save_leaves_no_trace(tiny_model: Path, tmp_path: Path) -> None:
    secret = "nosave-quokka-7731"
    fresh_home, used_home = tmp_path / "fresh", tmp_path / "used"
    with ConversationStore.open(database(used_home)) as store:
        store.create_conversation(
            model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "kept")
        )
    before = files_bytes(used_home)
    # A first ask, and one continuing saved history (-c reads it, writes nothing).
    runs = {
        fresh_home: ["--no-save", secret],
        used_home: ["-c", "--no-save", secret],
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(
            lambda item: cli(
                "ask", "--model", str(tiny_model), "--max-tokens", "3", *item[1],
                env={"MIXCHAT_HOME": str(item[0])},
            ),
            runs.items(),
        )  # fmt: skip
        for result in results:
            assert result.code == 0, result.err
    assert not database(fresh_home).exists()
    assert files_bytes(used_home) == before
    for home in runs:
        for path, data in (files_bytes(home) if home.exists() else {}).items():
            assert secret.encode() not in data, path


def test_rm_removes_every_copy_even_with_the_app_open(mixchat_home: Path) -> None:
    secret = "rmsecret-quokka"
    with ConversationStore.open() as store:
        doomed = store.create_conversation(
            model="m", system_prompt=f"sys {secret}", settings={},
            first_message=Message(Role.USER, f"first {secret}"),
        )  # fmt: skip
        reply = store.start_reply(doomed.id)
        for n in range(1, 40):  # a streamed reply: many versions of the row in the WAL
            store.checkpoint_reply(reply.id or 0, f"the {secret} answer " * n)
        store.finish_reply(reply.id or 0, f"the {secret} answer, done", Status.COMPLETE)
        kept = store.create_conversation(
            model="m", system_prompt=None, settings={},
            first_message=Message(Role.USER, "kept words stay"),
        )  # fmt: skip
    app = Pty([mixchat_exe(), "--resume", kept.id, "--model", "/nonexistent"])
    try:
        app.wait_for(lambda out: b"kept words stay" in out, 60, "the app")
        removed = cli("rm", doomed.id[:8])
        assert removed.code == 0, removed.err
        # The words as the search index holds them too.
        for path, data in files_bytes(mixchat_home / "data").items():
            for needle in (b"rmsecret", b"quokka"):
                assert needle not in data, (path, needle)
        assert json.loads(cli("search", "quokka", "--json").out) == []
        assert cli("show", doomed.id).code == 2
        app.write(b"\x11")
        assert app.finish(timeout=60) == 0
    finally:
        app.close()
    assert json.loads(cli("search", "kept", "--json").out)[0]["conversation_id"] == kept.id
