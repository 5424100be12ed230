"""Signals and terminals around ``mixchat ask``: SIGHUP is handled like SIGTERM and Ctrl-C.

While the answer streams, SIGINT, SIGTERM and SIGHUP (or the terminal closing) save the
whole reply so far, marked interrupted, and say so in one line; the exit code is 128 + the
signal's number (130, 143, 129). While the model loads, a signal is one line saying the
question is kept without an answer, with the same exit codes. On a terminal the answer
ends with a newline and nothing but mixchat's own lines reach the screen.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from mixchat.commands.ask import CUT_NOTE
from tests.e2e.helpers import mixchat_exe
from tests.reliability.asking import Asking, reply_rows
from tests.reliability.cycle_model import expected_reply
from tests.reliability.helpers import Pty, database, integrity, rows, run_on_pty

pytestmark = pytest.mark.e2e

NAMES = {signal.SIGINT: "stopped", signal.SIGTERM: "stopped by SIGTERM"}
NAMES[signal.SIGHUP] = "stopped by SIGHUP"


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_signal_while_streaming_saves_the_whole_reply(
    signum: signal.Signals, story_model: Path, mixchat_home: Path
) -> None:
    ask = Asking("--model", str(story_model), "--max-tokens", "20000", "tell me")
    try:
        ask.wait_for_output(lambda out: len(out) > 300, "some of the answer")
        ask.signal(signum)
        code = ask.finish()
    finally:
        ask.close()
    assert code == 128 + signum, ask.err
    assert ask.err.splitlines() == [f"mixchat: {NAMES[signum]}; the partial reply is saved"]
    (reply,) = reply_rows(database(mixchat_home))
    assert reply["status"] == "interrupted"
    assert reply["content"].encode() == ask.out  # everything shown, nothing more or less
    integrity(database(mixchat_home))


def test_terminal_closed_while_streaming(story_model: Path, mixchat_home: Path) -> None:
    """The real SIGHUP: the terminal goes away (its master side is closed) mid-answer."""
    term = Pty([mixchat_exe(), "ask", "--model", str(story_model), "--max-tokens", "20000", "go"])
    try:
        seen = term.wait_for(lambda out: out.count(b"alpha") >= 3, 120, "some of the answer")
        os.close(term._master)  # hang up
        code = term.proc.wait(timeout=120)
    finally:
        if term.proc.poll() is None:
            term.kill()
    assert code == 129
    (reply,) = reply_rows(database(mixchat_home))
    assert reply["status"] == "interrupted"
    shown = seen.split(b"\x1b[2K")[-1].replace(b"\r\n", b"\n").decode()
    assert reply["content"].startswith(shown) and len(reply["content"]) >= len(shown)
    integrity(database(mixchat_home))


GATED_MODEL = """
from transformers import MixtralForCausalLM

with open({fifo!r}, "rb") as gate:  # blocks until the test opens it, then until it closes
    gate.read()


class GatedMixtral(MixtralForCausalLM):
    pass
"""


@pytest.fixture
def gated_model(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny Mixtral with shipped code that stops loading at a FIFO until the test lets it."""
    model = tmp_path / "gated-model"
    shutil.copytree(tiny_model, model)
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    (model / "gated.py").write_text(GATED_MODEL.format(fifo=str(fifo)))
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "gated.GatedMixtral"}
    (model / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    return model


def open_gate_for_writing(fifo: Path, ask: Asking) -> int:
    """Wait until the loader has the FIFO open (it is then inside the model load)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            assert exc.errno == errno.ENXIO, exc  # no reader yet
        assert ask.proc.poll() is None, ask.err
        assert time.monotonic() < deadline, "the model load never reached its code"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_while_the_model_loads(
    signum: signal.Signals, gated_model: Path, mixchat_home: Path
) -> None:
    ask = Asking("--model", str(gated_model), "--trust-remote-code", "a question")
    gate = None
    try:
        gate = open_gate_for_writing(gated_model.parent / "gate", ask)
        ask.signal(signum)
        code = ask.finish()
    finally:
        ask.close()
        if gate is not None:
            os.close(gate)
    assert code == 128 + signum, ask.err
    assert ask.err.splitlines() == [
        f"mixchat: {NAMES[signum]} while the model was loading; "
        "the question is saved, without an answer"
    ]
    assert ask.out == b""
    db = database(mixchat_home)
    saved = rows(db, "SELECT role, content FROM messages")
    assert [(r["role"], r["content"]) for r in saved] == [("user", "a question")]


def test_answer_on_a_terminal_ends_with_a_newline_and_nothing_else(
    story_model: Path, story_cycle: list[int]
) -> None:
    code, screen = run_on_pty("ask", "--model", str(story_model), "--max-tokens", "30", "hi")
    assert code == 0
    # Load progress is drawn and erased in place ("...\r\x1b[2K"); what stays is the answer,
    # ended by a newline, and no warning from a library.
    kept = re.sub(rb"[^\r\n]*\r\x1b\[2K", b"", screen)  # what a terminal erases
    # 30 tokens of a story that never ends: cut by the limit, which one line on stderr says.
    note = f"mixchat: {CUT_NOTE}\r\n"
    assert kept.decode() == expected_reply(story_cycle, 30) + "\r\n" + note


@pytest.mark.parametrize("which", ["tiny_model", "real_model"])
def test_a_local_ask_writes_nothing_else_on_stderr(
    which: str, request: pytest.FixtureRequest
) -> None:
    """No library warning (transformers' FutureWarning about past_key_values was one on
    every ask: the engine always hands generate its own KV cache) on the Mixtral format or
    a chat template."""
    model = request.getfixturevalue(which)
    ask = Asking("--model", str(model), "--max-tokens", "8", "--temperature", "0.5", "hi")
    try:
        assert ask.finish() == 0
    finally:
        ask.close()
    # Our own line when the 8 tokens cut the answer, and nothing from a library.
    assert ask.err.splitlines() in ([], [f"mixchat: {CUT_NOTE}"])
