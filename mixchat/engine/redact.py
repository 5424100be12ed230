"""Keep secrets (the server's API key) out of everything mixchat prints or saves.

A server may echo the ``Authorization`` header in an error body, a redirect, a model
name or the reply itself. ``Redactor.line`` cleans one message; ``StreamRedactor``
cleans streamed text whose secret may be split across two pieces, holding back only a
tail that could be the start of a secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
# Shorter values (an "EMPTY" or "none" placeholder) are not secrets, and hiding them
# would garble every reply that happens to contain the word.
MIN_SECRET = 8
# "Bearer <token>" where the token looks like one (8+ token characters, a digit among
# them), so that "Missing bearer token" stays readable.
_BEARER = re.compile(r"(?i)\b(bearer)(?:\s|%20|\+)+(?=[A-Za-z._~+/=-]*\d)[\w.~+/=-]{8,}")


class Redactor:
    """Replaces each secret (and any ``Bearer <token>``) with ``[redacted]``."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        found = {s for s in secrets if s and len(s) >= MIN_SECRET}
        self.secrets = sorted(found, key=len, reverse=True)  # longest first

    def text(self, text: str) -> str:
        """``text`` with every secret replaced (reply text: only the secrets)."""
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def line(self, text: str) -> str:
        """A message for the user: secrets and bearer tokens replaced."""
        return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", self.text(text))

    def stream(self) -> StreamRedactor:
        """A redactor for one streamed reply."""
        return StreamRedactor(self)


class StreamRedactor:
    """Redacts text that arrives in pieces; ``flush`` releases what is held back."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._held = ""

    def feed(self, piece: str) -> str:
        """The part of ``held + piece`` that is safe to show now."""
        text = self._redactor.text(self._held + piece)
        keep = self._partial_tail(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """What was held back: the stream ended, so it was not a secret."""
        text, self._held = self._held, ""
        return text

    def _partial_tail(self, text: str) -> int:
        """Length of the longest end of ``text`` that begins some secret."""
        best = 0
        for secret in self._redactor.secrets:
            for size in range(min(len(secret) - 1, len(text)), best, -1):
                if secret.startswith(text[len(text) - size :]):
                    best = size
                    break
        return best
