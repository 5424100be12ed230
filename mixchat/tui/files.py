"""Files the app writes on request (exports, screenshots): where, and saying where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import App

from mixchat import paths


def output_dirs() -> list[Path]:
    """Where to save, in order: the current directory, then the data directory (for a
    current directory that is read-only or gone)."""
    try:
        here = [Path.cwd()]
    except OSError:  # deleted under us
        here = []
    return [*here, paths.data_dir()]


def _write(target: Path, text: str) -> None:
    """Write whole or not at all."""
    tmp = target.with_name(target.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8", errors="surrogatepass")
        tmp.replace(target)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def save_text(app: App[Any], name: str, text: str, what: str) -> Path | None:
    """Write ``text`` as ``name`` in the first of ``output_dirs()`` that takes it and notify
    the path; None, with the reason notified, when none does."""
    error: OSError | None = None
    for directory in output_dirs():
        try:
            directory.mkdir(parents=True, exist_ok=True)
            _write(directory / name, text)
        except OSError as exc:
            error = error or exc
            continue
        app.notify(str(directory / name), title=what, markup=False, timeout=10)
        return directory / name
    reason = (error.strerror if error else None) or str(error)
    app.notify(f"Cannot write {name}: {reason}", title="Not saved", severity="error", markup=False)
    return None
