"""Stopping ``mixchat ask`` by a signal: SIGTERM and SIGHUP are handled like Ctrl-C.

While ``StopSignals`` is active, SIGTERM (``kill``, a service manager) and SIGHUP (the
terminal was closed) raise ``Stopped`` in the main thread, as SIGINT raises
``KeyboardInterrupt``, so the same code saves the partial reply and says what happened.
The exit code is the shell's for a process killed by that signal: 128 + the signal's
number (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP), so a caller can still tell
which signal stopped it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
from types import FrameType
from typing import Any

HANDLED = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """A SIGTERM or SIGHUP, raised in the main thread like a Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(stop: KeyboardInterrupt) -> int:
    """128 + the signal's number: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    signum = stop.signum if isinstance(stop, Stopped) else signal.SIGINT
    return 128 + int(signum)


def described(stop: KeyboardInterrupt) -> str:
    """``stopped`` or ``stopped by SIGTERM``."""
    return (
        f"stopped by {signal.Signals(stop.signum).name}" if isinstance(stop, Stopped) else "stopped"
    )


class StopSignals:
    """Turns SIGTERM and SIGHUP into ``Stopped`` while active (a context manager)."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for signum in HANDLED:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            _detach_from_terminal()
        raise Stopped(signum)


def _detach_from_terminal() -> None:
    """If the terminal is gone (closed, not just signalled), writing to it fails (EIO) and
    Python would fail again flushing at exit: point stdout and stderr at /dev/null where
    they were that terminal. A pipe, a file or a live terminal is left as it is."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    fd = stream.fileno()
                    if not stat.S_ISCHR(os.fstat(fd).st_mode):
                        continue
                    try:
                        os.write(fd, b"")  # a hung-up terminal refuses even this (EIO)
                    except OSError:
                        os.dup2(devnull, fd)
        finally:
            os.close(devnull)


def say(message: str) -> None:
    """A ``mixchat: ...`` line on stderr that never fails (the terminal may be gone)."""
    from mixchat.textsafe import for_terminal

    with contextlib.suppress(OSError, ValueError):
        print(f"mixchat: {for_terminal(message)}", file=sys.stderr, flush=True)
