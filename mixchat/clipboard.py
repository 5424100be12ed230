"""Copying text to the clipboard: through the terminal (OSC 52) or a clipboard tool.

No terminal says whether it takes OSC 52, so ``osc52_support`` judges from the
environment: terminals known to take it (kitty, WezTerm, iTerm2, foot, Alacritty, Ghostty,
Windows Terminal, VS Code), known not to (Apple Terminal, VTE-based ones such as GNOME
Terminal, the Linux console), and the rest unknown (tmux, by default, drops an
application's OSC 52). ``copy_text`` in ``auto`` mode uses OSC 52 where it is known to
work, else the first clipboard tool that works (wl-copy on Wayland, xclip or xsel on X11,
pbcopy on macOS), else OSC 52 on a terminal that might take it; its ``Copied`` says which
was used, or that nothing was. Tools run without a shell, with the text on stdin and a
timeout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Tool:
    """A clipboard command: its name, arguments, and the variable it needs to be usable."""

    name: str
    args: tuple[str, ...]
    needs: str | None = None  # e.g. DISPLAY: without it the tool cannot reach a clipboard
    platform: str | None = None  # sys.platform it exists on, if only one


TOOLS = (
    Tool("wl-copy", (), needs="WAYLAND_DISPLAY"),
    Tool("xclip", ("-selection", "clipboard"), needs="DISPLAY"),
    Tool("xsel", ("--clipboard", "--input"), needs="DISPLAY"),
    Tool("pbcopy", (), platform="darwin"),
)
TOOL_NAMES = ", ".join(t.name for t in TOOLS)

_OSC52_PROGRAMS = {"iTerm.app", "WezTerm", "ghostty", "vscode", "Tabby", "rio", "contour"}
_OSC52_TERMS = ("xterm-kitty", "foot", "alacritty", "xterm-ghostty", "wezterm", "contour")


def osc52_support(environ: Mapping[str, str]) -> bool | None:
    """True where the terminal is known to take OSC 52, False where it is known not to,
    None where it cannot be told."""
    program = environ.get("TERM_PROGRAM", "")
    term = environ.get("TERM", "")
    if program == "tmux" or "TMUX" in environ:
        return None  # tmux passes it on only with set-clipboard on; the outer one is unknown
    if program in _OSC52_PROGRAMS or term.startswith(_OSC52_TERMS):
        return True
    if "KITTY_WINDOW_ID" in environ or "WT_SESSION" in environ:
        return True
    if program == "Apple_Terminal" or "VTE_VERSION" in environ or term == "linux":
        return False
    return None


def usable_tools(environ: Mapping[str, str], platform: str = sys.platform) -> list[list[str]]:
    """The command lines of the clipboard tools found on ``PATH`` that can work here."""
    found = []
    for tool in TOOLS:
        if tool.needs is not None and not environ.get(tool.needs):
            continue
        if tool.platform is not None and tool.platform != platform:
            continue
        path = shutil.which(tool.name, path=environ.get("PATH"))
        if path is not None:
            found.append([path, *tool.args])
    return found


def run_tool(argv: list[str], text: str, timeout: float = TIMEOUT_S) -> str | None:
    """Give ``text`` to the tool on stdin; None when it worked, else why not (one line).

    Output goes to /dev/null rather than a pipe: xclip and wl-copy leave a child behind
    that holds the selection, and waiting for a pipe it inherited would wait for that."""
    try:
        result = subprocess.run(
            argv,
            input=text.encode("utf-8", "replace"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"gave no answer in {timeout:g} s"
    except OSError as exc:
        return f"could not run ({exc.strerror or exc})"
    return None if result.returncode == 0 else f"failed (exit code {result.returncode})"


@dataclass(frozen=True)
class Copied:
    """What became of a copy: ``method`` is ``osc52``, a tool's name, or ``""`` (nothing
    was copied); ``message`` says so for a notification."""

    method: str
    message: str
    severity: str = "information"  # or "warning", "error"


def copy_text(
    text: str,
    what: str,
    mode: str,
    environ: Mapping[str, str],
    send_osc52: Callable[[str], None],
    *,
    platform: str = sys.platform,
    timeout: float = TIMEOUT_S,
) -> Copied:
    """Copy ``text`` (``what`` names it: "the last answer") as ``mode`` says: ``auto``,
    ``osc52`` or ``system`` (a tool only). ``send_osc52`` writes the OSC 52 sequence."""
    support = osc52_support(environ)
    if mode == "osc52" or (mode == "auto" and support is True):
        send_osc52(text)
        return Copied("osc52", f"Copied {what} (OSC 52, through the terminal).")
    failures = []
    for argv in usable_tools(environ, platform):
        name = argv[0].rsplit("/", 1)[-1]
        problem = run_tool(argv, text, timeout)
        if problem is None:
            return Copied(name, f"Copied {what} with {name}.")
        failures.append(f"{name} {problem}")
    tools = "; ".join(failures) if failures else f"none of {TOOL_NAMES} is usable here"
    if mode == "auto" and support is None:
        send_osc52(text)
        return Copied(
            "osc52",
            f"Sent {what} to the terminal's clipboard (OSC 52); no clipboard tool worked "
            f"({tools}), so if this terminal ignores OSC 52 nothing was copied.",
            "warning",
        )
    why = "this terminal does not take OSC 52 and " if mode == "auto" else ""
    return Copied("", f"Nothing was copied: {why}no clipboard tool worked ({tools}).", "error")
