"""Time to first token after switching to a sibling branch, against an ordinary next turn.

The user's situation: a long conversation, the last answer just regenerated (Ctrl+R), so
the engine's KV cache holds the path through the *new* answer. Then either

- next turn: the user asks the next question under the new answer (the cache covers all
  but the question), or
- switch: the user steps back to the *old* answer (a sibling, ``switch_to``) and asks the
  same question under it. The prompt now shares the cache only up to the regenerated
  question; the old answer and the question are prefilled, the rest is reused.

Both go through the real owners of a turn and of the tree (``ConversationStore``, ``Turn``)
on a random-weight Mixtral (the multiturn_ttft.py shape: hidden 512, experts 3.5x as wide,
4 layers, 8 experts, the real v1 tokenizer), greedy. Each repeat imports a fresh copy of the
same conversation per case, so every case starts from the same cache state. ``switch_full``
is the switch prompt on an engine that keeps no cache (every prompt prefilled in full).
TTFT is the engine's own ``Usage.ttft_s``; medians and bests over the repeats, the cases
interleaved. ``*_cached_tokens`` say how much of each prompt the cache covered (a random
model's reply may re-tokenize differently from the ids it generated, so the next turn may
reuse only up to the question before the reply). ``ratio_switch_over_next`` is the
figure: how much a branch switch costs over an ordinary turn, measured in the same run.

Prints one JSON object. Not part of the tests. Run: ``python benchmarks/branch_ttft.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.multiturn_ttft import torch_threads, user_message
from mixchat.config import SettingsSources, load_sources
from mixchat.conversation import Conversation, Message, Role
from mixchat.engine.base import Failed, Usage
from mixchat.store import ConversationStore
from mixchat.turn import Turn

CASES = ("next", "switch", "switch_full")


def base_conversation(turns: int, user_words: int, reply_words: int) -> Conversation:
    """``turns`` long questions with fixed answers (no generation needed to set it up)."""
    messages: list[Message] = []
    for turn in range(turns):
        messages.append(Message(Role.USER, user_message(turn, user_words)))
        answer = " ".join(f"point{(turn * 7 + i) % 50}" for i in range(reply_words))
        messages.append(Message(Role.ASSISTANT, f"Answer {turn + 1}: {answer}."))
    return Conversation(
        id="", title="", created_at=time.time(), updated_at=time.time(), messages=messages
    )


def run_turn(turn: Turn, engine: object) -> Usage:
    """Stream the turn's reply into the store; its Usage."""
    turn.start()
    usage: list[Usage] = []

    def seen(event: object) -> None:
        if isinstance(event, Usage):
            usage.append(event)
        elif isinstance(event, Failed):
            raise SystemExit(f"generation failed: {event.message}")

    turn.run(engine, threading.Event(), seen)  # type: ignore[arg-type]
    assert usage, "the engine reported no usage"
    return usage[-1]


def one_case(
    case: str,
    store: ConversationStore,
    sources: SettingsSources,
    engine: object,
    base: Conversation,
    question: str,
) -> tuple[Usage, str, int]:
    """Regenerate the last answer, then ask ``question`` (after switching back to the old
    answer for the switch cases). Returns the question's Usage, its reply, and how many
    tokens the regenerated answer had."""
    conv = store.import_conversation(base)
    regen = Turn(store, sources, conv)
    regen.again(conv.messages[-2])
    regenerated = run_turn(regen, engine)  # the cache holds the path through the new answer
    if case.startswith("switch"):
        old = conv.messages[-1]
        assert old.id is not None
        store.switch_to(old.id)
    shown = store.get_conversation(conv.id)
    turn = Turn(store, sources, shown)
    turn.ask(Message(Role.USER, question))
    usage = run_turn(turn, engine)
    reply = store.get_conversation(conv.id).messages[-1]
    expected_parent = conv.messages[-1].id if case.startswith("switch") else None
    if expected_parent is not None:  # the question really went under the old answer
        assert store.get_conversation(conv.id).messages[-3].id == expected_parent
    return usage, reply.content, regenerated.completion_tokens


def main() -> None:
    """Run the cases and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--user-words", type=int, default=162)
    parser.add_argument("--reply-words", type=int, default=120)
    parser.add_argument("--reply-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--experts", type=int, default=8)
    args = parser.parse_args()
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MIXCHAT_HOME"] = str(Path(tmp) / "home")  # never the user's own data
        from mixchat.config import Settings
        from mixchat.engine.transformers import TransformersEngine
        from mixchat.testing.models import build_tiny_mixtral

        model_dir = build_tiny_mixtral(
            Path(tmp) / "model",
            hidden_size=args.hidden,
            layers=args.layers,
            experts=args.experts,
            intermediate_size=int(3.5 * args.hidden),
        )
        flags = {"model": str(model_dir), "temperature": "0"}
        sources = load_sources().with_flags({**flags, "max_new_tokens": str(args.reply_tokens)})
        reuse = TransformersEngine(Settings(model=str(model_dir)))
        full = TransformersEngine(Settings(model=str(model_dir)), reuse_cache=False)
        base = base_conversation(args.turns, args.user_words, args.reply_words)
        question = user_message(args.turns, args.user_words // 4)
        results: dict[str, list[tuple[Usage, str, int]]] = {case: [] for case in CASES}
        try:
            with ConversationStore.open(Path(tmp) / "bench.db") as store:
                for engine in (reuse, full):  # warm up: first-call costs are not TTFT
                    warm = Turn(store, sources, None)
                    warm.ask(Message(Role.USER, "warm up"))
                    run_turn(warm, engine)
                for _ in range(args.repeats):
                    for case in CASES:
                        engine = full if case == "switch_full" else reuse
                        results[case].append(one_case(case, store, sources, engine, base, question))
        finally:
            reuse.close()
            full.close()
    report(results, args, [load_start, os.getloadavg()[0]], time.perf_counter() - started)


def report(
    results: dict[str, list[tuple[Usage, str, int]]],
    args: argparse.Namespace,
    loads: list[float],
    elapsed: float,
) -> None:
    """Print the medians, bests and ratios."""
    out: dict[str, object] = {
        "benchmark": "branch_ttft",
        "model": (
            f"random Mixtral: hidden {args.hidden}, experts {int(3.5 * args.hidden)} wide, "
            f"{args.layers} layers, {args.experts} experts (2 active), fp32, CPU, "
            f"{torch_threads()} threads"
        ),
        "history_turns": args.turns,
        "repeats": args.repeats,
    }
    ttft = {c: [u.ttft_s or 0.0 for u, _, _ in results[c]] for c in CASES}
    out["regenerated_answer_tokens"] = results["switch"][0][2]
    for case in CASES:
        first = results[case][0][0]
        out[f"{case}_prompt_tokens"] = first.prompt_tokens
        out[f"{case}_cached_tokens"] = first.cached_tokens
        out[f"{case}_prefilled_tokens"] = first.prompt_tokens - first.cached_tokens
        out[f"ttft_{case}_median_s"] = round(statistics.median(ttft[case]), 4)
        out[f"ttft_{case}_min_s"] = round(min(ttft[case]), 4)
    for pick in ("median", "min"):
        nxt, sw, full = (out[f"ttft_{c}_{pick}_s"] for c in CASES)
        out[f"ratio_switch_over_next_{pick}"] = round(sw / nxt, 3)  # type: ignore[operator]
        out[f"speedup_switch_cache_over_full_{pick}"] = round(full / sw, 2)  # type: ignore[operator]
    # Greedy: the reused cache must give the reply a full prefill gives.
    out["switch_replies_identical_to_full_prefill"] = [r for _, r, _ in results["switch"]] == [
        r for _, r, _ in results["switch_full"]
    ]
    out["load_average_1min"] = [round(x, 2) for x in loads]
    out["elapsed_s"] = round(elapsed, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
