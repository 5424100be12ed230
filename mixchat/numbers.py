"""Numbers as a user types them in flags, environment variables and settings: ASCII only.

Python's ``int()`` and ``float()`` accept far more than a person means to type: digits of
other scripts (``int("٣") == 3``), fullwidth digits, underscores (``1_000``), a ``+`` sign,
any Unicode whitespace around the number, and ``float()`` also ``inf``, ``nan`` and
``infinity``. Here a whole number is ASCII digits with an optional leading ``-``; a number
may add one decimal point and an exponent (``0.7``, ``.5``, ``1e-3``). Spaces and tabs
around it are ignored; anything else is a ``ValueError``.
"""

from __future__ import annotations

import re

_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_BLANK = " \t"


def parse_int(text: str) -> int:
    """``"512"`` -> 512; raises ValueError for anything but ASCII digits (and a ``-``)."""
    core = text.strip(_BLANK) if isinstance(text, str) else ""
    if not _INTEGER.fullmatch(core):
        raise ValueError(f"{text!r} is not a whole number written with the digits 0-9")
    return int(core)


def parse_float(text: str) -> float:
    """``"0.7"``, ``".5"``, ``"1e-3"`` -> float; raises ValueError for anything else (no
    ``inf``, ``nan``, other scripts' digits or underscores)."""
    core = text.strip(_BLANK) if isinstance(text, str) else ""
    if not _NUMBER.fullmatch(core):
        raise ValueError(f"{text!r} is not a number written with the digits 0-9 (like 0.7)")
    return float(core)
