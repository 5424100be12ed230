"""The quantized-weights cache (issue 14, section 2): a second quantized load reads the
packed weights back instead of quantizing, bit for bit the same model; an entry that is
stale, truncated, damaged, foreign or for other settings is ignored and rebuilt.

On the CPU: the CPU kernels' int4/int8 packs, and bitsandbytes' NF4/int8 (what a GPU runs,
here on the CPU), with experts in "system RAM" beside bitsandbytes attention too."""

from __future__ import annotations

import json
import os
import stat
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from mixchat.config import Settings
from mixchat.engine.local import hardware
from mixchat.engine.local.placement import Placement
from mixchat.engine.local.quant_cache import QuantCache, directory, usage
from mixchat.engine.local.quantized import load_quantized_mixtral
from tests.engine.test_quant import build_mixtral_checkpoint, logits, prompts

SHAPE = {"vocab": 512, "hidden": 128, "intermediate": 256, "layers": 2, "experts": 4}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mixtral_checkpoint(tmp_path_factory.mktemp("cache-mixtral"), **SHAPE)


class Load:
    """Quantized loads of one checkpoint through one cache directory, recording what the
    cache said and whether the checkpoint was read."""

    def __init__(self, model_dir: Path, where: Path, mode: str, kernels: str) -> None:
        self.model_dir, self.where, self.mode, self.kernels = model_dir, where, mode, kernels
        self.notices: list[str] = []
        self.stages: list[str] = []

    def __call__(self, device: Any = "cpu", double_quant: bool = True) -> Any:
        self.notices.clear()
        self.stages.clear()
        cache = QuantCache(
            self.model_dir, self.mode, "float32", double_quant, self.notices.append, self.where
        )
        return load_quantized_mixtral(
            self.model_dir,
            self.mode,
            torch.float32,
            device,
            double_quant=double_quant,
            progress=lambda e: self.stages.append(f"{e.stage}:{e.detail.split(',')[0]}"),
            cpu_kernels=self.kernels == "cpu",
            cache=cache,
        )

    @property
    def from_cache(self) -> bool:
        """Loaded from the cache alone: the checkpoint's shards were not read."""
        read_checkpoint = any(s.startswith("weights:shard") for s in self.stages)
        return not read_checkpoint and any("from the quantized cache" in s for s in self.stages)

    @property
    def wrote(self) -> bool:
        return any(s.startswith("quantized cache:") for s in self.stages)

    def entry(self) -> Path:
        (path,) = sorted(self.where.glob("*.safetensors"))
        return path


def same_model(a: Any, b: Any) -> None:
    ids = prompts(SHAPE["vocab"])
    assert torch.equal(logits(a, ids), logits(b, ids))  # bit for bit
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].dtype == sb[name].dtype and torch.equal(sa[name], sb[name]), name


@pytest.mark.parametrize(
    ("mode", "kernels"),
    [("4bit", "cpu"), ("8bit", "cpu"), ("4bit", "bnb"), ("8bit", "bnb")],
)
def test_a_cached_load_equals_a_fresh_quantizing_one_bit_for_bit(
    checkpoint: Path, tmp_path: Path, mode: str, kernels: str
) -> None:
    load = Load(checkpoint, tmp_path / "q", mode, kernels)
    fresh = load()
    assert load.wrote and not load.from_cache and not load.notices
    entry = load.entry()
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert not [p for p in entry.parent.iterdir() if p != entry]  # no temporary left
    cached = load()
    assert load.from_cache and not load.wrote and not load.notices
    same_model(fresh, cached)
    again = Load(checkpoint, tmp_path / "other", mode, kernels)
    same_model(again(), cached)  # and what a cache-less load quantizes


def test_experts_in_ram_beside_bitsandbytes_attention_round_trip(
    checkpoint: Path, tmp_path: Path
) -> None:
    # The CPU-experts layout of a 24 GB card: layer 1's experts in RAM (CPU kernels),
    # everything else bitsandbytes; both "devices" are the CPU here.
    placement = Placement(("cpu", "cpu"), "cpu", cpu_experts=(1,))
    load = Load(checkpoint, tmp_path / "q", "4bit", "bnb")
    fresh = load(placement)
    cached = load(placement)
    assert load.from_cache
    same_model(fresh, cached)
    # Another placement stores other formats: its own entry, not this one.
    load(Placement(("cpu", "cpu"), "cpu"))
    assert not load.from_cache and len(list((tmp_path / "q").glob("*.safetensors"))) == 2


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    (size,) = struct.unpack("<Q", data[:8])
    if how == "truncated":
        del data[len(data) // 2 :]
    elif how == "flipped":  # one bit in the middle of the tensors
        middle = 8 + size + (len(data) - 8 - size) // 2
        data[middle] ^= 0x10
    elif how == "garbage":
        data = bytearray(os.urandom(len(data)))
    elif how == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("truncated", "unreadable"),
        ("flipped", "damaged"),
        ("garbage", "unreadable"),
        ("empty", "unreadable"),
    ],
)
def test_a_damaged_entry_is_ignored_and_rebuilt(
    checkpoint: Path, tmp_path: Path, how: str, says: str
) -> None:
    load = Load(checkpoint, tmp_path / "q", "4bit", "cpu")
    fresh = load()
    damage(load.entry(), how)
    rebuilt = load()
    assert not load.from_cache and load.wrote
    assert len(load.notices) == 1 and says in load.notices[0], load.notices
    assert "quantizing again" in load.notices[0]
    same_model(fresh, rebuilt)
    load()
    assert load.from_cache and not load.notices  # the rebuilt entry is good


def test_a_foreign_safetensors_file_in_the_slot_is_ignored(
    checkpoint: Path, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    load = Load(checkpoint, tmp_path / "q", "4bit", "cpu")
    load()
    entry = load.entry()
    save_file({"weight": torch.zeros(3)}, str(entry), metadata={"format": "pt"})
    load()
    assert not load.from_cache and load.wrote
    assert load.notices and "unreadable" not in load.notices[0]


def test_an_entry_for_another_checkpoint_or_library_is_stale(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "model"
    copy.mkdir()
    for path in checkpoint.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    load = Load(copy, tmp_path / "q", "8bit", "cpu")
    load()
    shard = sorted(copy.glob("*.safetensors"))[0]
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    load()
    assert not load.from_cache and load.wrote
    stale = "is out of date (the checkpoint changed); quantizing again"
    assert load.notices == [f"the quantized cache {load.entry()} {stale}"]
    load()
    assert load.from_cache
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: "999.0" if name == "bitsandbytes" else real(name),
    )
    load()
    assert not load.from_cache and "torch, bitsandbytes or transformers changed" in load.notices[0]


def test_an_entry_with_a_tensor_of_the_wrong_shape_is_refused(
    checkpoint: Path, tmp_path: Path
) -> None:
    # A well-formed file with the right key whose tensors do not fit the modules (as if
    # written by a buggy build): the shapes are checked, not only the checksums.
    from mixchat.engine.local import tensorfile

    load = Load(checkpoint, tmp_path / "q", "4bit", "cpu")
    load()
    entry = load.entry()
    reader = tensorfile.Reader(entry)
    metadata = {k: v for k, v in reader.metadata.items() if k != tensorfile.CHECKSUMS}
    tensors = {n: reader.tensor(n).clone() for n in reader.names()}
    reader.close()
    name = next(n for n in tensors if n.endswith("experts.gate_up_packed"))
    tensors[name] = tensors[name][:, :-1]
    tensorfile.write(entry, tensors.items(), metadata)
    load()
    assert not load.from_cache and load.notices and "for another model" in load.notices[0]


def test_no_room_on_the_disk_skips_the_cache_with_a_notice(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hardware, "free_disk", lambda path: 10**6)
    load = Load(checkpoint, tmp_path / "q", "4bit", "cpu")
    load()
    assert not load.wrote and not (tmp_path / "q").exists()
    assert load.notices and "not keeping the quantized weights" in load.notices[0]


def test_the_setting_turns_it_off_and_doctor_shows_where_and_how_much(
    checkpoint: Path, mixchat_home: Path
) -> None:
    from mixchat.commands.doctor import render
    from mixchat.engine.local.loader import load_model
    from mixchat.engine.local.report import diagnose

    settings = Settings(model=str(checkpoint), quantization="4bit", quant_cache=False)
    load_model(checkpoint, settings, lambda e: None, lambda m: None)
    assert usage() == (0, 0)
    notices: list[str] = []
    load_model(checkpoint, replace(settings, quant_cache=True), lambda e: None, notices.append)
    assert not notices
    entries, size = usage()
    assert entries == 1 and size == sum(p.stat().st_size for p in directory().iterdir())
    assert directory().is_relative_to(mixchat_home)
    report = diagnose(settings, hardware.assumed([], 64 << 30))
    assert report.quant_cache_dir == str(directory())
    assert report.quant_cache_entries == 1 and report.quant_cache_bytes == size
    text = render(report)
    assert f"quant cache   {directory()} (1 entry, " in text
    assert "delete it to clear" in text


def test_the_entry_metadata_names_what_it_was_made_for(checkpoint: Path, tmp_path: Path) -> None:
    from mixchat.engine.local import tensorfile

    load = Load(checkpoint, tmp_path / "q", "4bit", "cpu")
    load()
    reader = tensorfile.Reader(load.entry())
    key = json.loads(reader.metadata["key"])
    reader.close()
    assert key["settings"]["mode"] == "4bit" and key["settings"]["layers"] == ["cpu/cpu"] * 2
    assert [f[0] for f in key["checkpoint"]["files"]] == sorted(
        p.name for p in checkpoint.glob("*.safetensors")
    )
