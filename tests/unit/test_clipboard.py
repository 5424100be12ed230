"""Copying: OSC 52 where the terminal takes it, else a clipboard tool, else say so.

The tools are fake scripts on PATH that record what they were given."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixchat.clipboard import copy_text, osc52_support, usable_tools

TEXT = "héllo $(rm -rf ~) `x` 'q' \"d\"\n\ttab ; | & > out\x1b[31m\n"


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    return directory


def fake_tool(bin_dir: Path, name: str, body: str = "") -> Path:
    """A script called ``name`` that saves its stdin and arguments beside itself."""
    record = bin_dir / f"{name}.got"
    script = bin_dir / name
    script.write_text(
        f'#!/bin/sh\ncat > "{record}"\nprintf "%s\\n" "$@" > "{record}.args"\n{body}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return record


def env(bin_dir: Path, **more: str) -> dict[str, str]:
    return {"PATH": str(bin_dir), **more}


class Osc52:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, text: str) -> None:
        self.sent.append(text)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"TERM": "xterm-kitty"}, True),
        ({"TERM_PROGRAM": "WezTerm"}, True),
        ({"TERM_PROGRAM": "iTerm.app"}, True),
        ({"TERM": "foot"}, True),
        ({"WT_SESSION": "x"}, True),
        ({"TERM_PROGRAM": "Apple_Terminal"}, False),
        ({"VTE_VERSION": "7600", "TERM": "xterm-256color"}, False),
        ({"TERM": "linux"}, False),
        ({"TERM": "xterm-kitty", "TMUX": "/tmp/tmux-0/default,1,0"}, None),
        ({"TERM": "xterm-256color"}, None),
        ({}, None),
    ],
)
def test_which_terminals_take_osc52(environ: dict[str, str], expected: bool | None) -> None:
    assert osc52_support(environ) is expected


def test_a_terminal_known_to_take_osc52_gets_it_and_no_tool_runs(bin_dir: Path) -> None:
    record = fake_tool(bin_dir, "xclip")
    osc = Osc52()
    copied = copy_text(TEXT, "the answer", "auto", env(bin_dir, DISPLAY=":0", TERM="foot"), osc)
    assert copied.method == "osc52" and osc.sent == [TEXT]
    assert "OSC 52" in copied.message and copied.severity == "information"
    assert not record.exists()


@pytest.mark.parametrize(
    ("tool", "needs", "args"),
    [
        ("wl-copy", {"WAYLAND_DISPLAY": "wayland-0"}, []),
        ("xclip", {"DISPLAY": ":0"}, ["-selection", "clipboard"]),
        ("xsel", {"DISPLAY": ":0"}, ["--clipboard", "--input"]),
    ],
)
def test_a_tool_gets_the_text_on_stdin_without_a_shell(
    bin_dir: Path, tool: str, needs: dict[str, str], args: list[str]
) -> None:
    record = fake_tool(bin_dir, tool)
    osc = Osc52()
    copied = copy_text(TEXT, "the answer", "auto", env(bin_dir, **needs), osc)
    assert copied.method == tool and copied.message == f"Copied the answer with {tool}."
    assert record.read_bytes() == TEXT.encode()
    assert Path(f"{record}.args").read_text().split("\n")[: len(args)] == args
    assert osc.sent == []


def test_pbcopy_on_macos(bin_dir: Path) -> None:
    record = fake_tool(bin_dir, "pbcopy")
    assert usable_tools(env(bin_dir), platform="linux") == []
    copied = copy_text(TEXT, "it", "system", env(bin_dir), Osc52(), platform="darwin")
    assert copied.method == "pbcopy" and record.read_bytes() == TEXT.encode()


def test_tools_need_their_display(bin_dir: Path) -> None:
    fake_tool(bin_dir, "wl-copy")
    fake_tool(bin_dir, "xclip")
    assert usable_tools(env(bin_dir)) == []
    found = usable_tools(env(bin_dir, DISPLAY=":1", WAYLAND_DISPLAY="w"))
    assert [Path(argv[0]).name for argv in found] == ["wl-copy", "xclip"]


def test_a_failing_tool_gives_way_to_the_next(bin_dir: Path) -> None:
    fake_tool(bin_dir, "wl-copy", "exit 1")
    record = fake_tool(bin_dir, "xsel")
    copied = copy_text(TEXT, "it", "auto", env(bin_dir, DISPLAY=":0", WAYLAND_DISPLAY="w"), Osc52())
    assert copied.method == "xsel" and record.read_bytes() == TEXT.encode()


def test_a_tool_that_hangs_is_stopped_by_the_timeout(bin_dir: Path) -> None:
    fake_tool(bin_dir, "xclip", "exec sleep 60")
    record = fake_tool(bin_dir, "xsel")
    # The timeout is per tool: long enough for the quick one to start on a loaded machine.
    copied = copy_text(TEXT, "it", "system", env(bin_dir, DISPLAY=":0"), Osc52(), timeout=8)
    assert copied.method == "xsel" and record.read_bytes() == TEXT.encode()


@pytest.fixture
def leftovers(bin_dir: Path) -> Iterator[Path]:
    pids = bin_dir / "pids"
    yield pids
    for line in pids.read_text().split() if pids.exists() else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line), signal.SIGKILL)


def test_a_tool_that_leaves_a_child_holding_its_output_does_not_block(
    bin_dir: Path, leftovers: Path
) -> None:
    # As xclip does: a child stays behind to serve the selection, with the parent's stdout.
    record = fake_tool(bin_dir, "xclip", f'sleep 60 &\necho $! >> "{leftovers}"\nexit 0')
    copied = copy_text(TEXT, "it", "system", env(bin_dir, DISPLAY=":0"), Osc52(), timeout=30)
    assert copied.method == "xclip", copied.message
    assert record.read_bytes() == TEXT.encode()


def test_unknown_terminal_without_tools_falls_back_to_osc52_and_says_it_may_not_work(
    bin_dir: Path,
) -> None:
    osc = Osc52()
    copied = copy_text(TEXT, "the answer", "auto", env(bin_dir, TERM="xterm"), osc)
    assert copied.method == "osc52" and osc.sent == [TEXT]
    assert copied.severity == "warning"
    assert "no clipboard tool worked" in copied.message and "wl-copy" in copied.message


def test_a_terminal_without_osc52_and_no_tool_copies_nothing_and_says_so(bin_dir: Path) -> None:
    fake_tool(bin_dir, "xclip", "exit 3")
    osc = Osc52()
    environ = env(bin_dir, TERM_PROGRAM="Apple_Terminal", DISPLAY=":0")
    copied = copy_text(TEXT, "the answer", "auto", environ, osc)
    assert copied.method == "" and osc.sent == [] and copied.severity == "error"
    assert copied.message.startswith("Nothing was copied: this terminal does not take OSC 52")
    assert "xclip failed (exit code 3)" in copied.message


def test_modes_force_one_way(bin_dir: Path) -> None:
    record = fake_tool(bin_dir, "xclip")
    osc = Osc52()
    copied = copy_text(TEXT, "it", "osc52", env(bin_dir, DISPLAY=":0"), osc)
    assert copied.method == "osc52" and not record.exists()
    copied = copy_text(TEXT, "it", "system", env(bin_dir, TERM="foot", DISPLAY=":0"), osc)
    assert copied.method == "xclip" and osc.sent == [TEXT]
    copied = copy_text(TEXT, "it", "system", env(bin_dir, TERM="foot"), osc)
    assert copied.method == "" and "Nothing was copied: no clipboard tool" in copied.message
    assert osc.sent == [TEXT]  # system mode never falls back to the terminal
