"""A ``mixchat ask`` running in the background, and a second process holding a lock."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.e2e.helpers import mixchat_exe
from tests.reliability.helpers import read_only


class Asking:
    """``mixchat ask args...`` with stdout and stderr collected by threads as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [mixchat_exe(), "ask", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=os.environ.copy(),
        )
        self._cond = threading.Condition()
        self._out = bytearray()
        self._err = bytearray()
        self._open = 2
        for pipe, sink in ((self.proc.stdout, self._out), (self.proc.stderr, self._err)):
            threading.Thread(target=self._drain, args=(pipe, sink), daemon=True).start()

    def _drain(self, pipe: object, sink: bytearray) -> None:
        fd = pipe.fileno()  # type: ignore[attr-defined]
        while chunk := os.read(fd, 65536):
            with self._cond:
                sink += chunk
                self._cond.notify_all()
        with self._cond:
            self._open -= 1
            self._cond.notify_all()

    @property
    def out(self) -> bytes:
        with self._cond:
            return bytes(self._out)

    @property
    def err(self) -> str:
        with self._cond:
            return self._err.decode("utf-8", "replace")

    def wait_for_output(
        self, check: Callable[[bytes], bool], what: str, timeout: float = 120
    ) -> None:
        """Wait until ``check(stdout so far)``; fails if the command ends first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not check(bytes(self._out)):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}; stderr: {self._err[-2000:]!r}"
                assert self._open, f"ask ended before {what}; stderr: {self._err[-2000:]!r}"
                self._cond.wait(min(left, 0.5))

    def finish(self, timeout: float = 120) -> int:
        """Wait for the command and its output; its exit code."""
        code = self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + 30
        with self._cond:
            while self._open and time.monotonic() < deadline:
                self._cond.wait(0.5)
        return code

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


LOCKER = """
import sqlite3, sys
sys.stdin.readline()
conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
"""


class Locker:
    """A second process that holds ``BEGIN EXCLUSIVE`` on a database between ``lock()``
    and ``release()`` (started in advance, so taking the lock is quick)."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _say(self, expected: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == expected

    def lock(self) -> None:
        self._say("locked")

    def release(self) -> None:
        self._say("released")
        assert self.proc.wait(timeout=30) == 0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def reply_rows(db: Path) -> Sequence[sqlite3.Row]:
    """The assistant rows, oldest first (empty while the database is being created)."""
    try:
        conn = read_only(db)
        try:
            return conn.execute(
                "SELECT * FROM messages WHERE role = 'assistant' ORDER BY id"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return []


def wait_for_rows(
    db: Path, check: Callable[[Sequence[sqlite3.Row]], bool], ask: Asking, what: str
) -> Sequence[sqlite3.Row]:
    """Poll the database (read-only) until ``check(assistant rows)``."""
    deadline = time.monotonic() + 120
    while True:
        rows = reply_rows(db)
        if check(rows):
            return rows
        assert ask.proc.poll() is None, f"ask ended before {what}: {ask.err[-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
