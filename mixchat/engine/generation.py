"""One reply with ``model.generate``: stopping on cancel, streaming decoded text, and
reusing the conversation's KV cache for the prompt prefix it already covers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mixchat.config import GREEDY_BELOW
from mixchat.engine.base import FinishReason, GenerationParams
from mixchat.engine.kvcache import PrefixCache
from mixchat.engine.tokenizer import ChatTokenizer

# A continuation's text is decoded after this many of the prompt's last ids.
CONTEXT_IDS = 4


@dataclass
class GenerateResult:
    """How a reply ended and how fast it came."""

    reason: FinishReason
    completion_tokens: int
    ttft_s: float | None
    duration_s: float
    tokens_per_s: float | None
    cached_tokens: int = 0  # prompt tokens whose keys and values came from the cache


def sampling_kwargs(params: GenerationParams) -> dict[str, Any]:
    """``generate`` arguments for ``params``; a temperature below ``GREEDY_BELOW`` (0
    included) is greedy decoding: dividing logits by a tinier one overflows to inf/nan."""
    if params.temperature < GREEDY_BELOW:
        kwargs: dict[str, Any] = {
            "do_sample": False,
            "temperature": None,
            "top_p": None,
            "top_k": None,
        }
    else:
        kwargs = {
            "do_sample": True,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k or None,
        }
    if params.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = params.repetition_penalty
    return kwargs


def run_generate(
    model: Any,
    tokenizer: ChatTokenizer,
    prompt_ids: Sequence[int],
    params: GenerationParams,
    cancel: threading.Event,
    started: float,
    on_text: Callable[[str], None],
    kv_cache: PrefixCache | None = None,
    continuing: bool = False,
) -> GenerateResult:
    """Generate a reply to ``prompt_ids``, calling ``on_text`` with each decoded delta.

    ``continuing``: the prompt ends inside a reply (no end-of-turn marker) and the text is
    its continuation, decoded after the prompt's last ids so that leading spaces survive.

    With ``kv_cache`` the prompt's longest prefix already in the cache is not computed
    again, and afterwards the cache covers the prompt and the reply (minus its last token,
    which was never fed through the model). If ``generate`` raises, the cache is discarded.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    eos_ids = tokenizer.eos_ids
    decoder = tokenizer.decoder(prompt_ids[-CONTEXT_IDS:] if continuing else ())
    state: dict[str, Any] = {"first": None, "count": 0, "last": None, "prompt_seen": False}

    class Streamer(BaseStreamer):
        def put(self, value: Any) -> None:
            if not state["prompt_seen"]:  # generate() first hands over the prompt
                state["prompt_seen"] = True
                return
            ids: list[int] = value.reshape(-1).tolist()
            now = time.perf_counter()
            if state["first"] is None:
                state["first"] = now
            state["count"] += len(ids)
            state["last"] = ids[-1]
            text = decoder.push([i for i in ids if i not in eos_ids])
            if text:
                on_text(text)

        def end(self) -> None:
            text = decoder.flush()
            if text:
                on_text(text)

    device = next(model.parameters()).device
    # Stopping criteria are OR-ed into a fresh tensor each step, so one shared (never
    # mutated) answer per state is enough: no allocation per token.
    not_cancelled = torch.zeros(1, dtype=torch.bool, device=device)
    cancelled = torch.ones(1, dtype=torch.bool, device=device)

    class StopOnCancel(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return cancelled if cancel.is_set() else not_cancelled

    input_ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    if params.seed is not None:
        torch.manual_seed(params.seed)
    pad = next(iter(eos_ids)) if eos_ids else None
    try:
        with torch.inference_mode():  # the cache's tensors are inference tensors: crop them here
            past, reused = (None, 0) if kv_cache is None else kv_cache.prepare(model, prompt_ids)
            # ``cache``, not ``past_key_values``: transformers warns on every call of the old
            # name (it goes away in 5.40 for forward, 6.0 for generate).
            cache_kwargs = {"cache": past} if past is not None else {}
            sequence = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=params.max_new_tokens,
                stopping_criteria=StoppingCriteriaList([StopOnCancel()]),
                streamer=Streamer(),
                pad_token_id=pad,
                eos_token_id=sorted(eos_ids) or None,
                **cache_kwargs,
                **sampling_kwargs(params),
            )
    except BaseException:
        if kv_cache is not None:
            kv_cache.discard()  # a layer may hold states the others lack
        raise
    end = time.perf_counter()
    if kv_cache is not None:
        kv_cache.commit(sequence[0].tolist())
    count = state["count"]
    first = state["first"]
    if cancel.is_set():
        reason: FinishReason = "cancelled"
    elif state["last"] in eos_ids:
        reason = "stop"
    else:
        reason = "length"
    rate = (count - 1) / (end - first) if first is not None and count > 1 and end > first else None
    return GenerateResult(
        reason=reason,
        completion_tokens=count,
        ttft_s=(first - started) if first is not None else None,
        duration_s=end - started,
        tokens_per_s=rate,
        cached_tokens=reused,
    )
