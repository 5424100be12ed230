"""One reply with ``model.generate``: stopping on cancel, streaming decoded text."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mixchat.engine.base import FinishReason, GenerationParams
from mixchat.engine.tokenizer import ChatTokenizer


@dataclass
class GenerateResult:
    """How a reply ended and how fast it came."""

    reason: FinishReason
    completion_tokens: int
    ttft_s: float | None
    duration_s: float
    tokens_per_s: float | None


def sampling_kwargs(params: GenerationParams) -> dict[str, Any]:
    """``generate`` arguments for ``params``; temperature 0 is greedy decoding."""
    if params.temperature <= 0:
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
) -> GenerateResult:
    """Generate a reply to ``prompt_ids``, calling ``on_text`` with each decoded delta."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    eos_ids = tokenizer.eos_ids
    decoder = tokenizer.decoder()
    state: dict[str, Any] = {"first": None, "count": 0, "last": None, "prompt_seen": False}

    class Streamer(BaseStreamer):
        def put(self, value: Any) -> None:
            if not state["prompt_seen"]:  # generate() first hands over the prompt
                state["prompt_seen"] = True
                return
            ids = [int(i) for i in value.reshape(-1).tolist()]
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

    class StopOnCancel(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full(
                (input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device
            )

    device = next(model.parameters()).device
    input_ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    if params.seed is not None:
        torch.manual_seed(params.seed)
    pad = next(iter(eos_ids)) if eos_ids else None
    with torch.inference_mode():
        model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=params.max_new_tokens,
            stopping_criteria=StoppingCriteriaList([StopOnCancel()]),
            streamer=Streamer(),
            pad_token_id=pad,
            eos_token_id=sorted(eos_ids) or None,
            **sampling_kwargs(params),
        )
    end = time.perf_counter()
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
    )
