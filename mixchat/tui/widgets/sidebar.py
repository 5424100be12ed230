"""Saved conversations, newest first, filtered as you type."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option, OptionDoesNotExist

from mixchat.store import ConversationStore, ConversationSummary, StoreError
from mixchat.textsafe import neutralize

LIST_LIMIT = 500


def _label(summary: ConversationSummary) -> Text:
    title = " ".join(neutralize(summary.title or "(untitled)").split())
    return Text(title, no_wrap=True, overflow="ellipsis")


class ConversationList(OptionList):
    """The list itself; Delete asks to delete, F2 renames."""

    BINDINGS = [
        Binding("delete,d", "delete_selected", "Delete", show=False),
        Binding("r", "rename_selected", "Rename", show=False),
    ]

    @dataclass
    class DeleteRequested(Message):
        conversation_id: str

    @dataclass
    class RenameRequested(Message):
        conversation_id: str

    def _selected_id(self) -> str | None:
        if self.highlighted is None:
            return None
        return self.get_option_at_index(self.highlighted).id

    def action_delete_selected(self) -> None:
        selected = self._selected_id()
        if selected:
            self.post_message(self.DeleteRequested(selected))

    def action_rename_selected(self) -> None:
        selected = self._selected_id()
        if selected:
            self.post_message(self.RenameRequested(selected))


class Sidebar(Vertical):
    """Search box over the conversation list."""

    @dataclass
    class Opened(Message):
        """The user chose a conversation."""

        conversation_id: str

    def __init__(self, store: ConversationStore, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.store = store
        self.current_id: str | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search conversations", id="search")
        yield ConversationList(id="conversations")

    def on_mount(self) -> None:
        self.reload()

    @property
    def options(self) -> ConversationList:
        return self.query_one(ConversationList)

    def reload(self) -> None:
        """Refill the list for the current search text."""
        typed = self.query_one("#search", Input).value
        query = typed.strip()
        try:
            # The last word is still being typed unless a space follows it.
            rows, hit_ids = self._rows(query, typing=typed == typed.rstrip())
        except StoreError as exc:
            self.notify(str(exc), title="The conversation store failed", severity="error")
            return
        if query:
            folded = query.casefold()
            by_id = {r.id: r for r in rows}
            wanted = [r for r in rows if folded in r.title.casefold()]
            seen = {r.id for r in wanted}
            for cid in hit_ids:
                if cid not in seen and cid in by_id:
                    wanted.append(by_id[cid])
                    seen.add(cid)
            rows = wanted
        options = self.options
        previous = options.highlighted_option.id if options.highlighted_option else None
        options.clear_options()
        options.add_options([Option(_label(r), id=r.id) for r in rows])
        for wanted_id in (previous, self.current_id):
            if wanted_id is not None:
                with contextlib.suppress(OptionDoesNotExist):  # filtered out
                    options.highlighted = options.get_option_index(wanted_id)
                    return
        if rows:
            options.highlighted = 0

    def _rows(self, query: str, typing: bool) -> tuple[list[ConversationSummary], list[str]]:
        rows = self.store.list_conversations(limit=LIST_LIMIT)
        hits = self.store.search(query, limit=200, typing=typing) if query else []
        return rows, [h.conversation_id for h in hits]

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.reload()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(self.Opened(event.option.id))
