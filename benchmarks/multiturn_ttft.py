"""Time to first token over a growing conversation, with and without KV-cache reuse.

Builds a small random-weight Mixtral (hidden 512, experts 3.5x as wide as Mixtral's are, 4
layers, 8 experts, the real v1 tokenizer) in a temporary directory and runs a 12-turn greedy
conversation whose prompt grows past 3,000 tokens (long user messages, fixed-length
replies). Each turn is asked of two engines in the same process: one keeps its KV cache
between turns, one prefills every prompt in full. TTFT is the engine's own ``Usage.ttft_s``
(from the ``stream`` call to the first token: prompt building, prefill and picking the first
token). The conversation is run ``--repeats`` times (cache reset in between); per turn the
median and the best are reported. ``raw_forward_*`` is the floor any cache reuse must pay: a
bare forward of the first turn's prompt, and of the last turn's new tokens on top of a cache
of its reused prefix; ``flops_ratio_*`` is the same ratio in arithmetic, for this model's
shape and Mixtral-8x7B's.

Prints one JSON object. Not part of the tests. Run: ``python benchmarks/multiturn_ttft.py``.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mixchat.config import Settings
from mixchat.conversation import Message, Role
from mixchat.engine.base import Failed, GenerationParams, TextDelta, Usage
from mixchat.engine.transformers import TransformersEngine
from mixchat.testing.models import build_tiny_mixtral

WORDS = [
    "tide",
    "moon",
    "harbour",
    "current",
    "salt",
    "river",
    "delta",
    "ocean",
    "shore",
    "wave",
    "storm",
    "calm",
    "reef",
    "kelp",
    "lighthouse",
    "compass",
    "chart",
    "anchor",
    "sail",
    "rope",
    "keel",
    "mast",
    "deck",
    "hull",
    "pier",
    "dock",
    "gull",
]


def user_message(turn: int, words: int) -> str:
    """A long user message; each turn uses the same words in a different order, so every
    turn's message has the same token count and differs from the others early on."""
    n = len(WORDS)
    words = max(n, words - words % n)  # whole rounds of WORDS: the same multiset each turn
    body = " ".join(WORDS[(i + turn * 5) % n] for i in range(words))
    return f"Turn {turn + 1:02d}. Please consider the following notes and answer: {body}."


def ask(engine: TransformersEngine, messages: list[Message], params: GenerationParams) -> tuple:
    """One turn: (reply text, Usage)."""
    text, usage = [], None
    for event in engine.stream(messages, "You are concise.", params, threading.Event()):
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, Usage):
            usage = event
        elif isinstance(event, Failed):
            raise SystemExit(f"generation failed: {event.message}")
    assert usage is not None
    return "".join(text), usage


def main() -> None:
    """Run the conversation and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--user-words", type=int, default=162)
    parser.add_argument("--reply-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument(
        "--intermediate", type=int, default=None, help="expert width (default: 3.5 x hidden)"
    )
    args = parser.parse_args()
    # Mixtral-8x7B's experts are 3.5x as wide as its hidden size (14,336 / 4,096); the width
    # sets how much attention over the history weighs against the rest of a token's work.
    args.intermediate = args.intermediate or int(3.5 * args.hidden)
    params = GenerationParams(temperature=0, max_new_tokens=args.reply_tokens)
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_mixtral(
            Path(tmp) / "model",
            hidden_size=args.hidden,
            layers=args.layers,
            experts=args.experts,
            intermediate_size=args.intermediate,
        )
        reuse = TransformersEngine(Settings(model=str(model_dir)))
        full = TransformersEngine(Settings(model=str(model_dir)), reuse_cache=False)
        try:
            for engine in (reuse, full):  # warm up: first-call costs are not TTFT
                ask(engine, [Message(Role.USER, "warm up")], params)
            runs = []
            for _ in range(args.repeats):
                reuse.reset_cache()
                runs.append(conversation(reuse, full, params, args))
            # Off the main thread, like the engine's model thread (see stream_overhead.py).
            with ThreadPoolExecutor(max_workers=1) as pool:
                floor = pool.submit(raw_prefill_floor, reuse, runs[0]).result()
            shape = model_shape(reuse._model.config)
        finally:
            reuse.close()
            full.close()
    loads = [load_start, os.getloadavg()[0]]
    report(runs, floor, shape, args, loads, time.perf_counter() - started)


def conversation(
    reuse: TransformersEngine,
    full: TransformersEngine,
    params: GenerationParams,
    args: argparse.Namespace,
) -> dict[str, list]:
    """One pass over the conversation, both engines turn by turn."""
    history: list[Message] = []
    keys = ("prompt", "cached", "reuse", "full", "same", "messages")
    out: dict[str, list] = {k: [] for k in keys}
    for turn in range(args.turns):
        history.append(Message(Role.USER, user_message(turn, args.user_words)))
        text, usage = ask(reuse, history, params)
        text_full, usage_full = ask(full, history, params)
        out["prompt"].append(usage.prompt_tokens)
        out["cached"].append(usage.cached_tokens)
        out["reuse"].append(usage.ttft_s)
        out["full"].append(usage_full.ttft_s)
        out["same"].append(text == text_full)
        out["messages"].append(list(history))
        history.append(Message(Role.ASSISTANT, text))
    return out


def raw_prefill_floor(engine: TransformersEngine, run: dict[str, list]) -> dict[str, float]:
    """What the model alone needs for the first turn's prefill and for the last turn's new
    tokens on top of a cache of its reused prefix: no engine, no generate; best of 7,
    the two measured alternately."""
    import torch
    from transformers import DynamicCache

    model = engine._model  # idle now: the engine thread only touches it inside a job
    tok = engine.load_tokenizer()
    cases = {}
    with torch.inference_mode():
        for name, turn in (("first", 0), ("last", -1)):
            ids = tok.build(run["messages"][turn], "You are concise.", 1).ids
            cached = run["cached"][turn]
            cache = DynamicCache(config=model.config)
            if cached:
                model(torch.tensor([ids[:cached]]), cache=cache, logits_to_keep=1)
            mask = torch.ones(1, len(ids), dtype=torch.long)
            cases[name] = (torch.tensor([ids[cached:]]), cache, mask)
        best = dict.fromkeys(cases, float("inf"))
        for _ in range(7):
            for name, (new, cache, mask) in cases.items():
                t0 = time.perf_counter()
                model(new, cache=cache, attention_mask=mask, logits_to_keep=1)
                best[name] = min(best[name], time.perf_counter() - t0)
                cache.crop(-new.shape[1])
    return {name: round(seconds, 4) for name, seconds in best.items()}


def report(
    runs: list[dict[str, list]],
    floor: dict[str, float],
    shape: tuple[int, int, int, int],
    args: argparse.Namespace,
    loads: list[float],
    elapsed: float,
) -> None:
    """Print per-turn medians and the turn-last / turn-1 ratios."""

    def per_turn(key: str, pick: Callable[[list[float]], float]) -> list[float]:
        return [round(pick([r[key][t] for r in runs]), 4) for t in range(args.turns)]

    reuse, full = per_turn("reuse", statistics.median), per_turn("full", statistics.median)
    reuse_min, full_min = per_turn("reuse", min), per_turn("full", min)
    first = runs[0]
    prefilled = [p - c for p, c in zip(first["prompt"], first["cached"], strict=True)]
    print(
        json.dumps(
            {
                "benchmark": "multiturn_ttft",
                "model": (
                    f"random Mixtral: hidden {args.hidden}, experts {args.intermediate} wide, "
                    f"{args.layers} layers, {args.experts} experts (2 active), fp32, CPU, "
                    f"{torch_threads()} threads"
                ),
                "turns": args.turns,
                "reply_tokens": args.reply_tokens,
                "repeats": args.repeats,
                "prompt_tokens": first["prompt"],
                "cached_tokens": first["cached"],
                "prefilled_tokens": prefilled,
                "ttft_reuse_s": reuse,
                "ttft_full_s": full,
                "ratio_last_over_first_reuse": round(reuse[-1] / reuse[0], 3),
                "ratio_last_over_first_full": round(full[-1] / full[0], 3),
                "speedup_last_turn": round(full[-1] / reuse[-1], 2),
                # Best of the repeats: less sensitive to other processes on a shared machine.
                "ttft_reuse_min_s": reuse_min,
                "ttft_full_min_s": full_min,
                "ratio_last_over_first_reuse_min": round(reuse_min[-1] / reuse_min[0], 3),
                "ratio_last_over_first_full_min": round(full_min[-1] / full_min[0], 3),
                # The model's own arithmetic sets a floor under the ratio: attention over
                # the history grows with it, the rest does not (see prefill_flops).
                "flops_ratio_last_over_first": flops_ratio(shape, first, prefilled),
                "flops_ratio_mixtral_8x7b_same_tokens": flops_ratio(
                    MIXTRAL_8X7B_SHAPE, first, prefilled
                ),
                "raw_forward_first_turn_s": floor["first"],
                "raw_forward_last_turn_new_tokens_s": floor["last"],
                "ratio_last_over_first_raw_forward": round(floor["last"] / floor["first"], 3),
                "replies_identical": all(all(r["same"]) for r in runs),
                "load_average_1min": [round(x, 2) for x in loads],  # at start and end
                "elapsed_s": round(elapsed, 1),
            }
        )
    )


def prefill_flops(
    hidden: int, intermediate: int, heads: int, kv_heads: int, new: int, past: int
) -> float:
    """Multiply-add FLOPs to prefill ``new`` tokens after ``past`` cached ones, per layer,
    for a Mixtral layer (top-2 experts; the LM head runs on the last token only)."""
    head_dim = hidden // heads
    projections = 2 * hidden * (2 * hidden + 2 * kv_heads * head_dim)
    experts = 2 * 3 * 2 * hidden * intermediate
    # each new token attends to the history and to the new tokens before it
    attention = 4 * hidden * new * (past + (new + 1) / 2)
    return new * (projections + experts) + attention


MIXTRAL_8X7B_SHAPE = (4096, 14336, 32, 8)  # hidden, expert width, heads, KV heads


def model_shape(config: Any) -> tuple[int, int, int, int]:
    """(hidden, expert width, heads, KV heads) of a Mixtral config, as prefill_flops takes."""
    return (
        int(config.hidden_size),
        int(config.intermediate_size),
        int(config.num_attention_heads),
        int(config.num_key_value_heads),
    )


def flops_ratio(shape: tuple[int, int, int, int], first: dict[str, list], prefilled: list) -> float:
    """Last turn's prefill FLOPs over the first turn's for a model of ``shape``, with this
    run's token counts."""
    last = prefill_flops(*shape, prefilled[-1], first["cached"][-1])
    one = prefill_flops(*shape, prefilled[0], first["cached"][0])
    return round(last / one, 3)


def torch_threads() -> int:
    """Threads torch computes with."""
    import torch

    return int(torch.get_num_threads())


if __name__ == "__main__":
    main()
