"""A safetensors file written one tensor at a time, with a CRC-32 of every tensor, and read
back verified.

``safetensors.torch.save_file`` turns every tensor into bytes in memory before writing, which
for 25 GB of quantized Mixtral (on a GPU) would need 25 GB of host RAM at once. The format
is simple enough to stream: an 8-byte little-endian header length, a JSON header (name ->
dtype, shape, byte range; ``__metadata__`` holds strings), then the raw bytes. The header is
written first with fixed-width placeholder checksums, the tensors follow (copied to the CPU
one at a time), then the real checksums are written over the placeholders. The file goes
to a private temporary name (0600) in the target directory, is flushed to disk and renamed
into place, so a reader never sees a half-written file. Reading uses ``safe_open`` (the
safetensors library's own checks of the header and sizes) and compares every tensor's
CRC-32 before it is used. Imported only on the load path (it imports torch).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
CHECKSUMS = "crc32"  # the metadata key: "name=xxxxxxxx;..." in header order
PLACEHOLDER = "00000000"


class TensorFileError(Exception):
    """The file is unreadable, truncated, or a tensor's bytes do not match its checksum."""


def _raw(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes (copied to the CPU if it is elsewhere)."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    return memoryview(flat.numpy())  # type: ignore[arg-type]


def crc32(tensor: torch.Tensor) -> str:
    """The CRC-32 of a tensor's bytes, as 8 hex digits."""
    return f"{zlib.crc32(_raw(tensor)) & 0xFFFFFFFF:08x}"


def write(
    path: Path,
    tensors: Iterable[tuple[str, torch.Tensor]],
    metadata: dict[str, str],
    advance: Callable[[int], None] | None = None,
) -> int:
    """Write ``tensors`` (name, tensor; each read once) and ``metadata`` to ``path``
    atomically, mode 0600; ``advance(bytes)`` after each tensor. Returns the file's size.
    Raises ``OSError`` (e.g. a full disk), leaving nothing behind."""
    items = [(name, tensor.detach()) for name, tensor in tensors]
    header: dict[str, Any] = {}
    offset = 0
    for name, tensor in items:
        if tensor.dtype not in DTYPES:
            raise TypeError(f"{name}: dtype {tensor.dtype} cannot be stored")
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size

    def encoded(checksums: list[str]) -> bytes:
        listed = ";".join(f"{name}={c}" for (name, _), c in zip(items, checksums, strict=True))
        meta = {**metadata, CHECKSUMS: listed}
        text = json.dumps({"__metadata__": meta, **header}, separators=(",", ":")).encode()
        return text + b" " * (-len(text) % 8)  # tensors start 8-byte aligned

    first = encoded([PLACEHOLDER] * len(items))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(struct.pack("<Q", len(first)))
            handle.write(first)
            checksums = []
            for _, tensor in items:
                raw = _raw(tensor)
                checksums.append(f"{zlib.crc32(raw) & 0xFFFFFFFF:08x}")
                handle.write(raw)
                if advance is not None:
                    advance(raw.nbytes)
            final = encoded(checksums)
            assert len(final) == len(first)  # fixed-width checksums: same header length
            handle.seek(8)
            handle.write(final)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return 8 + len(first) + offset


class Reader:
    """A tensor file opened for reading: its metadata, and its tensors verified."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        from mixchat.engine.local.checkpoint import read_header

        try:
            header = read_header(path)
            self._context = safe_open(str(path), framework="pt", device="cpu")
            self._handle = self._context.__enter__()
            self.metadata: dict[str, str] = dict(self._handle.metadata() or {})
        except Exception as exc:  # OSError, ValueError, safetensors' own errors
            raise TensorFileError(f"unreadable ({_reason(exc)})") from None
        listed = self.metadata.get(CHECKSUMS, "")
        self._checksums = dict(item.split("=", 1) for item in listed.split(";") if "=" in item)
        if set(self._checksums) != set(header):
            self.close()
            raise TensorFileError("its checksums do not list its tensors")
        self.sizes = {k: m["data_offsets"][1] - m["data_offsets"][0] for k, m in header.items()}

    def names(self) -> list[str]:
        """The tensors it holds, in the order they were written."""
        return list(self._checksums)

    def tensor(self, name: str) -> torch.Tensor:
        """Tensor ``name`` checked against its CRC-32. It may be a view of the file's
        memory map: copy it (``.to(device, copy=True)``) before closing the reader."""
        try:
            value = self._handle.get_tensor(name)
        except Exception as exc:
            raise TensorFileError(f"unreadable at {name} ({_reason(exc)})") from None
        if crc32(value) != self._checksums[name]:
            raise TensorFileError(f"damaged: {name} does not match its checksum")
        return value

    def close(self) -> None:
        """Let go of the file."""
        self._context.__exit__(None, None, None)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__
