"""The database file and its directory, checked (and made private) before SQLite opens them.

Rules, as for every file mixchat writes (see ``safefile``):

- The data directory is created 0700 (missing parents too). An existing one must be a
  directory of ours; in the default location a wider mode is tightened to 0700. One
  that belongs to another user is refused (they could swap the database under us), and
  so, above all, is one that others may write to.
- The database is created 0600 with ``O_EXCL``, which never follows a link. An existing
  one must be a regular file of ours (in the default location a wider mode is tightened
  to 0600); a symbolic link is followed to an existing file only: a dangling link would
  make SQLite create the database wherever it points.
- ``create=False`` (read-only commands: list, show, search, export) creates nothing: a
  missing directory or database reads as an empty history.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


class DatabaseFileError(Exception):
    """The database or its directory is not one mixchat may use; one line."""


def _reason(exc: OSError) -> str:
    from mixchat.safefile import reason

    return reason(exc)


def _make_private_dir(directory: Path) -> None:
    """Create ``directory`` and missing parents as 0700 whatever the umask."""
    missing: list[Path] = []
    probe = directory
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = probe.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another process made it meanwhile; checked below like any other
        os.chmod(d, 0o700)  # mkdir's mode is masked by the umask


def _check_directory(directory: Path, tighten: bool) -> None:
    st = directory.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise DatabaseFileError(f"{directory} is not a directory")
    if st.st_uid != os.geteuid():
        shared = " and others may write to it" if st.st_mode & 0o022 else ""
        raise DatabaseFileError(
            f"{directory} belongs to another user (uid {st.st_uid}){shared}; mixchat keeps"
            " its data only in a directory of its own (set MIXCHAT_HOME to another place)"
        )
    if tighten and st.st_mode & 0o077:
        # Best effort: an immutable directory must fail later, when writing, with a
        # message saying so, not here with a misleading "cannot create".
        with contextlib.suppress(OSError):
            os.chmod(directory, 0o700)


def _check_file(db: Path, tighten: bool) -> None:
    st = os.lstat(db)
    if stat.S_ISLNK(st.st_mode):
        try:
            st = db.stat()
        except FileNotFoundError:
            raise DatabaseFileError(
                f"{db} is a symbolic link to {os.readlink(db)}, which does not exist;"
                " not creating a database there"
            ) from None
    if not stat.S_ISREG(st.st_mode):
        raise DatabaseFileError(f"{db} is not a regular file; left untouched")
    if st.st_uid != os.geteuid():
        raise DatabaseFileError(
            f"{db} belongs to another user (uid {st.st_uid}); mixchat opens only a"
            " database of its own; left untouched"
        )
    if tighten and st.st_mode & 0o077:
        with contextlib.suppress(OSError):  # best effort, as for the directory
            os.chmod(db, stat.S_IMODE(st.st_mode) & 0o700)


def prepare(db: Path, *, create: bool, tighten: bool) -> bool:
    """Check the database ``db`` and its directory, creating them if ``create``.

    ``tighten``: narrow wider modes (the default location only). Returns whether the
    database exists; ``DatabaseFileError`` if it must not be used.
    """
    directory = db.parent
    try:
        if create:
            _make_private_dir(directory)
        elif not directory.exists():
            return False
        _check_directory(directory, tighten)
        if create:
            with contextlib.suppress(FileExistsError):
                # Created here, so it is 0600 whatever the umask; SQLite gives the -wal
                # and -shm files the same mode. O_EXCL: a link in the way is not followed.
                os.close(os.open(db, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        elif not os.path.lexists(db):
            return False
        _check_file(db, tighten)
    except OSError as exc:
        verb = "create" if create else "open"
        raise DatabaseFileError(f"cannot {verb} {db}: {_reason(exc)}") from None
    return True
