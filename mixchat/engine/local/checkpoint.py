"""Reading a safetensors checkpoint: its shards, their headers (no torch needed), and its
tensors one at a time with progress in bytes."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixchat.engine.local.progress import ProgressCallback, ProgressReporter, amount


@dataclass(frozen=True)
class Summary:
    """What a checkpoint holds, from its headers."""

    shards: list[Path]
    tensors: int
    parameters: int
    bytes: int


def shard_files(model_dir: Path) -> list[Path]:
    """The checkpoint's shards: those the index names, else every ``*.safetensors``."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [model_dir / name for name in sorted(set(weight_map.values()))]
    return sorted(model_dir.glob("*.safetensors"))


def read_header(shard: Path) -> dict[str, Any]:
    """A shard's header: tensor name -> ``{"dtype", "shape", "data_offsets"}``."""
    with shard.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header: dict[str, Any] = json.loads(handle.read(size))
    header.pop("__metadata__", None)
    return header


def summarize(model_dir: Path, shards: list[Path] | None = None) -> Summary:
    """Count tensors, parameters and bytes from the headers (raises ``OSError`` /
    ``ValueError`` / ``struct.error`` for an unreadable shard)."""
    shards = shard_files(model_dir) if shards is None else shards
    tensors = parameters = size = 0
    for shard in shards:
        for meta in read_header(shard).values():
            tensors += 1
            parameters += math.prod(meta["shape"])
            start, stop = meta["data_offsets"]
            size += stop - start
    return Summary(shards, tensors, parameters, size)


def iter_tensors(
    shards: list[Path], progress: ProgressCallback | None = None
) -> Iterator[tuple[Any, str]]:
    """``(open shard handle, tensor name)`` for every tensor, shard by shard; after each
    one is consumed, progress (stage ``weights``) advances by its bytes."""
    from safetensors import safe_open

    headers = [read_header(shard) for shard in shards]
    sizes = [
        {k: m["data_offsets"][1] - m["data_offsets"][0] for k, m in h.items()} for h in headers
    ]
    total_tensors = sum(len(h) for h in headers)
    reporter = ProgressReporter(progress, "weights", sum(sum(s.values()) for s in sizes))
    reporter.start(f"shard 1/{len(shards)}, tensor 0/{total_tensors}")
    count = 0
    for number, (shard, size) in enumerate(zip(shards, sizes, strict=True), start=1):
        with safe_open(str(shard), framework="pt", device="cpu") as handle:
            for key in handle.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                yield handle, key
                count += 1
                done = reporter.done + size.get(key, 0)
                reporter.advance(
                    size.get(key, 0),
                    f"shard {number}/{len(shards)}, tensor {count}/{total_tensors}, "
                    f"{amount(done, reporter.total)}",
                )
