"""Files put into the next message in the app: the attach dialog (a path, typed or pasted,
with completion), the list of attached files above the message box, and removing them.

Files are read by ``mixchat.attachments`` exactly as ``mixchat ask -f`` reads them, with
the same refusals (one notification each); on send the conversation controller composes
the message from the text and these files (``compose_message``) and keeps their records.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message as TextualMessage
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Input, Label, Static

from mixchat.attachments import AttachedFile, AttachmentError, format_file, human_size, read_file
from mixchat.conversation import Message, Role
from mixchat.engine.base import Engine, count_context_tokens
from mixchat.tui.actions import Where, bindings
from mixchat.tui.keymap import keymap_of

if TYPE_CHECKING:
    from mixchat.tui.screens.chat import ChatScreen

MAX_LISTED = 200  # directory entries looked at for one completion


def complete_path(typed: str) -> str | None:
    """The first entry of the directory ``typed`` names that starts with its last part,
    as ``typed`` plus the rest (a directory ends with ``/``); None when nothing matches."""
    if not typed:
        return None
    expanded = os.path.expanduser(typed)
    folder, _, stem = expanded.rpartition(os.sep)
    directory = Path(folder or ".") if folder or not expanded.startswith(os.sep) else Path("/")
    try:
        with os.scandir(directory) as entries:
            names = sorted(
                (e.name + (os.sep if e.is_dir() else ""))
                for _, e in zip(range(MAX_LISTED), entries, strict=False)
                if e.name.startswith(stem) and (stem.startswith(".") or not e.name.startswith("."))
            )
    except OSError:
        return None
    for name in names:
        if name != stem:
            return typed + name[len(stem) :]
    return None


class PathSuggester(Suggester):
    """Suggests the rest of a path from the file system (Right arrow or End takes it)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        """The completed path, if an entry matches."""
        return complete_path(value)


class AttachScreen(ModalScreen[str | None]):
    """Ask for the path of a file to attach; its keys are ``Where.ATTACH``'s."""

    BINDINGS = bindings(Where.ATTACH)

    def compose(self) -> ComposeResult:
        cancel = keymap_of(self).say("attach_cancel")
        with Vertical(classes="dialog wide", id="attach-dialog"):
            yield Label(
                Content(
                    f"File to attach (Enter attaches it, Right arrow completes the path, "
                    f"{cancel} cancels)"
                )
            )
            yield Input(placeholder="path/to/file", suggester=PathSuggester(), id="attach-path")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        self.dismiss(value or None)


class AttachmentCounted(TextualMessage):
    """A worker counted the tokens of an attached file (None: the engine cannot)."""

    def __init__(self, file: AttachedFile, tokens: int | None) -> None:
        super().__init__()
        self.file = file
        self.tokens = tokens


class AttachmentBar(Static):
    """The files attached to the next message, one per line, above the message box."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.files: list[AttachedFile] = []
        self.tokens: dict[int, int] = {}  # id(file) -> its token count, once counted

    def on_mount(self) -> None:
        self.display = False

    def add(self, file: AttachedFile, engine: Engine | None) -> None:
        """Attach ``file``, and count its tokens on a worker if the engine can."""
        self.files.append(file)
        self._refresh()
        if engine is not None:
            self._count(engine, file)

    def remove_last(self) -> AttachedFile | None:
        """Remove the last attached file (None: none is attached)."""
        if not self.files:
            return None
        file = self.files.pop()
        self.tokens.pop(id(file), None)
        self._refresh()
        return file

    def clear(self) -> None:
        """Remove every file (they were sent)."""
        self.files, self.tokens = [], {}
        self._refresh()

    @work(thread=True, group="count-attachment", exit_on_error=False)
    def _count(self, engine: Engine, file: AttachedFile) -> None:
        message = Message(Role.USER, format_file(file))
        self.post_message(AttachmentCounted(file, count_context_tokens(engine, [message], None)))

    @on(AttachmentCounted)
    def _on_counted(self, message: AttachmentCounted) -> None:
        message.stop()
        if message.tokens is not None and any(f is message.file for f in self.files):
            self.tokens[id(message.file)] = message.tokens
            self._refresh()

    def line(self, file: AttachedFile) -> str:
        """``notes.txt (1.2 KB, 310 tokens)``."""
        tokens = self.tokens.get(id(file))
        counted = f", {tokens:,} tokens" if tokens is not None else ""
        return f"{file.name} ({human_size(file.size)}{counted})"

    def _refresh(self) -> None:
        self.display = bool(self.files)
        lines = [f"Attached: {self.line(f)}" for f in self.files]
        self.update(Content("\n".join(lines)))  # names are data, never markup


class Attachments:
    """The chat screen's attach and remove commands."""

    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen

    @property
    def bar(self) -> AttachmentBar:
        return self.screen.query_one(AttachmentBar)

    @property
    def files(self) -> list[AttachedFile]:
        """The files attached to the next message."""
        return list(self.bar.files)

    def ask(self) -> None:
        """Ask for a path and attach the file."""
        self.screen.app.push_screen(AttachScreen(), self.attach)

    def attach(self, path: str | None) -> None:
        """Read the file at ``path`` (as ``ask -f`` does) and attach it; one notification
        when it cannot be attached."""
        if not path:
            return
        screen = self.screen
        limit = screen.control.effective_settings().max_file_bytes
        try:
            file = read_file(os.path.expanduser(path), limit)
        except AttachmentError as exc:
            screen.notify(str(exc), title="Not attached", severity="error", markup=False)
            return
        self.bar.add(file, screen.engine)
        self._sync()
        screen.prompt.focus()

    def remove_last(self) -> None:
        """Remove the last attached file."""
        file = self.bar.remove_last()
        self._sync()
        if file is None:
            self.screen.notify("No file is attached.", severity="warning")
            return
        self.screen.notify(f"Removed {file.name}.", markup=False)

    def sent(self) -> None:
        """The message went out with the files: none is attached any more."""
        self.bar.clear()
        self._sync()

    def _sync(self) -> None:
        # With files attached, Enter sends even when no text is typed.
        self.screen.prompt.allow_empty = bool(self.bar.files)
