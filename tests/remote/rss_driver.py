"""Run in a fresh process: one ordinary reply, then one from a hostile server; print
the peak resident memory (KiB) after each and the second reply's last event as JSON.

``python -m tests.remote.rss_driver URL SETTINGS_JSON``
"""

from __future__ import annotations

import json
import resource
import sys

from mixchat.engine.base import Failed, TextDelta
from tests.remote.talk import converse


def peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    url, settings = sys.argv[1], json.loads(sys.argv[2])
    converse(url, **settings)  # warms up: tokenizer, HTTP stack, threads
    before = peak_kib()
    events = converse(url, **settings)
    last = events[-1]
    print(
        json.dumps(
            {
                "before_kib": before,
                "after_kib": peak_kib(),
                "text_chars": sum(len(e.text) for e in events if isinstance(e, TextDelta)),
                "failure": last.message if isinstance(last, Failed) else None,
            }
        )
    )


if __name__ == "__main__":
    main()
