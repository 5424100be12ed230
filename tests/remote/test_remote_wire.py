"""The pure parts of the remote engine's wire handling: bounded SSE decoding, stream
redaction and Retry-After parsing, checked over generated inputs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixchat.engine.redact import REDACTED, Redactor
from mixchat.engine.remote_http import retry_after
from mixchat.engine.remote_sse import EventTooLarge, SSEDecoder, SSEEvent
from tests.examples import examples

TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20
)
EOL = st.sampled_from(["\n", "\r\n", "\r"])


def decode(chunks: list[bytes], cap: int = 1 << 20) -> list[SSEEvent]:
    decoder = SSEDecoder(cap)
    events = [e for chunk in chunks for e in decoder.feed(chunk)]
    return events + decoder.close()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=examples(300), deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(TEXT, min_size=1, max_size=3), st.sampled_from(["", "error"])),
        max_size=5,
    ),
    EOL,
    st.lists(st.integers(0, 10_000), max_size=12),
    st.booleans(),
)
def test_events_decode_the_same_however_the_bytes_are_split(
    spec: list[tuple[list[str], str]], eol: str, cuts: list[int], comments: bool
) -> None:
    text = ""
    for lines, kind in spec:
        if comments:
            text += f": ping{eol}"
        if kind:
            text += f"event: {kind}{eol}"
        text += "".join(f"data: {line}{eol}" for line in lines) + eol
    data = text.encode()
    expected = [SSEEvent("\n".join(lines), kind or "message") for lines, kind in spec]
    assert decode([data]) == expected
    assert decode(split(data, cuts)) == expected
    assert decode([bytes([b]) for b in data]) == expected


@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 20])
def test_the_cap_counts_an_unfinished_line(piece: int) -> None:
    decoder = SSEDecoder(10_000)
    with pytest.raises(EventTooLarge):
        for _ in range(0, 20_000, piece):
            decoder.feed(b"x" * piece)
    assert len(decoder._line) <= 10_000  # never held more than the cap


def test_an_event_at_the_cap_passes_and_one_byte_more_does_not() -> None:
    line = b"data: " + b"y" * 94  # 100 bytes, plus its newline
    assert decode([line + b"\n\n"], cap=101) == [SSEEvent("y" * 94)]
    with pytest.raises(EventTooLarge):
        decode([line + b"\n\n"], cap=100)
    with pytest.raises(EventTooLarge):  # many short lines add up
        decode([b"data: a\n" * 20 + b"\n"], cap=100)


def test_an_unfinished_last_line_is_dropped_and_foreign_lines_are_noted() -> None:
    decoder = SSEDecoder(1000)
    assert decoder.feed(b"<html>\ndata: ok\n\ndata: cut") == [SSEEvent("ok")]
    assert decoder.close() == []
    assert decoder.foreign_line == "<html>"


SECRET = "sk-0123456789abcdef"


@settings(max_examples=examples(300), deadline=None)
@given(
    st.lists(
        st.sampled_from(["sk-", "0123", "456789", "abcdef", "sk", " ", "x", SECRET, "s"]),
        max_size=12,
    ),
    st.lists(st.integers(0, 500), max_size=8),
)
def test_stream_redaction_equals_redacting_the_whole(pieces: list[str], cuts: list[int]) -> None:
    redactor = Redactor([SECRET])
    whole = "".join(pieces)
    points = sorted({c % (len(whole) + 1) for c in cuts})
    parts = [whole[a:b] for a, b in zip([0, *points], [*points, len(whole)], strict=True)]
    stream = redactor.stream()
    shown = "".join(stream.feed(p) for p in parts) + stream.flush()
    assert shown == redactor.text(whole)
    assert SECRET not in shown


def test_line_redaction_covers_bearer_tokens_but_not_prose() -> None:
    redactor = Redactor(["short", None, SECRET])
    line = redactor.line(f"sent Bearer {SECRET} and bearer%20abcdef123456; Missing bearer token")
    assert line == f"sent Bearer {REDACTED} and bearer {REDACTED}; Missing bearer token"
    assert redactor.text("short words stay") == "short words stay"  # under 8: not a secret


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": " 3 "}, 3.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00"}, 0.0),
        ({"retry-after": "garbage, 99 Foo 99999"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after(headers, now=1_500_000_000.0) == seconds
