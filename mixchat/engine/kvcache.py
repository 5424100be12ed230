"""The KV cache of the current conversation, kept between turns and matched on token ids.

Each turn's prompt repeats the previous turns, so most of it was already run through the
model. ``PrefixCache`` remembers which token ids its cache covers; for a new prompt it keeps
the longest common prefix, crops the rest and lets ``generate`` prefill only the new tail.
Matching ids (not text) makes every edit safe: a regenerated answer, an edited message, a
cancelled reply, old turns dropped to fit the context, or another conversation all just
share a shorter prefix (often only BOS) and reuse less.

Only the model thread touches a ``PrefixCache``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading items ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    i = 0
    # Compare in chunks first: slice equality runs in C, so long shared prefixes are cheap.
    step = 1024
    while i + step <= n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    """A transformers ``DynamicCache`` plus the token ids whose keys and values it holds."""

    def __init__(self) -> None:
        self._cache: Any = None
        self._ids: list[int] = []

    @property
    def cached_ids(self) -> list[int]:
        """The token ids the cache covers, in order (a copy)."""
        return list(self._ids)

    def prepare(self, model: Any, prompt_ids: Sequence[int]) -> tuple[Any, int]:
        """Return ``(cache, reused)`` to generate a reply to ``prompt_ids``.

        ``cache`` holds the keys and values of ``prompt_ids[:reused]`` and is handed to
        ``generate`` as ``cache``; it prefills only the rest. At least one prompt
        token is always left uncached, since the model must see a new input. Returns
        ``(None, 0)`` when the model cannot take a cache from outside ``generate``.
        """
        if not supports_reuse(model):
            self.discard()
            return None, 0
        keep = min(common_prefix_length(self._ids, prompt_ids), len(prompt_ids) - 1)
        if self._cache is not None and keep > 0:
            try:
                self._crop(keep)
            except (RuntimeError, ValueError, TypeError):
                # e.g. a sliding-window layer that already dropped the states it would need
                self.discard()
        if self._cache is None or keep <= 0:
            self.discard()
            self._cache = new_cache(model)
            keep = 0
        # From here until ``commit`` the cache is in flux: if generation fails half-way
        # through, the ids must not claim more than what is surely there.
        self._ids = list(prompt_ids[:keep])
        return self._cache, keep

    def commit(self, sequence: Sequence[int]) -> None:
        """Record what the cache covers after ``generate`` returned ``sequence`` (prompt and
        reply ids). The last generated token was never fed through the model, so the cache
        is one short of ``sequence``; its own length says exactly how far it goes."""
        if self._cache is None:
            return
        length = int(self._cache.get_seq_length())
        if length > len(sequence) or length < len(self._ids):
            self.discard()  # not what generate is known to do: trust nothing
            return
        self._ids = [int(i) for i in sequence[:length]]

    def discard(self) -> None:
        """Forget the cache (errors, out of memory, a reset); the next turn starts fresh."""
        self._cache = None
        self._ids = []

    def _crop(self, keep: int) -> None:
        length = int(self._cache.get_seq_length())
        if length != len(self._ids):
            raise ValueError("cache length does not match its ids")
        if keep < length:
            if getattr(self._cache, "is_croppable", True) is False:
                raise ValueError("this cache cannot be cropped")  # e.g. recurrent states
            # A negative count removes that many tokens (the form both transformers 4 and 5 take).
            self._cache.crop(keep - length)
        if int(self._cache.get_seq_length()) != keep:
            raise ValueError("crop left the cache at an unexpected length")


def supports_reuse(model: Any) -> bool:
    """Whether ``generate`` on ``model`` accepts a ``DynamicCache`` passed in from outside."""
    config = getattr(model, "generation_config", None)
    if getattr(config, "cache_implementation", None) is not None:
        return False  # generate refuses both a cache implementation and a cache object
    supports = getattr(model, "_supports_default_dynamic_cache", None)
    return bool(supports()) if callable(supports) else False


def new_cache(model: Any) -> Any:
    """An empty cache shaped the way ``generate`` would make one for ``model``."""
    from transformers import DynamicCache

    return DynamicCache(config=model.config.get_text_config(decoder=True))
