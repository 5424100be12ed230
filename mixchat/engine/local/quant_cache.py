"""The quantized-weights cache: a quantized Mixtral's packed weights kept on disk after the
first quantized load, so the next start reads ~25 GB (NF4) instead of the 93 GB checkpoint
and skips quantizing.

One file per model and settings in ``<cache dir>/quantized/`` (``paths.cache_dir()``): a
safetensors file (``tensorfile.py``: written atomically, 0600, a CRC-32 per tensor) of the
model's state dict as it is after quantization: bitsandbytes' NF4 / int8 buffers and quant
states, the CPU kernels' int4 / int8 packs, and the unquantized embeddings, norms, router
and head. Its metadata holds the key it was made for: the checkpoint's fingerprint (each
shard's size, modification time and content-addressed blob name; a SHA-256 of
``config.json`` and of the shard index), the quantization settings, the storage format of
each layer (which follows from the placement: bitsandbytes on a GPU, the CPU kernels in
system RAM) and the versions of torch, bitsandbytes and transformers. A file whose key
differs (stale), that cannot be read (truncated, foreign), whose tensors fail their
checksums (damaged) or do not fit the model's modules is ignored with a notice and
rebuilt; it never crashes a load or gives wrong weights.

``quant_cache = false`` (``--no-quant-cache``) turns it off; deleting the directory clears
it (``mixchat doctor`` shows where it is and how big). torch is imported inside functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mixchat import paths
from mixchat.engine.local.progress import ProgressCallback, ProgressReporter, amount

FORMAT = "mixchat-quantized/1"
SUFFIX = ".safetensors"
RESERVE = 1 << 30  # left free on the disk after writing an entry
Notice = Callable[[str], None]


# What bitsandbytes' Linear4bit puts in a state dict (NF4; double quantization adds more).
NF4_KEYS = {"weight", "weight.absmax", "weight.quant_map", "weight.quant_state.bitsandbytes__nf4"}
NESTED_KEYS = {"weight.nested_absmax", "weight.nested_quant_map"}


class CacheInvalid(Exception):
    """An entry cannot be used; the message says why, in a few words."""


def directory() -> Path:
    """Where quantized weights are kept."""
    return paths.cache_dir() / "quantized"


def usage(where: Path | None = None) -> tuple[int, int]:
    """(entries, bytes) of the cache (``mixchat doctor`` shows them)."""
    entries = size = 0
    with contextlib.suppress(OSError):
        for entry in (where or directory()).glob(f"*{SUFFIX}"):
            with contextlib.suppress(OSError):
                size += entry.stat().st_size
                entries += 1
    return entries, size


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def fingerprint(model_dir: Path) -> dict[str, Any]:
    """What identifies a checkpoint without reading its 93 GB: each shard's name, the name
    of the file it links to (a hub blob is named by its content's hash), size and
    modification time; a hash of ``config.json`` and of the shard index."""
    from mixchat.engine.local.checkpoint import shard_files

    files = []
    for shard in shard_files(model_dir):
        stat = shard.stat()
        files.append(
            [shard.name, Path(os.path.realpath(shard)).name, stat.st_size, stat.st_mtime_ns]
        )
    return {
        "files": files,
        "config": _sha256(model_dir / "config.json"),
        "index": _sha256(model_dir / "model.safetensors.index.json"),
    }


def layer_formats(placement: Any, cpu_kernels: bool) -> list[str]:
    """How each layer's experts and attention are stored (``cpu`` for the CPU kernels'
    packs, ``bnb:cuda`` for bitsandbytes on a GPU): what a placement changes in the bytes.
    Which GPU a layer is on does not matter; the cache moves it there."""
    formats = []
    for index, device in enumerate(placement.layers):
        kind = device.partition(":")[0]
        on_cpu = cpu_kernels and kind == "cpu"
        experts = "cpu" if on_cpu or index in placement.cpu_experts else f"bnb:{kind}"
        formats.append(f"{experts}/{'cpu' if on_cpu else f'bnb:{kind}'}")
    return formats


def _identity(model_dir: Path) -> str:
    """The model, whatever its version: a hub snapshot counts as its repository, so a new
    commit replaces the old entry instead of adding one."""
    resolved = model_dir.resolve()
    if resolved.parent.name == "snapshots" and resolved.parent.parent.name.startswith("models--"):
        return str(resolved.parent.parent)
    return str(resolved)


class QuantCache:
    """The cache entry of one model loaded with one set of quantization settings."""

    def __init__(
        self,
        model_dir: Path,
        mode: str,
        compute_dtype: str,
        double_quant: bool,
        notice: Notice,
        where: Path | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.settings: dict[str, Any] = {
            "mode": mode,
            "compute_dtype": compute_dtype,
            "double_quant": double_quant if mode == "4bit" else None,
        }
        self.notice = notice
        self.where = where or directory()

    def key(self, placement: Any, cpu_kernels: bool) -> dict[str, Any]:
        """Everything the cached bytes depend on."""
        return {
            "format": FORMAT,
            "settings": {**self.settings, "layers": layer_formats(placement, cpu_kernels)},
            "checkpoint": fingerprint(self.model_dir),
            "versions": {p: _version(p) for p in ("torch", "bitsandbytes", "transformers")},
        }

    def path(self, key: dict[str, Any]) -> Path:
        """The entry's file: one per model and settings (a stale one is replaced)."""
        slot = json.dumps([_identity(self.model_dir), key["settings"]], sort_keys=True)
        return self.where / (hashlib.sha256(slot.encode()).hexdigest()[:32] + SUFFIX)

    def load(
        self,
        skeleton: Callable[[], Any],
        placement: Any,
        cpu_kernels: bool,
        progress: ProgressCallback | None,
    ) -> Any | None:
        """The model filled from the cache (``skeleton()`` builds it empty), or ``None``
        when there is no usable entry (a notice says why, unless there is none)."""
        key = self.key(placement, cpu_kernels)
        path = self.path(key)
        if not path.is_file():
            return None
        from mixchat.engine.local.tensorfile import Reader, TensorFileError

        try:
            reader = Reader(path)
        except TensorFileError as exc:
            self._discard(path, str(exc))
            return None
        try:
            _check_key(reader.metadata, key)
            model = skeleton()
            _restore(model, reader, placement, progress)
            return model
        except (CacheInvalid, TensorFileError) as exc:
            self._discard(path, str(exc))
            return None
        finally:
            reader.close()

    def _discard(self, path: Path, reason: str) -> None:
        self.notice(f"the quantized cache {path} is {reason}; quantizing again")
        with contextlib.suppress(OSError):
            path.unlink()

    def save(
        self, model: Any, placement: Any, cpu_kernels: bool, progress: ProgressCallback | None
    ) -> None:
        """Write ``model``'s quantized weights for the next start (a notice, not an error,
        when the disk has no room or the write fails)."""
        from mixchat.engine.local import hardware, tensorfile

        key = self.key(placement, cpu_kernels)
        path = self.path(key)
        state = model.state_dict()
        size = sum(t.numel() * t.element_size() for t in state.values())
        free = hardware.free_disk(self.where)
        if free is not None and size + RESERVE > free:
            self.notice(
                f"not keeping the quantized weights for faster starts: they need "
                f"{amount(size, size).split('/')[1]} and {self.where} has "
                f"{free / 10**9:.1f} GB free"
            )
            return
        reporter = ProgressReporter(progress, "quantized cache", size)
        reporter.start("writing it for faster starts")
        metadata = {"format": FORMAT, "key": json.dumps(key, sort_keys=True)}
        try:
            tensorfile.write(path, state.items(), metadata, reporter.advance)
        except OSError as exc:
            self.notice(f"could not keep the quantized weights in {self.where}: {exc}")


def _check_key(metadata: dict[str, str], key: dict[str, Any]) -> None:
    """Raise ``CacheInvalid`` saying how an entry's key differs from ``key``."""
    if metadata.get("format") != FORMAT:
        raise CacheInvalid("not one of mixchat's quantized caches")
    try:
        stored = json.loads(metadata.get("key", ""))
    except ValueError:
        raise CacheInvalid("not one of mixchat's quantized caches") from None
    if not isinstance(stored, dict):
        raise CacheInvalid("not one of mixchat's quantized caches")
    for part, what in (
        ("checkpoint", "out of date (the checkpoint changed)"),
        ("versions", "out of date (torch, bitsandbytes or transformers changed)"),
        ("settings", "for other settings"),
        ("format", "in another format"),
    ):
        if stored.get(part) != json.loads(json.dumps(key[part])):
            raise CacheInvalid(what)


def _restore(model: Any, reader: Any, placement: Any, progress: ProgressCallback | None) -> None:
    """Fill the empty ``model`` with the entry's tensors, module by module, each checked
    against its checksum and the module's shapes; ``CacheInvalid`` when one does not fit."""
    from mixchat.engine.local.bnb_experts import import_bnb

    bnb = import_bnb()
    owners = _quantized_modules(model, bnb)
    parameters = {name for name, _ in model.named_parameters()}
    reporter = ProgressReporter(progress, "weights", sum(reader.sizes.values()))
    reporter.start("from the quantized cache")
    grouped: dict[str, dict[str, Any]] = {}
    for name in reader.names():
        prefix = _owner(name, owners)
        device = placement.device_of(prefix or name)
        value = reader.tensor(name).to(device, copy=True)
        if prefix is None:
            if name not in parameters:
                raise CacheInvalid(f"for another model (it holds {name})")
            _set_plain(model, name, value, device)
        else:
            grouped.setdefault(prefix, {})[name[len(prefix) + 1 :]] = value
        done = reporter.done + reader.sizes[name]
        reporter.advance(
            reader.sizes[name], f"from the quantized cache, {amount(done, reporter.total)}"
        )
    for prefix, module in owners.items():
        try:
            _restore_module(module, grouped.pop(prefix, {}), placement.device_of(prefix), bnb)
        except (ValueError, KeyError, TypeError, RuntimeError, AssertionError) as exc:
            raise CacheInvalid(f"for another model ({prefix}: {exc})") from None


def _quantized_modules(model: Any, bnb: Any) -> dict[str, Any]:
    from mixchat.engine.local.bnb_experts import QuantizedMixtralExperts
    from mixchat.engine.local.cpu_kernels import CpuQuantizedExperts, CpuQuantizedLinear

    kinds = (
        QuantizedMixtralExperts,
        CpuQuantizedExperts,
        CpuQuantizedLinear,
        bnb.nn.Linear4bit,
        bnb.nn.Linear8bitLt,
    )
    return {prefix: m for prefix, m in model.named_modules() if isinstance(m, kinds)}


def _owner(name: str, owners: dict[str, Any]) -> str | None:
    """The quantized module that tensor ``name`` belongs to, if any."""
    prefix = name
    while "." in prefix:
        prefix = prefix.rsplit(".", 1)[0]
        if prefix in owners:
            return prefix
    return None


def _set_plain(model: Any, name: str, value: Any, device: str) -> None:
    from torch import nn

    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    current = module._parameters[attr]
    if tuple(current.shape) != tuple(value.shape) or current.dtype != value.dtype:
        raise CacheInvalid(f"for another model ({name}: {tuple(value.shape)} {value.dtype})")
    module._parameters[attr] = nn.Parameter(value, requires_grad=False)


def _restore_module(module: Any, tensors: dict[str, Any], device: str, bnb: Any) -> None:
    """Put one quantized module's tensors in place (``ValueError`` when they do not fit)."""
    import torch

    from mixchat.engine.local.bnb_experts import QuantizedMixtralExperts
    from mixchat.engine.local.cpu_kernels import CpuQuantizedExperts, CpuQuantizedLinear

    if isinstance(module, (QuantizedMixtralExperts, CpuQuantizedExperts)):
        module.load_packed(tensors)
    elif isinstance(module, CpuQuantizedLinear):
        if set(tensors) != {"weight_packed", "weight_scales"}:
            raise ValueError(f"holds {sorted(tensors)}")
        module.load_packed(tensors["weight_packed"], tensors["weight_scales"])
    elif isinstance(module, bnb.nn.Linear4bit):
        if set(tensors) not in (NF4_KEYS, NF4_KEYS | NESTED_KEYS):
            raise ValueError(f"holds {sorted(tensors)}")
        stats = {k.removeprefix("weight."): v for k, v in tensors.items() if k != "weight"}
        weight = bnb.nn.Params4bit.from_prequantized(
            data=tensors["weight"], quantized_stats=stats, device=device, module=module
        )
        expected = (module.out_features, module.in_features)
        if (
            tuple(weight.quant_state.shape) != expected
            or weight.numel() * 2 != expected[0] * expected[1]
        ):
            raise ValueError(f"a {tuple(weight.quant_state.shape)} weight, not {expected}")
        module.weight = weight
    else:  # Linear8bitLt
        if set(tensors) != {"weight", "SCB", "weight_format"} or int(tensors["weight_format"]) != 0:
            raise ValueError(f"holds {sorted(tensors)}")
        cb, scb = tensors["weight"], tensors["SCB"]
        if tuple(cb.shape) != (module.out_features, module.in_features) or cb.dtype != torch.int8:
            raise ValueError(f"a {tuple(cb.shape)} {cb.dtype} weight")
        if tuple(scb.shape) != (module.out_features,):
            raise ValueError(f"{tuple(scb.shape)} scales")
        weight = bnb.nn.Int8Params(cb, requires_grad=False, has_fp16_weights=False)
        weight.CB, weight.SCB = weight.data, scb
        module.weight = weight
