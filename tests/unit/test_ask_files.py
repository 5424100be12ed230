"""``mixchat ask -f FILE``: files in the message, their checks, what is saved and shown."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from mixchat.codeblocks import code_blocks
from mixchat.engine import factory
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from tests.cli_harness import Cli


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture
def ask(engine: ScriptedEngine, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The CLI in process, answering with ``engine``."""
    monkeypatch.setattr(factory, "make_engine", lambda settings: engine)
    return Cli()


def saved(runner: Cli) -> list[dict[str, object]]:
    rows = json.loads(runner("list", "--json").stdout)
    return [json.loads(runner("show", r["id"], "--json").stdout) for r in rows]


def test_files_follow_the_question_each_fenced_under_its_name(
    ask: Cli, engine: ScriptedEngine, tmp_path: Path
) -> None:
    code = tmp_path / "main.py"
    code.write_text("print('```')\n")
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"line one\nline two")
    result = ask("ask", "-f", str(code), "--file", str(notes), "What do these do?")
    assert result.returncode == 0, result.stderr
    sent = engine.requests[-1][0][-1].content
    assert sent.startswith("What do these do?\n\nFile: " + str(code) + "\n````python\n")
    blocks = code_blocks(sent)
    assert [b.code for b in blocks] == ["print('```')\n", "line one\nline two\n"]
    assert f"File: {notes}\n```text\n" in sent
    # stderr says what went in and its size (the scripted engine counts words).
    assert f"attached {code} (13 B), {notes} (17 B)" in result.stderr
    assert "tokens" in result.stderr
    (conv,) = saved(ask)
    first = conv["messages"][0]  # type: ignore[index]
    assert first["content"] == sent
    assert first["attachments"] == [
        {"name": str(code), "size": 13, "sha256": hashlib.sha256(code.read_bytes()).hexdigest()},
        {
            "name": str(notes),
            "size": 17,
            "sha256": hashlib.sha256(b"line one\nline two").hexdigest(),
        },
    ]
    assert conv["title"] == "What do these do?"  # type: ignore[index]
    shown = ask("show", str(conv["id"])).stdout  # type: ignore[index]
    assert f"[attached {code}, 13 bytes, sha256 " in shown
    exported = ask("export", str(conv["id"]), "--format", "md").stdout  # type: ignore[index]
    assert f"- attached {notes}, 17 bytes, sha256 " in exported


def test_files_alone_make_a_message_titled_by_their_names(
    ask: Cli, engine: ScriptedEngine, tmp_path: Path
) -> None:
    (tmp_path / "a.md").write_text("# A\n")
    result = ask("ask", "-f", str(tmp_path / "a.md"))
    assert result.returncode == 0, result.stderr
    (conv,) = saved(ask)
    assert conv["title"] == "a.md"  # type: ignore[index]


def test_stdin_and_argument_come_before_the_files(
    ask: Cli, engine: ScriptedEngine, tmp_path: Path
) -> None:
    (tmp_path / "f.txt").write_text("file text\n")
    result = ask("ask", "-f", str(tmp_path / "f.txt"), "question", input="piped text")
    assert result.returncode == 0, result.stderr
    sent = engine.requests[-1][0][-1].content
    assert sent.index("question") < sent.index("piped text") < sent.index("File: ")


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda d: d / "missing.txt", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: _write(d / "x.bin", b"\x00\x01"), "a binary file"),
        (lambda d: _write(d / "latin.txt", b"caf\xe9"), "not UTF-8 text"),
        (lambda d: _fifo(d / "pipe"), "a FIFO, not a regular file"),
        (lambda d: Path("/dev/zero"), "a device, not a regular file"),
        (lambda d: _write(d / "big.txt", b"x" * 2000), "over the 1,000-byte limit"),
    ],
)
def test_a_file_that_cannot_be_attached_is_one_line_exit_2_nothing_saved(
    ask: Cli, engine: ScriptedEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    make, says: str,  # type: ignore[no-untyped-def]
) -> None:  # fmt: skip
    monkeypatch.setenv("MIXCHAT_MAX_FILE_BYTES", "1000")
    path = make(tmp_path)
    result = ask("ask", "-f", str(path), "look")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines == [f"mixchat: error: {path}: " + lines[0].split(": ", 3)[-1]]
    assert says in result.stderr
    assert result.stdout == ""
    assert engine.requests == []
    assert ConversationStore.open().list_conversations() == []


def test_every_bad_file_gets_its_line_and_a_good_one_does_not_save_alone(
    ask: Cli, engine: ScriptedEngine, tmp_path: Path
) -> None:
    (tmp_path / "ok.txt").write_text("fine")
    _write(tmp_path / "b.bin", b"\x00")
    result = ask(
        "ask", "-f", str(tmp_path / "ok.txt"), "-f", str(tmp_path / "b.bin"),
        "-f", str(tmp_path / "gone"), "q",
    )  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 2
    assert engine.requests == [] and ConversationStore.open().list_conversations() == []


def test_a_file_to_a_continued_conversation(
    ask: Cli, engine: ScriptedEngine, tmp_path: Path
) -> None:
    assert ask("ask", "first").returncode == 0
    (tmp_path / "f.txt").write_text("body\n")
    result = ask("ask", "-c", "-f", str(tmp_path / "f.txt"), "and this?")
    assert result.returncode == 0, result.stderr
    (conv,) = saved(ask)
    messages = conv["messages"]  # type: ignore[index]
    assert [len(m["attachments"]) for m in messages] == [0, 0, 1, 0]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


# -- the real transformers path: tokens counted and the context checked before saving --


@pytest.mark.e2e
def test_the_local_model_counts_tokens_and_refuses_what_does_not_fit(
    cli: Cli, tiny_model: Path, tmp_path: Path
) -> None:
    small = tmp_path / "small.py"
    small.write_text("def add(a, b):\n    return a + b\n")
    args = ("ask", "--model", str(tiny_model), "--max-tokens", "4", "--temperature", "0")
    result = cli(*args, "-f", str(small), "explain")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("mixchat: ")]
    assert lines[0] == f"mixchat: attached {small} ({small.stat().st_size} B)"
    assert "the message is " in lines[1] and "-token context (4 kept for the reply)" in lines[1]
    context = int(lines[1].split(" of the ")[1].split("-token")[0].replace(",", ""))
    ids = json.loads(cli("list", "--json").stdout)
    assert len(ids) == 1
    # Several files whose words together overflow the context, each under the size limit.
    words = " ".join(f"w{i}" for i in range(context))
    big = []
    for index in range(3):
        path = tmp_path / f"part{index}.txt"
        path.write_text(words)
        big += ["-f", str(path)]
    result = cli(*args, *big, "summarise")
    assert result.returncode == 2
    error = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "does not fit the model's" in error[0]
    assert json.loads(cli("list", "--json").stdout) == ids  # nothing saved
