"""Writing files we do not own: export's -o, the database and its directory, read-only
commands on an empty home.

Every path written here is one the test made (its own files, links, FIFOs, sockets and
directories). /dev/null and /dev/full are only opened for writing, never replaced: each
test that names them checks they are still the same character devices afterwards.
Foreign ownership is made with os.chown on our own files when running as root.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixchat.conversation import Message, Role
from mixchat.store import ConversationStore
from tests.reliability.helpers import Result, assert_one_line_error, cli, database

pytestmark = pytest.mark.e2e

ROOT = os.geteuid() == 0
OTHER_UID = 4242
DEVICES = ("/dev/null", "/dev/full")


def _seed(home: Path, text: str = "the kettle sings") -> str:
    with ConversationStore.open(database(home)) as store:
        conv = store.create_conversation(
            model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, text)
        )
    return conv.id


@contextlib.contextmanager
def devices_untouched() -> Iterator[None]:
    """The system's devices are the same character devices after the block."""
    before = {d: os.stat(d) for d in DEVICES}
    yield
    for device, was in before.items():
        now = os.stat(device)
        assert stat.S_ISCHR(now.st_mode), device
        assert (now.st_rdev, now.st_ino) == (was.st_rdev, was.st_ino), device


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# -- export -o ---------------------------------------------------------------------------


def test_export_replaces_a_file_atomically_keeping_its_mode(
    tmp_path: Path, mixchat_home: Path
) -> None:
    conv_id = _seed(mixchat_home)
    out = tmp_path / "notes.md"
    out.write_text("old notes")
    out.chmod(0o600)
    (tmp_path / "notes.md.tmp").write_text("someone's draft")  # the old code deleted it
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / ".notes.md.tmp").symlink_to(victim)
    result = cli("export", conv_id, "-o", str(out))
    assert result.code == 0, result.err
    assert "the kettle sings" in out.read_text() and _mode(out) == 0o600
    assert (tmp_path / "notes.md.tmp").read_text() == "someone's draft"
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".notes.md.tmp", "mixchat-home", "notes.md", "notes.md.tmp", "victim",
    ]  # fmt: skip
    new = tmp_path / "new.json"
    assert cli("export", conv_id, "-f", "json", "-o", str(new)).code == 0
    assert _mode(new) == 0o600  # conversation text is private, as in the database


def test_export_writes_through_links_fifos_and_stdout_without_replacing_them(
    tmp_path: Path, mixchat_home: Path
) -> None:
    conv_id = _seed(mixchat_home)
    real = tmp_path / "real.md"
    real.write_text("old")
    link = tmp_path / "link.md"
    link.symlink_to(real)
    assert cli("export", conv_id, "-o", str(link)).code == 0
    assert link.is_symlink() and "the kettle sings" in real.read_text()

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    result = cli("export", conv_id, "-o", str(fifo))
    reader.join(timeout=60)
    assert result.code == 0, result.err
    assert b"the kettle sings" in got[0] and stat.S_ISFIFO(fifo.lstat().st_mode)

    for name in ("/dev/stdout", "-"):
        result = cli("export", conv_id, "-o", name)
        assert result.code == 0 and "the kettle sings" in result.out, (name, result.err)
    with devices_untouched():
        assert cli("export", conv_id, "-o", "/dev/null").code == 0


def test_export_to_paths_it_cannot_write_is_one_line(tmp_path: Path, mixchat_home: Path) -> None:
    conv_id = _seed(mixchat_home)
    afile = tmp_path / "afile"
    afile.write_text("in the way")
    dangling = tmp_path / "dangling.md"
    dangling.symlink_to(tmp_path / "nowhere" / "made.md")
    dangling_here = tmp_path / "dangling-here.md"
    dangling_here.symlink_to(tmp_path / "made-here.md")
    sock_path = tmp_path / "sock"
    cases = {
        "": "empty file name",
        ".": "directory",
        "/": "directory",
        str(tmp_path): "directory",
        str(tmp_path) + "/": "directory",
        str(tmp_path / ("x" * 300)): "too long",
        str(afile / "out.md"): "not a directory",
        str(tmp_path / "missing" / "out.md"): "does not exist",
        str(dangling): "missing file",
        str(dangling_here): "missing file",
        str(sock_path): "socket",
        "/dev/full": "no space left",
    }
    with socket.socket(socket.AF_UNIX) as sock, devices_untouched():
        sock.bind(str(sock_path))
        before = sorted(tmp_path.iterdir())
        for target, needle in cases.items():
            result = cli("export", conv_id, "-o", target)
            assert_one_line_error(result, 2, needle)
        assert sorted(tmp_path.iterdir()) == before
    assert afile.read_text() == "in the way"


def test_a_full_disk_behind_stdout_is_one_line(mixchat_home: Path) -> None:
    conv_id = _seed(mixchat_home, "x" * 20000)
    with devices_untouched():
        for args in (["export", conv_id], ["show", conv_id], ["list"]):
            # Opening /dev/full for writing is harmless: it only ever says "disk full".
            with open("/dev/full", "wb") as full:
                result = cli(*args, stdout=full)
            assert_one_line_error(result, 2, "cannot write the output", "no space left")


# Imports first: root's Python installation may be unreadable to nobody.
AS_NOBODY = (
    "import os, sys, tempfile, typer.testing\n"
    "from mixchat.cli import main\n"
    "import mixchat.commands.history, mixchat.safefile, mixchat.dbfile\n"
    "os.setgid(65534); os.setuid(65534)\n"
    "sys.argv[0] = 'mixchat'; main()"
)


@pytest.mark.skipif(not ROOT, reason="needs a second user (root drops to nobody)")
def test_export_where_permission_is_denied_is_one_line() -> None:
    # The whole home belongs to nobody, who then exports into a directory of root's. (Not
    # under tmp_path: pytest's own directories are closed to other users.)
    with tempfile.TemporaryDirectory(prefix="mixchat-files-") as top:
        base = Path(top)
        base.chmod(0o755)
        home = base / "home"
        conv_id = _seed(home)
        for path in (home, *home.rglob("*")):
            os.chown(path, 65534, 65534)
        locked = base / "locked"
        locked.mkdir(mode=0o755)
        target = str(locked / "out.md")
        done = subprocess.run(
            [sys.executable, "-c", AS_NOBODY, "export", conv_id, "-o", target],
            capture_output=True,
            env={**os.environ, "MIXCHAT_HOME": str(home)},
            timeout=120,
        )
        result = Result(done.returncode, done.stdout.decode(), done.stderr.decode())
        assert_one_line_error(result, 2, target, "permission denied")
        assert list(locked.iterdir()) == []


# -- the database and its directory --------------------------------------------------------


def test_a_dangling_link_at_the_database_creates_nothing_elsewhere(
    tmp_path: Path, mixchat_home: Path
) -> None:
    data = mixchat_home / "data"
    data.mkdir(parents=True, mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    database(mixchat_home).symlink_to(elsewhere / "planted.db")
    source = tmp_path / "in.json"
    source.write_text('[{"role": "user", "content": "x"}]')
    for args in (["list"], ["search", "x"], ["import", str(source)], ["rename", "ab", "t"]):
        assert_one_line_error(cli(*args), 2, "symbolic link", "does not exist")
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in data.iterdir()) == ["conversations.db"]


def test_a_link_to_an_existing_database_is_followed(tmp_path: Path, mixchat_home: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    conv_id = _seed(tmp_path / "other-home")
    (tmp_path / "other-home" / "data" / "conversations.db").rename(elsewhere / "real.db")
    (mixchat_home / "data").mkdir(parents=True, mode=0o700)
    database(mixchat_home).symlink_to(elsewhere / "real.db")
    result = cli("list")
    assert result.code == 0 and conv_id[:8] in result.out, result.err


def test_wider_modes_of_our_own_files_are_tightened(mixchat_home: Path) -> None:
    _seed(mixchat_home)
    data, db = mixchat_home / "data", database(mixchat_home)
    data.chmod(0o777)
    db.chmod(0o644)
    assert cli("list").code == 0
    assert (_mode(data), _mode(db)) == (0o700, 0o600)


@pytest.mark.skipif(not ROOT, reason="another user's files need root to make (os.chown)")
def test_data_that_belongs_to_another_user_is_refused(mixchat_home: Path) -> None:
    _seed(mixchat_home)
    data, db = mixchat_home / "data", database(mixchat_home)
    before = db.read_bytes()
    os.chown(db, OTHER_UID, OTHER_UID)
    for args in (["list"], ["search", "kettle"], ["rename", "ab", "t"]):
        assert_one_line_error(cli(*args), 2, str(db), "another user")
    assert db.read_bytes() == before and _mode(db) == 0o600
    os.chown(db, 0, 0)
    os.chown(data, OTHER_UID, OTHER_UID)
    data.chmod(0o777)
    for args in (["list"], ["rename", "ab", "t"]):
        assert_one_line_error(cli(*args), 2, str(data), "another user", "others may write")
    assert _mode(data) == 0o777  # not ours to change
    assert db.read_bytes() == before


# -- read-only commands create nothing ------------------------------------------------------


def test_read_only_commands_on_an_empty_home_create_nothing(mixchat_home: Path) -> None:
    conv = "0123456789abcdef0123456789abcdef"
    for args in (
        ["list"],
        ["list", "--json"],
        ["search", "anything"],
        ["show", conv],
        ["export", conv],
        ["config"],
        ["doctor", "--json"],
    ):
        result = cli(*args)
        assert "Traceback" not in result.err, result.err
        assert not mixchat_home.exists(), args
    assert cli("list", "--json").out.strip() == "[]"
    assert_one_line_error(cli("show", conv), 2, "no conversation")
    # A write command still makes the folder and the database.
    source = mixchat_home.parent / "in.json"
    source.write_text('[{"role": "user", "content": "x"}]')
    assert cli("import", str(source)).code == 0
    assert database(mixchat_home).exists()


def test_asking_without_saving_creates_nothing(mixchat_home: Path, tiny_model: Path) -> None:
    for args in (["--show-prompt", "hi"], ["--no-save", "--max-tokens", "2", "hi"]):
        result = cli("ask", "--model", str(tiny_model), *args)
        assert result.code == 0, result.err
        assert not mixchat_home.exists(), args
    # Continuing needs history: on an empty home that is one line, still creating nothing.
    result = cli("ask", "--model", str(tiny_model), "--no-save", "-c", "hi")
    assert_one_line_error(result, 2, "no saved conversation")
    assert not mixchat_home.exists()
