"""Streaming overhead: the engine's event stream against a bare ``model.generate``.

Builds a small random-weight Mixtral (hidden 256, 4 layers, 8 experts, the real v1
tokenizer) in a temporary directory. Each repetition generates the same number of tokens
from the same prompt ids twice, in alternating order:

- engine: ``TransformersEngine.stream`` as the CLI and the TUI use it (model thread,
  streamer, incremental decoding, a ``TextDelta`` event per token through a queue, the
  cancel check, KV-cache bookkeeping), timed from the ``stream`` call until ``Finished``
  reaches the consuming thread. The kept cache is reset before each run so that both sides
  prefill the whole prompt.
- raw: ``model.generate`` with the same ids and no streamer, on a worker thread of its own
  like the engine's model thread. (On a busy CPU, generating on the main thread measured
  several times slower than on a second thread here, an OpenMP spin-wait effect that
  ``OMP_WAIT_POLICY=passive`` removes; so both sides run off the main thread.)

EOS cannot end either early: the model's generation config gets ``min_new_tokens`` equal to
``max_new_tokens``, which both sides read. Reports tokens/s of each and the median of the
per-repetition ratios engine/raw. Prints one JSON object; not part of the tests.
Run: ``python benchmarks/stream_overhead.py``.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mixchat.config import Settings
from mixchat.conversation import Message, Role
from mixchat.engine.base import Failed, Finished, GenerationParams, TextDelta, Usage
from mixchat.engine.transformers import TransformersEngine
from mixchat.testing.models import build_tiny_mixtral

PROMPT = "Describe the harbour at dawn: the boats, the gulls, the tide and the light."


def run_engine(
    engine: TransformersEngine, messages: list[Message], params: GenerationParams
) -> tuple[float, int, int]:
    """Seconds from ``stream`` to ``Finished``, completion tokens, and text deltas seen."""
    engine.reset_cache()
    started = time.perf_counter()
    deltas = tokens = 0
    for event in engine.stream(messages, None, params, threading.Event()):
        if isinstance(event, TextDelta):
            deltas += 1
        elif isinstance(event, Usage):
            tokens = event.completion_tokens
        elif isinstance(event, Finished):
            break
        elif isinstance(event, Failed):
            raise SystemExit(f"generation failed: {event.message}")
    return time.perf_counter() - started, tokens, deltas


def run_raw(model: object, prompt_ids: list[int], tokens: int) -> tuple[float, int]:
    """Seconds for a bare greedy ``generate`` of ``tokens`` tokens, and the count made."""
    import torch

    input_ids = torch.tensor([prompt_ids])
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(  # type: ignore[attr-defined]
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=2,
            eos_token_id=[2],
        )
    return time.perf_counter() - started, out.shape[1] - len(prompt_ids)


def main() -> None:
    """Run the interleaved repetitions and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    params = GenerationParams(temperature=0, max_new_tokens=args.tokens)
    messages = [Message(Role.USER, PROMPT)]
    begun = time.perf_counter()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_mixtral(Path(tmp) / "model", hidden_size=256, layers=4, experts=8)
        engine = TransformersEngine(Settings(model=str(model_dir)))
        try:
            list(engine.load())
            model = engine._model  # the same weights for both sides; idle between jobs
            model.generation_config.min_new_tokens = args.tokens  # EOS cannot end a run early
            prompt_ids = engine.load_tokenizer().build(messages, None, args.tokens).ids
            raw_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-generate")

            def raw() -> tuple[float, int]:
                return raw_thread.submit(run_raw, model, prompt_ids, args.tokens).result()

            run_engine(engine, messages, params)  # warm up both paths
            raw()
            engine_s, raw_s, ratios, deltas = [], [], [], []
            for rep in range(args.repeats):
                pair = {}
                for side in ("engine", "raw") if rep % 2 == 0 else ("raw", "engine"):
                    if side == "engine":
                        seconds, made, seen = run_engine(engine, messages, params)
                        deltas.append(seen)
                    else:
                        seconds, made = raw()
                    if made != args.tokens:
                        raise SystemExit(f"{side} made {made} tokens, not {args.tokens}")
                    pair[side] = args.tokens / seconds
                engine_s.append(pair["engine"])
                raw_s.append(pair["raw"])
                ratios.append(pair["engine"] / pair["raw"])
            raw_thread.shutdown()
        finally:
            engine.close()
    print(
        json.dumps(
            {
                "benchmark": "stream_overhead",
                "model": "random Mixtral: hidden 256, 4 layers, 8 experts (2 active), fp32, CPU",
                "level": "engine (TransformersEngine.stream) vs bare model.generate, in-process",
                "prompt_tokens": len(prompt_ids),
                "new_tokens": args.tokens,
                "repeats": args.repeats,
                "text_deltas_per_run": statistics.median(deltas),
                "engine_tokens_per_s": round(statistics.median(engine_s), 2),
                "raw_tokens_per_s": round(statistics.median(raw_s), 2),
                "ratio_engine_over_raw_median": round(statistics.median(ratios), 4),
                "ratios": [round(r, 4) for r in ratios],
                "load_average_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],
                "elapsed_s": round(time.perf_counter() - begun, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
