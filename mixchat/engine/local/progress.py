"""Load progress: one callback type for every loader, and a reporter that keeps it readable.

Loaders report ``LoadProgress(stage, done, total, detail)`` events. ``done`` never goes
back, reaches ``total`` at the end, and is reported about once per percent so a 93 GB load
neither floods the UI nor stands still.
"""

from __future__ import annotations

from collections.abc import Callable

from mixchat.engine.base import LoadProgress

ProgressCallback = Callable[[LoadProgress], None]
GB = 10**9


def amount(done: int, total: int) -> str:
    """``3.1/7.4 GB`` (or MB below a gigabyte)."""
    unit, name = (GB, "GB") if total >= GB else (10**6, "MB")
    return f"{done / unit:.1f}/{total / unit:.1f} {name}"


class ProgressReporter:
    """Reports one stage's progress through ``report``: monotonic, at most ~100 events."""

    def __init__(self, report: ProgressCallback | None, stage: str, total: int) -> None:
        self._report = report
        self.stage = stage
        self.total = max(0, int(total))
        self.done = 0
        self._last = -1

    def start(self, detail: str = "") -> None:
        """Say the stage began (``0/total``)."""
        self._emit(detail)

    def advance(self, step: int, detail: str = "") -> None:
        """``step`` more units are done; reported when a percent or the end is reached."""
        self.done = min(self.total, self.done + max(0, int(step))) if self.total else self.done
        every = max(1, self.total // 100)
        if self.done - self._last >= every or self.done == self.total:
            self._emit(detail)

    def _emit(self, detail: str) -> None:
        if self._report is not None and self.done != self._last:
            self._last = self.done
            self._report(LoadProgress(self.stage, self.done, self.total, detail))
