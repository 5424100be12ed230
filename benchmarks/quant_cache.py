"""Load time and bytes read: a quantized Mixtral from its quantized cache, against a fresh
load that reads the bf16 checkpoint and quantizes it, in one run.

Builds a small random-weight Mixtral whose experts are Mixtral-wide in proportion (hidden
1024, experts 3584 wide = 3.5x, 8 experts, 4 layers, vocab 4096; bf16 on disk as the hub's
is) and loads it on the CPU with ``--4bit`` (and ``--8bit``), for the two storage formats:
the CPU kernels' int4/int8 packs (what a CPU, or experts in system RAM, run) and
bitsandbytes' NF4/int8 (what a GPU runs; quantized here on the CPU). Each repetition evicts
the files from the page cache (``posix_fadvise(DONTNEED)``), then times a fresh quantizing
load and a load from the cache, alternating. Bytes read are the files each load opens and,
measured, the ``read_bytes`` of ``/proc/self/io`` (what came from the disk). The first load
with the cache on also writes the entry: its extra time is ``write_s``.

Prints one JSON object. Not part of the tests. Run: ``python benchmarks/quant_cache.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from mixchat.engine.local.placement import Placement
from mixchat.engine.local.quant_cache import QuantCache
from mixchat.engine.local.quantized import load_quantized_mixtral
from tests.engine.test_quant import build_mixtral_checkpoint, logits, prompts

SHAPE = {"vocab": 4096, "hidden": 1024, "intermediate": 3584, "layers": 4, "experts": 8}


def read_bytes() -> int | None:
    """Bytes this process has had read from storage (None where the kernel does not say)."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from the page cache, so the next load reads the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed_load(
    model_dir: Path, mode: str, kernels: str, cache: QuantCache | None, keep: bool = False
) -> dict[str, Any]:
    gc.collect()
    before, start = read_bytes(), time.perf_counter()
    model = load_quantized_mixtral(
        model_dir, mode, torch.float32, "cpu", cpu_kernels=kernels == "cpu", cache=cache
    )
    seconds = time.perf_counter() - start
    after = read_bytes()
    delta = None if before is None or after is None else after - before
    result: dict[str, Any] = {"seconds": seconds, "read_bytes": delta}
    result["logits"] = logits(model, prompts(SHAPE["vocab"]))
    if keep:
        result["model"] = model
    return result


def run(mode: str, kernels: str, model_dir: Path, repeat: int, where: Path) -> dict[str, Any]:
    shards = sorted(model_dir.glob("*.safetensors"))
    notices: list[str] = []
    cache = QuantCache(
        model_dir, mode, "float32", True, notices.append, where / f"{mode}-{kernels}"
    )
    first = timed_load(model_dir, mode, kernels, None, keep=True)
    layers = first["model"].config.num_hidden_layers
    start = time.perf_counter()  # what the first quantized load adds: writing the entry
    cache.save(first.pop("model"), Placement.single("cpu", layers), kernels == "cpu", None)
    write_s = time.perf_counter() - start
    (entry,) = cache.where.glob("*.safetensors")
    fresh, cached = [], []
    for _ in range(repeat):
        evict(shards)
        fresh.append(timed_load(model_dir, mode, kernels, None))
        evict([entry])
        cached.append(timed_load(model_dir, mode, kernels, cache))
    assert not notices, notices
    for got in cached:  # the same model, bit for bit
        assert torch.equal(got["logits"], fresh[0]["logits"])
    fresh_s = statistics.median(r["seconds"] for r in fresh)
    cached_s = statistics.median(r["seconds"] for r in cached)
    ratios = [c["seconds"] / f["seconds"] for f, c in zip(fresh, cached, strict=True)]
    return {
        "mode": mode,
        "format": "CPU kernels" if kernels == "cpu" else "bitsandbytes",
        "fresh_load_s": round(fresh_s, 3),
        "cached_load_s": round(cached_s, 3),
        "cached_over_fresh": round(cached_s / fresh_s, 3),
        "median_pair_ratio": round(statistics.median(ratios), 3),
        "write_s": round(write_s, 3),
        "checkpoint_bytes": sum(p.stat().st_size for p in shards),
        "cache_bytes": entry.stat().st_size,
        "fresh_read_bytes": statistics.median(r["read_bytes"] or 0 for r in fresh),
        "cached_read_bytes": statistics.median(r["read_bytes"] or 0 for r in cached),
        "logits_equal": True,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layers", type=int, default=SHAPE["layers"])
    parser.add_argument("--modes", default="4bit,8bit")
    args = parser.parse_args()
    shape = {**SHAPE, "layers": args.layers}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_mixtral_checkpoint(Path(tmp) / "model", **shape, max_shard_size="200MB")
        # A first load in this process imports and warms up everything once.
        load_quantized_mixtral(model_dir, "8bit", torch.float32, "cpu")
        for mode in args.modes.split(","):
            for kernels in ("cpu", "bnb"):
                results.append(run(mode, kernels, model_dir, args.repeat, Path(tmp) / "cache"))
    print(
        json.dumps(
            {
                "model": shape,
                "torch_threads": torch.get_num_threads(),
                "repeat": args.repeat,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
