"""Run the installed ``mixchat`` (in a pipe or under a pseudo-terminal) and inspect its files."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import signal
import sqlite3
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.e2e.helpers import mixchat_exe

Arg = str | bytes | os.PathLike[str]


@dataclass
class Result:
    """A finished command: exit code and its output decoded (undecodable bytes escaped)."""

    code: int
    out: str
    err: str
    raw_out: bytes = b""


def cli(
    *args: Arg,
    stdin: bytes | str = b"",
    env: dict[str, str] | None = None,
    timeout: float = 120,
    preexec_fn: Callable[[], None] | None = None,
    stdout: IO[bytes] | None = None,
) -> Result:
    """Run ``mixchat args...`` with stdout and stderr as pipes; bytes args pass as is.
    ``stdout``: an open file to give the command as its stdout instead of a pipe."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    done = subprocess.run(
        [mixchat_exe(), *args],
        input=data,
        stdout=subprocess.PIPE if stdout is None else stdout,
        stderr=subprocess.PIPE,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        preexec_fn=preexec_fn,
    )
    return Result(
        done.returncode,
        (done.stdout or b"").decode("utf-8", "surrogateescape"),
        done.stderr.decode("utf-8", "surrogateescape"),
        done.stdout or b"",
    )


def assert_one_line_error(result: Result, code: int, *needles: str) -> str:
    """The command failed with ``code`` and exactly one ``mixchat: error:`` line on stderr."""
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.code == code, (result.code, result.err[-2000:])
    assert "Traceback" not in result.err, result.err[-4000:]
    errors = [line for line in lines if line.startswith("mixchat: error:")]
    assert len(errors) == 1, lines
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def database(home: Path) -> Path:
    """The conversation database under a MIXCHAT_HOME."""
    return home / "data" / "conversations.db"


def read_only(db: Path) -> sqlite3.Connection:
    """A read-only connection that waits politely for writers."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def rows(db: Path, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
    """Run one query on a read-only connection."""
    conn = read_only(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def integrity(db: Path) -> None:
    """SQLite's integrity check and the FTS index's own check both pass."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
    finally:
        conn.close()


def files_bytes(root: Path) -> dict[Path, bytes]:
    """Every regular file under ``root`` and its bytes."""
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class Pty:
    """A command on a pseudo-terminal of a fixed size; a thread collects all it writes."""

    def __init__(
        self,
        argv: Sequence[Arg],
        env: dict[str, str] | None = None,
        size: tuple[int, int] = (40, 140),
    ) -> None:
        master, slave = pty.openpty()
        rows_, cols = size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows_, cols, 0, 0))
        full_env = {
            **os.environ,
            "TERM": "xterm-256color",
            "COLUMNS": str(cols),
            "LINES": str(rows_),
            **(env or {}),
        }
        full_env.pop("NO_COLOR", None)

        def become_terminal_owner() -> None:  # runs in the child after setsid
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=full_env,
            start_new_session=True,
            preexec_fn=become_terminal_owner,
        )
        os.close(slave)
        self._master = master
        self._data = bytearray()
        self._cond = threading.Condition()
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self._closed = True
                    self._cond.notify_all()
                    return
                self._data += chunk
                self._cond.notify_all()

    @property
    def output(self) -> bytes:
        """Everything written to the terminal so far."""
        with self._cond:
            return bytes(self._data)

    def wait_for(self, check: Callable[[bytes], bool], timeout: float, what: str) -> bytes:
        """Wait until ``check(output)`` holds; fail with the output's tail if it does not."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not check(bytes(self._data)):
                left = deadline - time.monotonic()
                if left <= 0 or (self._closed and not check(bytes(self._data))):
                    tail = bytes(self._data[-3000:])
                    raise AssertionError(f"timed out waiting for {what}; output ends {tail!r}")
                self._cond.wait(min(left, 0.5))
            return bytes(self._data)

    def write(self, data: bytes) -> None:
        """Type ``data`` (Enter is b"\\r")."""
        os.write(self._master, data)

    def finish(self, timeout: float) -> int:
        """Wait for the command to exit and the terminal to drain; its exit code."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        """SIGKILL the command (and anything it started in its session)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        """Kill if still running and release the terminal."""
        self.kill()
        self._reader.join(timeout=10)
        with contextlib.suppress(OSError):
            os.close(self._master)


def run_on_pty(
    *args: Arg, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, bytes]:
    """Run ``mixchat args...`` to completion on a terminal; (exit code, terminal output)."""
    term = Pty([mixchat_exe(), *args], env=env)
    try:
        code = term.finish(timeout)
        return code, term.output
    finally:
        term.close()
