"""Text files put into a message (``mixchat ask -f FILE``, the app's attach action).

Each file is read with checks, one line each when it cannot be attached: missing,
unreadable, a directory, anything but a regular file (a FIFO or a device is never opened,
so nothing blocks), over ``max_file_bytes``, or not text. Text means UTF-8 without NUL
bytes (a leading byte-order mark is dropped); anything else counts as binary and is
refused rather than guessed at.

In the message each file follows the user's text, headed by ``File: NAME`` and fenced with
more backticks than any run of backticks inside it, so no line of the file can end the
block early or pose as the user's own words. The name, size and SHA-256 of each file are
kept with the message (``conversation.Attachment``).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mixchat.conversation import Attachment, make_title
from mixchat.textsafe import scrub_surrogates

HEADER = "File: "
BOM = b"\xef\xbb\xbf"
# Info strings for the fence, by suffix: for readers and for syntax highlighting.
_LANGUAGES = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript",
    ".ts": "typescript", ".tsx": "tsx", ".jsx": "jsx", ".json": "json", ".toml": "toml",
    ".yaml": "yaml", ".yml": "yaml", ".md": "markdown", ".rst": "rst", ".sh": "sh",
    ".bash": "bash", ".zsh": "zsh", ".fish": "fish", ".rs": "rust", ".go": "go", ".c": "c",
    ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp", ".java": "java", ".kt": "kotlin",
    ".rb": "ruby", ".php": "php", ".swift": "swift", ".cs": "csharp", ".sql": "sql",
    ".html": "html", ".css": "css", ".xml": "xml", ".lua": "lua", ".r": "r", ".tex": "latex",
    ".csv": "csv", ".ini": "ini", ".cfg": "ini", ".diff": "diff", ".patch": "diff",
    ".txt": "text", ".log": "text",
}  # fmt: skip
_BACKTICKS = re.compile(r"`+")


class AttachmentError(ValueError):
    """A file cannot be put into a message; the message is one line naming it."""


@dataclass(frozen=True)
class AttachedFile:
    """A file read for a message: its name as given, its text, size and SHA-256."""

    name: str
    text: str
    size: int
    sha256: str

    def record(self) -> Attachment:
        """What the message keeps of it."""
        return Attachment(self.name, self.size, self.sha256)


def display_name(path: str | os.PathLike[str]) -> str:
    """The path as given, as printable text: undecodable bytes become U+FFFD and control
    characters (a newline in a file name) a visible ``?``, so a name cannot break the
    header line."""
    text = scrub_surrogates(os.fsdecode(path))
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _check_kind(name: str, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise AttachmentError(f"{name}: is a directory; attach the files in it one by one")
    if not stat.S_ISREG(mode):
        raise AttachmentError(f"{name}: {_kind(mode)}, not a regular file; only files are read")


def _too_big(name: str, size: int | None, limit: int) -> AttachmentError:
    what = f"{size:,} bytes" if size is not None else "larger than that"
    return AttachmentError(
        f"{name}: {what}, over the {limit:,}-byte limit for a file (setting max_file_bytes)"
    )


def _read_bytes(path: str | os.PathLike[str], name: str, limit: int) -> bytes:
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise AttachmentError(f"{name}: no such file") from None
    except OSError as exc:
        raise AttachmentError(f"{name}: cannot read it: {exc.strerror or exc}") from None
    # Checked before opening: opening a FIFO waits for a writer, and opening a device can
    # act on it (rewind a tape).
    _check_kind(name, before.st_mode)
    if before.st_size > limit:
        raise _too_big(name, before.st_size, limit)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise AttachmentError(f"{name}: cannot read it: {exc.strerror or exc}") from None
    try:
        _check_kind(name, os.fstat(fd).st_mode)  # replaced between stat and open
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise AttachmentError(f"{name}: cannot read it: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if total > limit:
        raise _too_big(name, None, limit)  # it grew while being read
    return b"".join(chunks)


def decode_text(data: bytes, name: str) -> str:
    """``data`` as text: UTF-8 without NUL bytes (a byte-order mark is dropped); else
    ``AttachmentError`` saying why it counts as binary."""
    nul = data.find(b"\x00")
    if nul >= 0:
        raise AttachmentError(
            f"{name}: a binary file (a NUL byte at offset {nul:,}); only UTF-8 text is read"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AttachmentError(
            f"{name}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start:,}); "
            "only UTF-8 text is read"
        ) from None
    return text[1:] if data.startswith(BOM) else text


def read_file(path: str | os.PathLike[str], max_bytes: int) -> AttachedFile:
    """Read one file to put into a message; ``AttachmentError`` (one line) if it cannot be."""
    name = display_name(path)
    data = _read_bytes(path, name, max_bytes)
    return AttachedFile(name, decode_text(data, name), len(data), hashlib.sha256(data).hexdigest())


def read_files(
    paths: Iterable[str | os.PathLike[str]], max_bytes: int
) -> tuple[list[AttachedFile], list[str]]:
    """Read every file; the ones read, and one line for each that cannot be."""
    files, errors = [], []
    for path in paths:
        try:
            files.append(read_file(path, max_bytes))
        except AttachmentError as exc:
            errors.append(str(exc))
    return files, errors


def fence_for(text: str) -> str:
    """A backtick fence longer than any run of backticks in ``text`` (at least three)."""
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    return "`" * max(3, longest + 1)


def format_file(file: AttachedFile) -> str:
    """``File: NAME``, then the text in a fenced block that nothing inside can close."""
    fence = fence_for(file.text)
    language = _LANGUAGES.get(Path(file.name).suffix.lower(), "")
    body = file.text if file.text.endswith("\n") or not file.text else file.text + "\n"
    return f"{HEADER}{file.name}\n{fence}{language}\n{body}{fence}"


def compose_message(text: str, files: Sequence[AttachedFile]) -> str:
    """The user's text, then each file (blank lines between)."""
    parts = [text] if text.strip() else []
    parts += [format_file(f) for f in files]
    return "\n\n".join(parts)


def title_for(text: str, files: Sequence[AttachedFile]) -> str | None:
    """A conversation title for a first message with files: from the user's text (not the
    files after it), or the files' base names when there is no text. None without files (the
    store titles it from the message, as usual)."""
    if not files:
        return None
    names = ", ".join(Path(f.name).name or f.name for f in files)
    return make_title(text if text.strip() else names)


def human_size(size: int) -> str:
    """``532 B``, ``1.2 KB``, ``3.4 MB`` (powers of 1000)."""
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1000:.1f} KB"
    return f"{size / 1_000_000:.1f} MB"


def describe(files: Sequence[AttachedFile]) -> str:
    """``notes.txt (1.2 KB), main.py (532 B)``."""
    return ", ".join(f"{f.name} ({human_size(f.size)})" for f in files)
