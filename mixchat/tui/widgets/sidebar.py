"""Saved conversations, newest first, filtered as you type."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option, OptionDoesNotExist
from textual.worker import get_current_worker

from mixchat.store import ConversationStore, ConversationSummary, StoreError
from mixchat.textsafe import neutralize
from mixchat.tui.actions import Where, bindings
from mixchat.tui.widgets.keys import run_binding_now

LIST_LIMIT = 500


def _label(summary: ConversationSummary) -> Text:
    title = " ".join(neutralize(summary.title or "(untitled)").split())
    return Text(title, no_wrap=True, overflow="ellipsis")


class SearchBox(Input):
    """The search field; its bound keys (Backspace...) apply in typing order."""

    async def _on_key(self, event: events.Key) -> None:
        if await run_binding_now(self, event):
            return
        await super()._on_key(event)


class ConversationList(OptionList):
    """The list itself; its keys (open, rename, delete) are ``Where.SIDEBAR``'s in
    ``mixchat.tui.actions``."""

    BINDINGS = bindings(Where.SIDEBAR)

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
        self._current_id: str | None = None

    def compose(self) -> ComposeResult:
        yield SearchBox(placeholder="Search conversations", id="search")
        yield ConversationList(id="conversations")

    def on_mount(self) -> None:
        self.reload()

    @property
    def options(self) -> ConversationList:
        return self.query_one(ConversationList)

    @property
    def current_id(self) -> str | None:
        """The open conversation, highlighted in the list (None: a new one)."""
        return self._current_id

    @current_id.setter
    def current_id(self, conversation_id: str | None) -> None:
        self._current_id = conversation_id
        if self.is_mounted:
            self._highlight_current()

    def _highlight_current(self) -> None:
        options = self.options
        if self._current_id is None:
            options.highlighted = None
            return
        with contextlib.suppress(OptionDoesNotExist):  # filtered out, or not listed yet
            options.highlighted = options.get_option_index(self._current_id)

    def clear_search(self) -> bool:
        """Esc in the search box: empty it if it holds text. True if it did."""
        search = self.query_one("#search", Input)
        if not (search.has_focus and search.value):
            return False
        search.value = ""
        return True

    @dataclass
    class _Found(Message):
        """A search finished on the worker thread (``error`` if the store failed)."""

        typed: str
        rows: list[ConversationSummary]
        error: str | None = None

    def reload(self) -> None:
        """Refill the list for the current search text.

        With no search text the newest conversations are listed at once; a search runs on
        a worker thread (over a long history, a word prefix costs tens of milliseconds,
        too long to hold the keyboard for), and only the newest search's result is shown.
        """
        typed = self.query_one("#search", Input).value
        if not typed.strip():
            try:
                rows = self.store.list_conversations(limit=LIST_LIMIT)
            except StoreError as exc:
                self.notify(str(exc), title="The conversation store failed", severity="error")
                return
            self._show(rows)
            return
        self._search(typed)

    @work(thread=True, exclusive=True, group="sidebar-search")
    def _search(self, typed: str) -> None:
        try:
            rows = self._matching(typed)
        except StoreError as exc:
            self.post_message(self._Found(typed, [], str(exc)))
            return
        if not get_current_worker().is_cancelled:
            self.post_message(self._Found(typed, rows))

    @on(_Found)
    def _on_found(self, message: _Found) -> None:
        message.stop()
        if message.error is not None:
            self.notify(message.error, title="The conversation store failed", severity="error")
        elif message.typed == self.query_one("#search", Input).value:  # else: typed on since
            self._show(message.rows)

    def _matching(self, typed: str) -> list[ConversationSummary]:
        """Conversations whose title contains ``typed``, newest first, then those with a
        matching message, best first; old conversations as well as the listed newest."""
        query = typed.strip()
        # The last word is still being typed unless a space follows it.
        hits = self.store.search(query, limit=200, typing=typed == typed.rstrip())
        everything = self.store.list_conversations()  # ~10 ms for 10,000, off the UI thread
        folded = query.casefold()
        wanted = [r for r in everything if folded in r.title.casefold()][:LIST_LIMIT]
        seen = {r.id for r in wanted}
        by_id = {r.id: r for r in everything}
        for hit in hits:
            if hit.conversation_id not in seen and hit.conversation_id in by_id:
                wanted.append(by_id[hit.conversation_id])
                seen.add(hit.conversation_id)
        return wanted

    def _show(self, rows: list[ConversationSummary]) -> None:
        options = self.options
        previous = options.highlighted_option.id if options.highlighted_option else None
        options.clear_options()
        options.add_options([Option(_label(r), id=r.id) for r in rows])
        # The highlight marks the open conversation, unless the user is moving through
        # the list (or searching it): then it stays where they put it.
        browsing = options.has_focus or bool(self.query_one("#search", Input).value)
        for wanted_id in (previous, self._current_id) if browsing else (self._current_id,):
            if wanted_id is not None:
                with contextlib.suppress(OptionDoesNotExist):  # filtered out
                    options.highlighted = options.get_option_index(wanted_id)
                    return
        if browsing and rows:
            options.highlighted = 0

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
