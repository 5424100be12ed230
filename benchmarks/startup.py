"""Start-up and history-at-scale timings of the installed ``mixchat`` command.

Prints one JSON object. Figures are medians of repeated runs beside a baseline
measured in the same run (``python -c pass``), because this machine is shared:

- ``mixchat --help`` and ``mixchat list`` (1,000 saved conversations) wall time;
- ``mixchat list`` over 10,000 conversations and ``mixchat search`` over 1M
  messages (two words in ~75% of messages each: whole words, and word beginnings
  that only match as prefixes), reported as work beyond ``mixchat --help``.

Usage: python benchmarks/startup.py [--messages 1000000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

WORDS = (
    "model",
    "token",
    "cache",
    "expert",
    "router",
    "attention",
    "layer",
    "prompt",
    "answer",
    "python",
    "code",
    "memory",
    "quantize",
    "stream",
    "latency",
    "window",
    "context",
    "gpu",
    "kernel",
    "batch",
    "decode",
    "sample",
)


def timed(cmd: list[str], env: dict[str, str], repeat: int) -> float:
    """Median wall time of ``cmd`` in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def populate(home: Path, conversations: int, messages: int, seed: int = 0) -> None:
    """Fill a store through its own schema (created by mixchat's store), in bulk."""
    env = {**os.environ, "MIXCHAT_HOME": str(home)}
    subprocess.run(  # `mixchat list` creates nothing on an empty home
        [
            sys.executable,
            "-c",
            "from mixchat.store import ConversationStore as S; S.open().close()",
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = home / "data" / "conversations.db"
    rng = random.Random(seed)
    conn = sqlite3.connect(db)
    now = time.time()
    ids = [uuid.uuid4().hex for _ in range(conversations)]
    per = max(1, messages // conversations)
    with conn:
        conn.executemany(
            "INSERT INTO conversations (id, title, created_at, updated_at, model, settings)"
            " VALUES (?, ?, ?, ?, 'bench', '{}')",
            [(cid, f"conversation {i}", now - i, now - i) for i, cid in enumerate(ids)],
        )
        rows = []
        for i, cid in enumerate(ids):
            for position in range(per):
                text = " ".join(rng.choice(WORDS) for _ in range(30))
                role = "user" if position % 2 == 0 else "assistant"
                rows.append((cid, position, role, text, "complete", now - i, now - i))
            if len(rows) > 50_000:
                conn.executemany(
                    "INSERT INTO messages (conversation_id, position, role, content, status,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                rows.clear()
        conn.executemany(
            "INSERT INTO messages (conversation_id, position, role, content, status,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    exe = str(Path(sys.executable).parent / "mixchat")
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "small", Path(tmp) / "large"
        populate(small, 1_000, 2_000)
        t0 = time.perf_counter()
        populate(large, 10_000, args.messages)
        result["populate_large_s"] = round(time.perf_counter() - t0, 1)
        env_small = {**os.environ, "MIXCHAT_HOME": str(small)}
        env_large = {**os.environ, "MIXCHAT_HOME": str(large)}
        baseline = timed([sys.executable, "-c", "pass"], env_small, args.repeat)
        help_s = timed([exe, "--help"], env_small, args.repeat)
        list_s = timed([exe, "list"], env_small, args.repeat)
        list_large = timed([exe, "list", "-n", "10000"], env_large, args.repeat)
        search_large = timed([exe, "search", "quantize kernel"], env_large, args.repeat)
        # No message has these as whole words: the all-prefix retry, FTS5's slow path.
        search_prefix = timed([exe, "search", "quantiz kerne"], env_large, args.repeat)
        help_large = timed([exe, "--help"], env_large, args.repeat)
        result.update(
            {
                "python_pass_s": round(baseline, 3),
                "help_s": round(help_s, 3),
                "list_1k_s": round(list_s, 3),
                "help_over_baseline": round(help_s / baseline, 1),
                "list_10k_s": round(list_large, 3),
                "list_10k_beyond_startup_ms": round(1000 * (list_large - help_large)),
                "search_1m_s": round(search_large, 3),
                "search_1m_beyond_startup_ms": round(1000 * (search_large - help_large)),
                "search_prefix_1m_s": round(search_prefix, 3),
                "search_prefix_1m_beyond_startup_ms": round(1000 * (search_prefix - help_large)),
                "messages": args.messages,
                "goals": {
                    "help_s": 0.3,
                    "list_1k_s": 0.3,
                    "list_10k_beyond_ms": 200,
                    "search_1m_beyond_ms": 100,
                },
            }
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
