"""Make untrusted text (model output, saved conversations) safe to print on a terminal.

Escape sequences and other control characters are shown as visible ``\\xNN``
escapes instead of being interpreted, so a model cannot set the window title,
write the clipboard (OSC 52) or recolour the terminal.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 controls except TAB and LF, DEL, C1 controls; CR is included (it can overwrite a line).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Bidirectional embeddings, overrides and isolates (LRE RLE PDF LRO RLO, LRI RLI FSI PDI):
# a terminal that reorders text (VTE does) would show "txt.exe" for "exe.txt" after RLO.
# The plain marks (LRM, RLM, ALM) reorder nothing and stay.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
# What JSON output writes as \uXXXX escapes although JSON allows them raw: DEL and the C1
# controls (terminals act on them), the bidi controls and the two Unicode line separators.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def neutralize(text: str, *, bidi: bool = False) -> str:
    """Replace control characters with visible escapes and lone surrogates with U+FFFD;
    with ``bidi`` also the bidirectional embedding/override/isolate controls (as ``\\u202e``)."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    if bidi:
        text = _BIDI.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return scrub_surrogates(text)


def for_terminal(text: str) -> str:
    """Untrusted text for the CLI's terminal output: escapes, C1 controls and bidi
    overrides all shown as visible escapes (``neutralize(text, bidi=True)``)."""
    return neutralize(text, bidi=True)


def safe_json(value: Any) -> str:
    """``json.dumps`` (UTF-8, not ASCII-escaped) that is safe on a terminal and still
    decodes to the same data: C1 controls, DEL, bidi controls and U+2028/U+2029 are written
    as ``\\uXXXX`` escapes; lone surrogates become U+FFFD."""
    text = scrub_surrogates(json.dumps(value, ensure_ascii=False))
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def scrub_surrogates(text: str) -> str:
    """Make text encodable as UTF-8: join valid surrogate pairs, turn lone ones into U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text
