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

``sqlite_error_message`` says in one line what a SQLite error on the file means.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
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


def sqlite_error_message(exc: sqlite3.Error, path: Path) -> str:
    """One line saying what a sqlite3 error on the database ``path`` means, told by
    SQLite's extended error code where it has one (its text alone often says only
    "disk I/O error"), else by its text."""
    text = " ".join(str(exc).split())
    name = getattr(exc, "sqlite_errorname", "") or ""
    return _by_code(name, path, text) or _by_text(text.lower(), path, text)


def _by_code(name: str, path: Path, text: str) -> str | None:
    wal = path.with_name(path.name + "-wal")
    if name == "SQLITE_IOERR_SHORT_READ" and _empty_or_missing(wal):
        # The -shm index still lists frames of a log that is gone (SQLite then makes a
        # new, empty one): it was deleted while another process had it open.
        return (
            f"{wal} (the database's write-ahead log) was deleted while another mixchat had"
            " the database open; close the other mixchat processes, which still hold its"
            " contents, then try again"
        )
    if name == "SQLITE_IOERR_SHORT_READ":
        return f"{path} or its -wal file is shorter than SQLite expects (truncated?)"
    if name in ("SQLITE_IOERR_NOMEM", "SQLITE_NOMEM"):
        return f"out of memory while reading {path}"
    if name.startswith("SQLITE_IOERR_LOCK") or name in ("SQLITE_IOERR_SHMLOCK", "SQLITE_NOLFS"):
        return f"cannot lock {path}: its file system does not support SQLite's locks"
    if name == "SQLITE_NOTADB" or name.startswith("SQLITE_CORRUPT"):
        return f"{path} is not a valid mixchat database ({text}); left untouched"
    if name.startswith("SQLITE_READONLY"):
        return f"cannot write {path}: the file or its directory is read-only"
    if name == "SQLITE_FULL":
        return f"cannot write {path}: the disk is full"
    if name in ("SQLITE_IOERR_WRITE", "SQLITE_IOERR_FSYNC", "SQLITE_IOERR_TRUNCATE"):
        # SQLite does not say which: ENOSPC, EFBIG (a file size limit), EDQUOT and EIO all
        # arrive as this code.
        return (
            f"writing {path} failed ({name}): the disk is full, a file size limit or quota"
            " was reached, or the disk is failing"
        )
    if name == "SQLITE_IOERR_READ":
        return f"reading {path} failed: is the disk failing?"
    if name.startswith("SQLITE_IOERR"):
        return f"input/output error on {path} ({name})"
    if name.startswith("SQLITE_CANTOPEN"):
        return f"cannot open {path}: is its directory there and writable?"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return f"{path} stayed locked by another mixchat for too long"
    return None


def _by_text(low: str, path: Path, text: str) -> str:
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return f"{path} is not a valid mixchat database ({text}); left untouched"
    if "readonly" in low or "read-only" in low:
        return f"cannot write {path}: the file or its directory is read-only"
    if "full" in low:
        return f"cannot write {path}: the disk is full"
    if "disk i/o" in low:
        return f"input/output error on {path} ({text})"
    if "unable to open" in low:
        return f"cannot open {path}: is its directory there and writable?"
    if "locked" in low or "busy" in low:
        return f"{path} stayed locked by another mixchat for too long"
    return f"database error on {path}: {text}"


def _empty_or_missing(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return True
