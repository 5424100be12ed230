"""A read-only or full data directory: one line, exit code 2, nothing half-written.

Root ignores file modes, so "read-only" is made with ``chattr +i`` as root (as in
tests/unit/test_store.py). A full disk is a small tmpfs where root may mount one, and
otherwise RLIMIT_FSIZE in the child (with SIGXFSZ ignored, so writes fail with EFBIG).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mixchat.conversation import Message, Role
from mixchat.store import ConversationStore
from tests.e2e.helpers import mixchat_exe
from tests.reliability.helpers import (
    assert_one_line_error,
    cli,
    database,
    files_bytes,
    integrity,
    read_only,
)

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def frozen(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable: immutable as root, mode a-w otherwise."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("root, and this file system has no immutable flag (chattr +i)")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
        try:
            yield
        finally:
            path.chmod(mode)


def _seed(home: Path) -> str:
    with ConversationStore.open(database(home)) as store:
        conv = store.create_conversation(
            model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "kept")
        )
    return conv.id


def _write_commands(tiny: Path, conv_id: str, import_file: Path) -> dict[str, list[str]]:
    return {
        "ask": ["ask", "--model", str(tiny), "a new question"],
        "ask -c": ["ask", "--model", str(tiny), "-c", "a follow-up"],
        "import": ["import", str(import_file)],
        "rename": ["rename", conv_id, "new title"],
        "rm": ["rm", conv_id],
    }


def test_read_only_data_directory(tmp_path: Path, tiny_model: Path, mixchat_home: Path) -> None:
    conv_id = _seed(mixchat_home)
    data = mixchat_home / "data"
    before = files_bytes(data)
    import_file = tmp_path / "in.json"
    import_file.write_text(json.dumps([{"role": "user", "content": "imported"}]))
    commands = {
        **_write_commands(tiny_model, conv_id, import_file),
        "list": ["list"],
        "search": ["search", "kept"],
    }
    with frozen(data):
        for name, args in commands.items():
            result = cli(*args, timeout=120)
            line = assert_one_line_error(result, 2, str(database(mixchat_home)))
            assert "read-only" in line or "cannot open" in line, (name, line)
            assert files_bytes(data) == before, name
    assert cli("list").code == 0


def test_read_only_database_file(tmp_path: Path, tiny_model: Path, mixchat_home: Path) -> None:
    conv_id = _seed(mixchat_home)
    db = database(mixchat_home)
    before = db.read_bytes()
    import_file = tmp_path / "in.json"
    import_file.write_text(json.dumps([{"role": "user", "content": "imported"}]))
    with frozen(db):
        for name, args in _write_commands(tiny_model, conv_id, import_file).items():
            result = cli(*args, timeout=120)
            assert_one_line_error(result, 2, str(db), "read-only")
            assert db.read_bytes() == before, name
        # Reading still works.
        listed = cli("list", "--json")
        assert listed.code == 0 and [r["id"] for r in json.loads(listed.out)] == [conv_id]
        assert cli("show", conv_id).code == 0


def test_data_directory_cannot_be_created(tmp_path: Path, tiny_model: Path) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    home = parent / "home"
    with frozen(parent):
        for args in (["ask", "--model", str(tiny_model), "hi"], ["import", "-"]):
            result = cli(
                *args, stdin=b'[{"role": "user", "content": "x"}]', env={"MIXCHAT_HOME": str(home)}
            )
            assert_one_line_error(result, 2, "cannot create", str(database(home)))
        # A read-only command needs nothing created: an empty history.
        assert cli("list", env={"MIXCHAT_HOME": str(home)}).code == 0
        assert list(parent.iterdir()) == []


def _tmpfs(path: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` on ``path`` when allowed (root in most containers)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
    )
    return done.returncode == 0


def _fill(disk: Path, leave: int) -> Path:
    """Take all but ``leave`` bytes of the disk's free space."""
    stat = os.statvfs(disk)
    todo = stat.f_bavail * stat.f_frsize - leave
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        while todo > 0:
            try:
                todo -= out.write(b"\x00" * min(todo, 65536))
            except OSError:  # someone else took the last of it first
                break
    return filler


def _file_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _conversations(db: Path) -> list[tuple[str, int]]:
    conn = read_only(db)
    try:
        found = conn.execute("SELECT id, message_count FROM conversations ORDER BY id")
        return [(str(r[0]), int(r[1])) for r in found]
    finally:
        conn.close()


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_full_disk(how: str, tmp_path: Path, tiny_model: Path) -> None:
    disk = tmp_path / "disk"
    preexec: Callable[[], None] | None = None
    if how == "tmpfs":
        if not _tmpfs(disk, "1m"):
            pytest.skip("cannot mount a tmpfs here (needs root); the rlimit case still runs")
    else:
        disk.mkdir()
    try:
        home = disk / "home"
        env = {"MIXCHAT_HOME": str(home)}
        conv_id = _seed(home)
        db = database(home)
        # ~126 kB, more than is left, yet ~30k tokens: within the context, so it gets saved
        big = b"all work and no play " * 6_000
        import_file = tmp_path / "big.json"
        import_file.write_text(json.dumps([{"role": "user", "content": big.decode()}]))
        if how == "tmpfs":
            filler = _fill(disk, leave=64 * 1024)
        else:
            preexec = _file_limit(db.stat().st_size + 64 * 1024)
        before = _conversations(db)
        attempts = {
            "ask (stdin)": (["ask", "--model", str(tiny_model)], big),
            "ask -c (stdin)": (["ask", "--model", str(tiny_model), "-c"], big),
            "import": (["import", str(import_file)], b""),
        }
        for name, (args, stdin) in attempts.items():
            result = cli(*args, stdin=stdin, env=env, preexec_fn=preexec, timeout=120)
            line = assert_one_line_error(result, 2, str(db))
            assert "disk is full" in line or "disk I/O error" in line, (name, line)
            assert _conversations(db) == before, f"{name} left something half-written"
        integrity(db)
        if how == "tmpfs":
            filler.unlink()
        # With room again, everything works and nothing was lost.
        result = cli("import", str(import_file), env=env)
        assert result.code == 0, result.err
        assert (conv_id, 1) in _conversations(db)
        integrity(db)
    finally:
        if how == "tmpfs":
            subprocess.run(["umount", "-l", str(disk)], check=False)


def test_disk_fills_up_while_streaming(tmp_path: Path, story_model: Path) -> None:
    """The reply keeps its last checkpoint; the command says why it stopped, exit 2."""
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "2m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        home = disk / "home"
        db = database(home)
        proc = subprocess.Popen(
            [mixchat_exe(), "ask", "--model", str(story_model), "--max-tokens", "20000", "hi"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "MIXCHAT_HOME": str(home)},
        )
        deadline = time.monotonic() + 90
        saved = ""
        while not saved:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
            with contextlib.suppress(Exception):
                conn = read_only(db)
                row = conn.execute("SELECT content FROM messages WHERE role = 'assistant'")
                saved = (row.fetchone() or [""])[0]
                conn.close()
        _fill(disk, leave=0)
        out, err = proc.communicate(timeout=120)
        text = err.decode()
        assert proc.returncode == 2, text
        assert "Traceback" not in text
        assert "mixchat: error:" in text, text
        assert "disk is full" in text or "disk I/O error" in text, text
        conn = read_only(db)
        (content, status) = conn.execute(
            "SELECT content, status FROM messages WHERE role = 'assistant'"
        ).fetchone()
        conn.close()
        assert status == "interrupted" and content and out.decode().startswith(content)
        integrity(db)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
