"""Writing a path that a user chose or that lies in a shared directory, safely.

Every file mixchat writes at such a path (``export -o``, ``config.toml``) goes through
:func:`write_file`:

- A regular file, or a new one, is replaced atomically: the bytes go to a temporary file
  that ``mkstemp`` creates in the same directory (a random name, ``O_EXCL``, so nothing
  planted there is followed or clobbered), are flushed to disk, get the old file's mode
  and owner (a new file: 0600 when ``private``, else what the umask allows), and the
  temporary file is then renamed over the target. A reader never sees half a file, and
  a failure leaves the old file as it was.
- A symbolic link is followed to the file it names, as a shell's ``>`` does, except a
  dangling one (refused: it would create a file wherever the link points). A link, file
  or FIFO that another user owns in a sticky world-writable directory such as /tmp is
  refused (it was planted there for us to write into; the kernel's ``protected_*``
  rules, which may be off).
- A FIFO, a terminal, ``/dev/null``, ``/dev/zero``, ``/dev/full`` and whatever our own
  stdout or stderr is (``-o /dev/stdout``) are written in place: they are never replaced.
- A directory, a socket, a block device or any other device is refused.

Every failure is a :class:`WriteError` whose message is one line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

# Character devices that can be written without harm; anything else is refused.
_HARMLESS_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/tty")
_TERMINAL_PREFIXES = ("/dev/pts/", "/dev/tty")
_MAX_LINKS = 40  # as the kernel's ELOOP limit

_REASONS = {
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENAMETOOLONG: "the file name is too long",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device (is the disk full?)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "the file is too large for this system's file size limit",
    errno.ELOOP: "too many levels of symbolic links",
    errno.EISDIR: "it is a directory",
    errno.EPIPE: "the reader closed it",
    errno.ENXIO: "no such device or address (no terminal here?)",
    errno.EIO: "input/output error (is the device failing?)",
}


class WriteError(Exception):
    """A file cannot be written where asked; the message is one line."""


def reason(exc: OSError) -> str:
    """A short, lower-case explanation of an OS error."""
    if exc.errno in _REASONS:
        return _REASONS[exc.errno]
    return (exc.strerror or str(exc)).lower()


def _error(name: str, why: str) -> WriteError:
    return WriteError(f"cannot write {name}: {why}")


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o077)  # not thread-safe, hence only the fallback
    os.umask(mask)
    return mask


def _same_as_std_stream(st: os.stat_result) -> int | None:
    """The fd (1 or 2) that is the same open file as ``st``, if any."""
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            if os.path.samestat(st, os.fstat(fd)):
                return fd
    return None


def _in_hostile_directory(path: str, st: os.stat_result) -> bool:
    """A link, file or FIFO that another user owns in a sticky, world-writable directory
    (/tmp): the kernel's protected_symlinks/regular/fifos rules, checked here so they
    hold wherever they are off. Such a file was planted for us to write into."""
    try:
        parent = os.stat(os.path.dirname(path) or ".")
    except OSError:
        return False
    sticky_shared = parent.st_mode & stat.S_ISVTX and parent.st_mode & stat.S_IWOTH
    return bool(sticky_shared) and st.st_uid not in (os.geteuid(), parent.st_uid)


def _follow(name: str) -> tuple[str, os.stat_result | None]:
    """The path that ``name`` finally names, following symbolic links under the rules
    above, and its ``lstat`` (None when nothing is there yet)."""
    current = name
    followed = False
    for _ in range(_MAX_LINKS):
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if followed:
                raise _error(
                    name, "it is a symbolic link to a missing file; not creating one there"
                ) from None
            return current, None
        except OSError as exc:
            raise _error(name, reason(exc)) from None
        if not stat.S_ISLNK(st.st_mode):
            return current, st
        if _in_hostile_directory(current, st):
            raise _error(name, "it is a symbolic link owned by another user in a shared directory")
        try:
            target = os.readlink(current)
        except OSError as exc:
            raise _error(name, reason(exc)) from None
        current = os.path.join(os.path.dirname(current), target)
        followed = True
    raise _error(name, _REASONS[errno.ELOOP])


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISCHR(mode):
        return "a device"
    return "not a regular file"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_in_place(name: str, path: str, st: os.stat_result, data: bytes) -> None:
    """Write to a FIFO or a harmless device without replacing it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise _error(name, reason(exc)) from None
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise _error(name, "it changed while it was being opened")
        _write_all(fd, data)
    except OSError as exc:
        raise _error(name, reason(exc)) from None
    finally:
        os.close(fd)


def _direct_target(path: str, st: os.stat_result) -> bool:
    """Whether a non-regular file is one we write in place (else it is refused)."""
    if stat.S_ISFIFO(st.st_mode):
        return True
    if not stat.S_ISCHR(st.st_mode):
        return False
    real = os.path.realpath(path)
    return real in _HARMLESS_DEVICES or real.startswith(_TERMINAL_PREFIXES)


def _new_file_mode(private: bool) -> int:
    return 0o600 if private else 0o666 & ~current_umask()


def _replace(name: str, path: str, data: bytes, st: os.stat_result | None, private: bool) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``."""
    import tempfile  # not at module level: it costs start-up of commands that never write

    directory, base = os.path.split(path)
    directory = directory or "."
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base[:32]}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        if exc.errno == errno.ENOENT and not os.path.isdir(directory):
            raise _error(name, f"the directory {directory} does not exist") from None
        if exc.errno == errno.ENOENT:  # e.g. /proc: there, but no file can be made in it
            raise _error(name, f"no file can be created in {directory}") from None
        raise _error(name, reason(exc)) from None
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
            os.fchmod(fd, stat.S_IMODE(st.st_mode) if st is not None else _new_file_mode(private))
            if st is not None and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(OSError):  # only root (or a group member) may
                    os.fchown(fd, st.st_uid, st.st_gid)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _error(name, reason(exc)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (best effort)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_file(path: str | os.PathLike[str], data: bytes, *, private: bool = False) -> None:
    """Write ``data`` to ``path`` under the rules of this module; ``WriteError`` if not.

    ``private``: a file created here is 0600 (an existing one keeps its mode).
    """
    name = os.fspath(path)
    if not name:
        raise WriteError("cannot write to an empty file name")
    if "\0" in name:
        raise _error(repr(name), "a file name cannot contain a NUL character")
    if name.endswith(os.sep) or os.path.basename(name) in (".", ".."):
        raise _error(name, "that names a directory, not a file")
    # Our own stdout or stderr (/dev/stdout, /proc/self/fd/1, or the file they go to).
    with contextlib.suppress(OSError):
        fd = _same_as_std_stream(os.stat(name))
        if fd is not None:
            try:
                _write_all(fd, data)
            except OSError as exc:
                raise _error(name, reason(exc)) from None
            return
    real, st = _follow(name)
    if st is not None and _in_hostile_directory(real, st):
        raise _error(name, "it belongs to another user and lies in a shared directory")
    if st is None or stat.S_ISREG(st.st_mode):
        _replace(name, real, data, st, private)
        return
    if not _direct_target(real, st):
        raise _error(name, f"it is {_kind(st)}")
    _write_in_place(name, real, st, data)


def write_text(path: str | os.PathLike[str], text: str, *, private: bool = False) -> None:
    """:func:`write_file` of ``text`` as UTF-8 (lone surrogates kept as they are)."""
    write_file(path, text.encode("utf-8", errors="surrogatepass"), private=private)
