"""kill -9 at random moments while ``mixchat ask`` loads the model and streams.

Two lanes of ``mixchat ask`` run at once against one database (so kills also land while
the other process is in the middle of a transaction). Each lane starts a process, waits a
random time covering the model load, the first token and the middle of the stream, and
SIGKILLs it; then the database must pass ``PRAGMA integrity_check``, the question must
be saved, and the partial reply (if one was started) must be saved, marked interrupted,
and agree with what was streamed. The next ask continues the conversation.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.helpers import mixchat_exe
from tests.reliability.helpers import cli, database, integrity, rows

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("MIXCHAT_FAULT_SEED", "6"))
LANES = 2
# Where each lane's kills land, in a shuffled order: before the question is saved, while
# the model loads, right at the first token, or while the answer streams (most of them).
PHASES = ["early"] * 1 + ["load"] * 2 + ["first-token"] * 2 + ["stream"] * 5


@dataclass
class Kill:
    """One killed ask and what was seen of it."""

    lane: int
    phase: str
    prompt: str
    conversation: str | None
    streamed: bytes = b""
    streamed_for_s: float = 0.0
    finished: bool = False  # the random model said </s> before the kill came
    # The reply was saved complete: finished, or ended (EOS) in the moment between its last
    # write and the kill landing (the process had not exited yet). Set by _check.
    reply_complete: bool = False


@dataclass
class Lane:
    number: int
    rng: random.Random
    home: Path
    model: Path
    kills: list[Kill] = field(default_factory=list)
    finished: list[Kill] = field(default_factory=list)
    conversation: str | None = None


def _user_row(db: Path, prompt: str) -> list[sqlite3.Row]:
    try:
        return rows(db, "SELECT * FROM messages WHERE content = ? AND role = 'user'", (prompt,))
    except sqlite3.OperationalError:  # no file yet, or its schema is being created
        return []


def _wait_for_question(db: Path, prompt: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll the database (read-only) until the question is committed."""
    deadline = time.monotonic() + 60
    while not _user_row(db, prompt):
        assert proc.poll() is None, f"ask exited early ({proc.returncode})"
        assert time.monotonic() < deadline, "the question was never saved"
        time.sleep(0.02)


def _one_kill(lane: Lane, index: int, phase: str) -> Kill:
    rng = lane.rng
    new = lane.conversation is None or rng.random() < 0.25
    prompt = f"lane {lane.number} question {index} {uuid.uuid4().hex[:8]}"
    args = [mixchat_exe(), "ask", "--model", str(lane.model), "--max-tokens", "20000"]
    if not new:
        args += ["--conversation", str(lane.conversation)]
    proc = subprocess.Popen(
        [*args, prompt],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    assert proc.stdout is not None
    streamed = bytearray()
    first_byte = threading.Event()

    def drain() -> None:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 65536):
            streamed.extend(chunk)
            first_byte.set()
        first_byte.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    db = database(lane.home)
    streamed_for = 0.0
    try:
        if phase == "early":
            time.sleep(rng.uniform(0.05, 1.0))
        else:
            _wait_for_question(db, prompt, proc)
            if phase == "load":
                time.sleep(rng.uniform(0.0, 3.0))
            else:
                assert first_byte.wait(90), "no token within 90 s"
                started = time.monotonic()
                time.sleep(rng.uniform(0.0, 0.3) if phase == "first-token" else rng.uniform(0.6, 3))
                streamed_for = time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        reader.join(timeout=30)
        proc.stdout.close()
    assert proc.returncode in (0, -signal.SIGKILL), proc.returncode
    conv = _user_row(db, prompt)
    conv_id = str(conv[0]["conversation_id"]) if conv else None
    if conv_id is not None:
        lane.conversation = conv_id
    finished = proc.returncode == 0
    return Kill(lane.number, phase, prompt, conv_id, bytes(streamed), streamed_for, finished)


def _check(db: Path, kill: Kill) -> None:
    """What the database holds after one kill."""
    integrity(db)
    if kill.conversation is None:
        assert kill.phase == "early", f"question lost: {kill}"
        return
    messages = rows(
        db,
        "SELECT * FROM messages WHERE conversation_id = ? ORDER BY position",
        (kill.conversation,),
    )
    at = next(i for i, m in enumerate(messages) if m["content"] == kill.prompt)
    question = messages[at]
    assert (question["role"], question["status"]) == ("user", "complete")
    after = messages[at + 1 : at + 2]
    finished_first = bool(after) and after[0]["status"] == "complete" and not kill.finished
    if kill.finished or finished_first:
        # Not killed, or the reply ended (EOS) in the moment between its last write and
        # the kill landing: a complete reply, exactly what was printed.
        assert after[0]["status"] == "complete"
        assert after[0]["content"].encode() == kill.streamed
        kill.reply_complete = True
    elif after and after[0]["role"] == "assistant":
        reply = after[0]
        assert reply["status"] == "interrupted", dict(reply)
        saved = reply["content"].encode()
        # Checkpoints and stdout are both prefixes of the same answer.
        shorter, longer = sorted((saved, kill.streamed), key=len)
        assert longer.startswith(shorter), (saved[:200], kill.streamed[:200])
        if kill.phase == "stream" and kill.streamed_for_s >= 2.0:
            assert saved, "streamed for over a second but no checkpoint was saved"
    else:
        # Killed before the reply row was made: only possible before the first token.
        assert kill.phase in ("early", "load"), f"reply row missing: {kill}"
        assert not kill.streamed


def test_kill_9_at_random_moments_while_asking(
    tiny_model: Path, mixchat_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    master = random.Random(SEED)
    with capsys.disabled():
        print(f"\n[kill -9 ask] seed {SEED} (set MIXCHAT_FAULT_SEED to replay)")
    lanes = [
        Lane(n, random.Random(master.getrandbits(64)), mixchat_home, tiny_model)
        for n in range(LANES)
    ]
    errors: list[BaseException] = []

    def run_lane(lane: Lane) -> None:
        try:
            phases = lane.rng.sample(PHASES, len(PHASES))
            attempt = 0
            while phases and attempt < len(PHASES) + 5:
                kill = _one_kill(lane, attempt, phases[0])
                attempt += 1
                _check(database(lane.home), kill)
                if kill.finished:  # try that phase again
                    lane.finished.append(kill)
                else:
                    lane.kills.append(kill)
                    phases.pop(0)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run_lane, args=(lane,)) for lane in lanes]
    for thread in threads:
        thread.start()
    end = time.monotonic() + 540  # one deadline for all lanes (a loaded machine is slow)
    for thread in threads:
        thread.join(timeout=max(0.0, end - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a lane hung"
    if errors:
        raise errors[0]
    kills = [k for lane in lanes for k in lane.kills]
    phases = {p: sum(k.phase == p for k in kills) for p in dict.fromkeys(PHASES)}
    with capsys.disabled():
        finished = sum(len(lane.finished) for lane in lanes)
        print(f"[kill -9 ask] {len(kills)} kills: {phases}; {finished} ended by themselves")
    assert len(kills) == LANES * len(PHASES) >= 20
    assert sum(bool(k.streamed) for k in kills) >= LANES * 7  # killed mid-answer

    db = database(mixchat_home)
    integrity(db)
    # Every question whose commit we waited for is there, exactly once.
    for kill in kills + [k for lane in lanes for k in lane.finished]:
        found = rows(db, "SELECT count(*) FROM messages WHERE content = ?", (kill.prompt,))
        assert found[0][0] == (0 if kill.conversation is None else 1), kill
    # No conversation was left without its question (the first message is atomic).
    assert rows(db, "SELECT count(*) FROM conversations WHERE message_count = 0")[0][0] == 0

    # The next `ask -c` continues the last conversation, partial replies included...
    last = rows(db, "SELECT id FROM conversations ORDER BY used_at DESC LIMIT 1")[0]["id"]
    before = rows(db, "SELECT content FROM messages WHERE conversation_id = ?", (last,))
    shown = cli("ask", "--model", str(tiny_model), "-c", "--show-prompt", "--json", "go on")
    assert shown.code == 0, shown.err
    prompt_text = json.loads(shown.out)["text"]
    assert all(m["content"] in prompt_text for m in before)
    # ...and completes, while another ask answers in the other lane's conversation.
    other = next(lane.conversation for lane in lanes if lane.conversation != last)
    finals = {"go on": ["-c"], "and then?": ["--conversation", str(other)]}
    procs = {
        question: subprocess.Popen(
            [
                mixchat_exe(),
                "ask",
                "--model",
                str(tiny_model),
                "--max-tokens",
                "4",
                *extra,
                question,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=os.environ.copy(),
        )
        for question, extra in finals.items()
    }
    for proc in procs.values():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        assert b"locked" not in err
    integrity(db)
    for question in finals:
        (asked,) = rows(db, "SELECT * FROM messages WHERE content = ?", (question,))
        assert asked["status"] == "complete"
    new = rows(db, "SELECT count(*) FROM messages WHERE status = 'complete' AND role = 'assistant'")
    # Every other reply was killed before it completed.
    complete = sum(k.reply_complete for lane in lanes for k in lane.kills + lane.finished)
    assert new[0][0] == 2 + complete
