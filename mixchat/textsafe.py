"""Make untrusted text (model output, saved conversations) safe to print on a terminal.

Escape sequences and other control characters are shown as visible ``\\xNN``
escapes instead of being interpreted, so a model cannot set the window title,
write the clipboard (OSC 52) or recolour the terminal.
"""

from __future__ import annotations

import re

# C0 controls except TAB and LF, DEL, C1 controls; CR is included (it can overwrite a line).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def neutralize(text: str) -> str:
    """Replace control characters with visible escapes and lone surrogates with U+FFFD."""
    return scrub_surrogates(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text))


def scrub_surrogates(text: str) -> str:
    """Make text encodable as UTF-8: join valid surrogate pairs, turn lone ones into U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text
