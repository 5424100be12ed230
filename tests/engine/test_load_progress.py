"""Load progress moves (issue 11, item 17): shards, tensors and bytes read, for the stock
load and the quantized one, monotonic and reaching its total."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixchat.commands.ask import progress_line
from mixchat.config import Settings
from mixchat.engine.base import LoadProgress
from mixchat.engine.local.checkpoint import summarize
from mixchat.engine.local.loader import load_model
from mixchat.engine.local.progress import ProgressReporter
from tests.engine.test_quant import build_mixtral_checkpoint


def weights(events: list[LoadProgress]) -> list[LoadProgress]:
    return [e for e in events if e.stage == "weights"]


def assert_moves_to_the_end(events: list[LoadProgress]) -> None:
    assert len(events) >= 3, events
    done = [e.done for e in events]
    assert done == sorted(done) and len(set(done)) == len(done)  # never back, never repeated
    assert {e.total for e in events} == {events[-1].total}  # one unit for the whole stage
    assert done[0] == 0 and done[-1] == events[-1].total > 0
    assert len(events) <= 102  # about once per percent, not once per tensor


def test_the_stock_load_counts_tensors(tiny_model: Path) -> None:
    events: list[LoadProgress] = []
    load_model(tiny_model, Settings(model=str(tiny_model)), events.append, lambda _: None)
    stage = weights(events)
    assert_moves_to_the_end(stage)
    assert stage[-1].detail.startswith(f"tensor {stage[-1].total}/{stage[-1].total} of ")
    assert stage[-1].detail.endswith(" MB")  # the checkpoint's size


@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_the_quantized_load_counts_bytes_shards_and_tensors(tmp_path: Path, mode: str) -> None:
    model_dir = build_mixtral_checkpoint(
        tmp_path / "sharded",
        vocab=512,
        hidden=128,
        intermediate=256,
        layers=3,
        experts=4,
        max_shard_size="500KB",
    )
    summary = summarize(model_dir)
    assert len(summary.shards) >= 3
    events: list[LoadProgress] = []
    settings = Settings(model=str(model_dir), quantization=mode)
    load_model(model_dir, settings, events.append, lambda _: None)
    stage = weights(events)
    assert_moves_to_the_end(stage)
    assert stage[-1].total == summary.bytes  # bytes of tensor data in the shards
    shards = len(summary.shards)
    assert stage[-1].detail.startswith(f"shard {shards}/{shards}, tensor {summary.tensors}/")
    seen = [int(e.detail.split("/")[0].removeprefix("shard ")) for e in stage]
    assert seen == sorted(seen) and seen[0] == 1 and seen[-1] == shards


def test_the_engine_passes_progress_on(tiny_model: Path) -> None:
    from mixchat.engine.transformers import TransformersEngine

    engine = TransformersEngine(Settings(model=str(tiny_model), quantization="4bit"))
    try:
        events = [e for e in engine.load() if isinstance(e, LoadProgress)]
    finally:
        engine.close()
    assert [e.stage for e in events[:3]] == ["resolve", "tokenizer", "tokenizer"]
    assert_moves_to_the_end(weights(events))


def test_the_reporter_is_monotonic_bounded_and_sparse() -> None:
    events: list[LoadProgress] = []
    reporter = ProgressReporter(events.append, "weights", 10_000)
    reporter.start()
    for _ in range(10_000):
        reporter.advance(1)
    reporter.advance(50)  # more than announced: held at the total
    assert_moves_to_the_end(events)
    assert events[-1].done == 10_000
    silent = ProgressReporter(None, "weights", 5)  # no callback: nothing breaks
    silent.advance(5)
    assert silent.done == 5


def test_ask_prints_one_readable_line() -> None:
    line = progress_line(LoadProgress("weights", 42, 100, "shard 2/19, tensor 410/995"))
    assert line == "loading weights 42% (shard 2/19, tensor 410/995)"
    assert progress_line(LoadProgress("tokenizer", 0, 1)) == "loading tokenizer 0%"
    found = progress_line(LoadProgress("resolve", 0, 1, "evil\x1b]0;title\x07/model"))
    assert found.startswith("finding ") and "\x1b" not in found and "\x07" not in found
