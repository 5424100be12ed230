"""mixchat.safefile: writing a path a user chose, or one in a shared directory.

Only paths these tests create are written, except /dev/null and /dev/full, which are only
ever opened for writing (never replaced); the tests check they are still character
devices afterwards. Foreign ownership is made with os.chown on our own files when root.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mixchat.safefile import WriteError, current_umask, write_file, write_text

ROOT = os.geteuid() == 0
OTHER_UID = 4242  # a user that owns nothing here


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def leftovers(directory: Path, *keep: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def refused(path: str | Path, *needles: str) -> str:
    with pytest.raises(WriteError) as err:
        write_file(path, b"data")
    message = str(err.value)
    assert "\n" not in message and message.startswith("cannot write")
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def test_new_file_is_written_whole_with_the_umask_or_private_mode(tmp_path: Path) -> None:
    plain, private = tmp_path / "plain.md", tmp_path / "private.md"
    write_text(plain, "héllo\n")
    write_file(private, b"secret", private=True)
    assert plain.read_text(encoding="utf-8") == "héllo\n"
    assert mode(plain) == 0o666 & ~current_umask()
    assert private.read_bytes() == b"secret" and mode(private) == 0o600
    assert leftovers(tmp_path) == ["plain.md", "private.md"]  # no temporary file left


def test_existing_file_keeps_its_mode_and_owner(tmp_path: Path) -> None:
    for wanted in (0o600, 0o640, 0o604):
        target = tmp_path / f"notes-{wanted:o}.md"
        target.write_text("old")
        target.chmod(wanted)
        write_file(target, b"new", private=False)
        assert target.read_bytes() == b"new" and mode(target) == wanted
    if ROOT:
        owned = tmp_path / "owned.md"
        owned.write_text("old")
        os.chown(owned, OTHER_UID, OTHER_UID)
        write_file(owned, b"new")
        assert (owned.stat().st_uid, owned.stat().st_gid) == (OTHER_UID, OTHER_UID)


def test_guessable_temporary_names_are_neither_followed_nor_clobbered(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = tmp_path / "notes.md"
    (tmp_path / "notes.md.tmp").symlink_to(victim)  # planted where the old code wrote
    (tmp_path / ".notes.md.tmp").write_text("someone's file")
    write_file(target, b"export")
    assert target.read_bytes() == b"export"
    assert victim.read_text() == "precious"
    assert (tmp_path / "notes.md.tmp").is_symlink()
    assert (tmp_path / ".notes.md.tmp").read_text() == "someone's file"
    assert leftovers(tmp_path) == [".notes.md.tmp", "notes.md", "notes.md.tmp", "victim"]


def test_a_link_is_followed_to_its_file_which_is_replaced_in_place(tmp_path: Path) -> None:
    real_dir = tmp_path / "dotfiles"
    real_dir.mkdir()
    real = real_dir / "config.toml"
    real.write_text("old")
    real.chmod(0o640)
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    write_file(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == b"new" and mode(real) == 0o640
    chained = tmp_path / "chained"
    chained.symlink_to(link.name)  # relative, through a second link
    write_file(chained, b"newer")
    assert real.read_bytes() == b"newer" and chained.is_symlink() and link.is_symlink()


def test_a_dangling_link_creates_nothing_where_it_points(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "out.md"
    link.symlink_to(elsewhere / "created-by-mixchat")
    refused(link, "symbolic link to a missing file")
    assert list(elsewhere.iterdir()) == [] and link.is_symlink()
    loop = tmp_path / "loop"
    loop.symlink_to(loop.name)
    refused(loop, "symbolic links")


@pytest.mark.skipif(not ROOT, reason="another user's link needs root to make (os.lchown)")
def test_another_users_link_in_a_sticky_shared_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = shared / "report.md"
    link.symlink_to(victim)
    os.lchown(link, OTHER_UID, OTHER_UID)
    refused(link, "another user", "shared directory")
    assert victim.read_text() == "precious"
    os.lchown(link, os.geteuid(), os.getegid())  # our own link there is followed
    write_file(link, b"mine")
    assert victim.read_bytes() == b"mine"
    # A file or FIFO planted there by another user, for us to write into, is refused too.
    planted = shared / "planted.md"
    planted.write_text("theirs")
    planted.chmod(0o666)
    fifo = shared / "planted-fifo"
    os.mkfifo(fifo)
    for path in (planted, fifo):
        os.chown(path, OTHER_UID, OTHER_UID)
        refused(path, "another user", "shared directory")
    assert planted.read_text() == "theirs"


def test_a_fifo_is_written_in_place(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_file(fifo, b"through the pipe")
    reader.join(timeout=30)
    assert got == [b"through the pipe"]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert leftovers(tmp_path) == ["pipe"]


def test_devices_are_written_in_place_or_refused_never_replaced(tmp_path: Path) -> None:
    before = {d: os.stat(d) for d in ("/dev/null", "/dev/full")}
    write_file("/dev/null", b"discarded")
    refused("/dev/full", "/dev/full", "no space left")
    link = tmp_path / "to-full"
    link.symlink_to("/dev/full")
    refused(link, "no space left")
    for device, was in before.items():
        now = os.stat(device)
        assert stat.S_ISCHR(now.st_mode) and now.st_rdev == was.st_rdev, device
    if os.path.exists("/dev/loop0"):
        refused("/dev/loop0", "block device")
    if os.path.exists("/dev/urandom"):
        refused("/dev/urandom", "a device")


def test_directories_and_sockets_and_bad_names_are_one_line(tmp_path: Path) -> None:
    refused(tmp_path, "a directory")
    refused(str(tmp_path) + "/", "directory")
    for name in (".", "..", "/", "sub/."):
        refused(name, "directory")
    with pytest.raises(WriteError, match="empty file name"):
        write_file("", b"x")
    refused("bad\0name", "NUL")
    refused(tmp_path / ("x" * 300), "too long")
    afile = tmp_path / "afile"
    afile.write_text("in the way")
    refused(afile / "out.md", "not a directory")
    refused(tmp_path / "missing" / "out.md", "does not exist")
    sock_path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        refused(sock_path, "a socket")
    assert afile.read_text() == "in the way"


@pytest.mark.skipif(not ROOT, reason="permission checks need a second user (root drops to one)")
def test_permission_denied_is_one_line(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    script = (
        "import os, sys; os.setgid(65534); os.setuid(65534)\n"
        "from mixchat.safefile import WriteError, write_file\n"
        "try:\n    write_file(sys.argv[1], b'x')\nexcept WriteError as e:\n    print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(locked / "out.md")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"cannot write {locked / 'out.md'}: permission denied"
    assert list(locked.iterdir()) == []


def test_our_own_stdout_is_written_not_replaced(tmp_path: Path) -> None:
    script = "import sys; from mixchat.safefile import write_file; write_file(sys.argv[1], b'out')"
    for name in ("/dev/stdout", "/proc/self/fd/1"):
        done = subprocess.run([sys.executable, "-c", script, name], capture_output=True)
        assert (done.returncode, done.stdout) == (0, b"out"), done.stderr
    into = tmp_path / "captured"
    with into.open("wb") as handle:
        done = subprocess.run([sys.executable, "-c", script, "/dev/stdout"], stdout=handle)
    assert done.returncode == 0 and into.read_bytes() == b"out"
