"""Tests for mixchat.textsafe: untrusted text made safe for a terminal."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixchat.textsafe import neutralize, scrub_surrogates
from tests.examples import examples


def control_chars(text: str) -> set[str]:
    """Characters of category Cc other than newline and tab."""
    return {ch for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\t"}


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b", "\\x1b"),
        ("\x07", "\\x07"),
        ("\r", "\\x0d"),
        ("\x00", "\\x00"),
        ("\x08", "\\x08"),
        ("\x0b", "\\x0b"),
        ("\x0c", "\\x0c"),
        ("\x1f", "\\x1f"),
        ("\x7f", "\\x7f"),
        ("\x80", "\\x80"),
        ("\x9b", "\\x9b"),
        ("\x9d", "\\x9d"),
        ("\x9f", "\\x9f"),
    ],
)
def test_control_characters_become_visible_escapes(raw: str, shown: str) -> None:
    assert neutralize(f"a{raw}b") == f"a{shown}b"


def test_escape_sequences_are_defused() -> None:
    osc52 = "\x1b]52;c;aGk=\x07"
    assert neutralize(osc52) == "\\x1b]52;c;aGk=\\x07"
    assert neutralize("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert neutralize("\x1b]0;title\x1b\\") == "\\x1b]0;title\\x1b\\"
    assert neutralize("\x9b2J") == "\\x9b2J"  # 8-bit CSI
    assert neutralize("progress 10%\rprogress 99%") == "progress 10%\\x0dprogress 99%"


def test_newline_tab_and_unicode_are_kept() -> None:
    text = (
        "line one\n\tindented: café, naïve, 日本語, Ωμέγα\n"
        "🙂👍🏽 👨\u200d👩\u200d👧 \u00a0nbsp [bold]x[/bold] </s>"
    )
    assert neutralize(text) == text


def test_backslash_text_is_left_alone() -> None:
    assert neutralize("C:\\x1b\\path") == "C:\\x1b\\path"


def test_lone_surrogates_are_replaced() -> None:
    assert neutralize("a\ud800b\udfffc") == "a\ufffdb\ufffdc"
    assert scrub_surrogates("a\udc80b") == "a\ufffdb"
    assert scrub_surrogates("\x1bok\n") == "\x1bok\n"  # scrub only touches surrogates


def test_empty_string() -> None:
    assert neutralize("") == ""


# Every code point, surrogates included.
any_text = st.text(alphabet=st.characters(codec=None, categories=None))


@settings(max_examples=examples(500), deadline=None)
@given(any_text)
def test_output_has_no_controls_and_is_utf8(text: str) -> None:
    out = neutralize(text)
    assert control_chars(out) == set()
    out.encode("utf-8")  # raises on a lone surrogate


@settings(max_examples=examples(300), deadline=None)
@given(st.text(alphabet=st.characters(codec=None, exclude_categories=["Cc", "Cs"])))
def test_text_without_controls_is_unchanged(text: str) -> None:
    assert neutralize(text) == text


@settings(max_examples=examples(300), deadline=None)
@given(any_text)
def test_neutralize_keeps_newlines_and_tabs_and_is_idempotent(text: str) -> None:
    out = neutralize(text)
    assert out.count("\n") == text.count("\n")
    assert out.count("\t") == text.count("\t")
    assert neutralize(out) == out


@settings(max_examples=examples(300), deadline=None)
@given(any_text)
def test_scrub_surrogates_output_is_utf8_and_same_length(text: str) -> None:
    out = scrub_surrogates(text)
    out.encode("utf-8")
    assert len(out) == len(text)


def test_for_terminal_also_defuses_bidi_overrides() -> None:
    from mixchat.textsafe import for_terminal

    assert for_terminal("a\u202eb\u2066c\u2069d\x1b") == "a\\u202eb\\u2066c\\u2069d\\x1b"
    assert for_terminal("\u200f\u200e\u061c") == "\u200f\u200e\u061c"  # marks reorder nothing
    assert neutralize("a\u202eb") == "a\u202eb"  # the app's own rendering decides for itself


@settings(max_examples=examples(300))
@given(st.text())
def test_safe_json_is_exact_and_inert(text: str) -> None:
    import json

    from mixchat.textsafe import safe_json

    encoded = safe_json({"k": [text]})
    assert json.loads(encoded) == {"k": [scrub_surrogates(text)]}
    assert not any(0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029\u202e\u2066" for c in encoded)
    assert not any(unicodedata.category(c) == "Cc" for c in encoded)
