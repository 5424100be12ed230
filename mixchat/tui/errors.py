"""Store failures inside the app become a notification, never a crash.

The database can fail under a running app: the conversation deleted from another
terminal, a read-only or full disk. The user's typed text stays in the input
(it is cleared only after a successful save)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from mixchat.store import StoreError

F = TypeVar("F", bound=Callable[..., Any])


def _report(widget: Any, exc: StoreError) -> None:
    widget.notify(str(exc), title="The conversation store failed", severity="error", timeout=20)


def notify_store_errors(method: F) -> F:
    """Decorate a widget method (sync or async): a ``StoreError`` is shown, not raised."""
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def async_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await method(self, *args, **kwargs)
            except StoreError as exc:
                _report(self, exc)
                return None

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except StoreError as exc:
            _report(self, exc)
            return None

    return wrapper  # type: ignore[return-value]
