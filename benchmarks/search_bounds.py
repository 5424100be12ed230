"""Search over hostile history: does the work grow with what is shown, not with the message?

Prints one JSON object: seconds per ``ConversationStore.search`` (median of ``--repeat``
runs, each case in its own process with a deadline; a case past it reports ``null`` and
``"timed_out": true``) for

- ``ordinary``: 2,000 short messages that all hold the word (the baseline);
- ``one_word_160k``: one message holding one word 160,000 times, among the ordinary ones;
- ``message_50mb``: one 50 MB message of prose holding the word, among the ordinary ones;
- ``query_100kb``: a 100 KB query (distinct words) over the ordinary messages;
- ``many_hits_1000x15kb``: 1,000 messages of 15 KB, each the word 2,140 times (the
  whole window of ranked matches made of hits).

Usage: python benchmarks/search_bounds.py [--repeat 3] [--deadline 120]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from mixchat.conversation import Message, Role
from mixchat.store import ConversationStore, StoreError

PROSE = "the quick brown fox jumps over the lazy dog while the kettle sings "


def _build(db: Path, case: str) -> str:
    """Fill ``db`` for ``case``; the query to run."""
    with ConversationStore.open(db) as store:
        conv = store.create_conversation(model="m", system_prompt=None, settings={})
        for i in range(2000):
            store.append_message(conv.id, Message(Role.USER, f"note {i}: the word kettle {PROSE}"))
        if case == "one_word_160k":
            store.append_message(conv.id, Message(Role.ASSISTANT, "kettle " * 160_000))
        elif case == "message_50mb":
            store.append_message(conv.id, Message(Role.ASSISTANT, PROSE * (50_000_000 // 67)))
        elif case == "many_hits_1000x15kb":
            for _ in range(1000):
                store.append_message(conv.id, Message(Role.ASSISTANT, "kettle " * 2_140))
    if case == "query_100kb":
        return " ".join(f"w{i}x" for i in range(100_000 // 8))
    return "kettle"


def _run(case: str, repeat: int, out: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        query = _build(db, case)
        out.put("built")
        times = []
        outcome = "ok"
        with ConversationStore.open(db) as store:
            for _ in range(repeat):
                start = time.perf_counter()
                try:
                    store.search(query, limit=50)
                except StoreError as exc:
                    outcome = f"refused: {exc}"
                times.append(time.perf_counter() - start)
        out.put((statistics.median(times), outcome))


def measure(case: str, repeat: int, deadline: float) -> dict[str, Any]:
    """One case in a child process, killed at ``deadline`` seconds of searching."""
    queue: Any = multiprocessing.Queue()
    child = multiprocessing.Process(target=_run, args=(case, repeat, queue))
    child.start()
    try:
        queue.get(timeout=1800)  # building the history
        seconds, outcome = queue.get(timeout=deadline * repeat)
    except Exception:
        child.kill()
        child.join()
        return {"seconds": None, "timed_out": True}
    child.join()
    return {"seconds": round(seconds, 4), "outcome": outcome}


def main() -> None:
    """Measure every case and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--deadline", type=float, default=120.0)
    parser.add_argument(
        "--cases", default="ordinary,one_word_160k,message_50mb,query_100kb,many_hits_1000x15kb"
    )
    args = parser.parse_args()
    figures = {case: measure(case, args.repeat, args.deadline) for case in args.cases.split(",")}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
