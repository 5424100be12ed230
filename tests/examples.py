"""How many Hypothesis examples a test runs: all of them in CI (``CI`` set, or
``HYPOTHESIS_PROFILE=ci``), a tenth locally, for the fast loop (tests/conftest.py loads
the matching profile)."""

from __future__ import annotations

import os

FULL = (os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")) == "ci"


def examples(n: int) -> int:
    """``n`` examples in CI; locally a tenth of them, at least 10."""
    return n if FULL else max(10, n // 10)
