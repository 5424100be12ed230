"""Ranking and snippets for search hits, from FTS5's ``highlight()`` of each match (pure).

FTS5's own ``bm25()`` first counts, for every query word, the messages in the whole index
that contain it, before the first hit is scored. Search ranks only the newest matches,
every one of which contains every query word, so that global count would weigh the words
against each other and nothing more. Here each match is scored with BM25 over term
frequencies and lengths (all words weighted alike), read from the highlighted text that
FTS5 produces cheaply for each message, and the snippet is cut from the same text. What
this saves is measured in the README's Performance section (``benchmarks/startup.py``).

Words are compared as the ``unicode61 remove_diacritics 2`` tokenizer does: runs of
letters and digits, case-folded, accents removed.

The work per message is bounded, whatever the message holds: FTS5's ``highlight()`` costs
the number of hits times the message's length (it rebuilds its output for every hit: one
word 160,000 times took 21 s), so the store calls it only for messages up to
``HIGHLIGHT_MAX_CHARS`` and marks an excerpt of longer ones here (``mark_excerpt``: a few
KB around the first hit, marked by one regex split in C for ASCII text). Reading a match
counts its hits in C (``findall``); only the matches shown are placed for a snippet, at
most ``MAX_RANGES`` hits each, sought in at most ``SNIPPET_SCAN_CHARS`` of text and at
most ``SNIPPET_MAX_CHARS`` long.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

K1, B = 1.2, 0.75  # BM25's usual constants (FTS5 uses the same)
SNIPPET_TOKENS = 16
SNIPPET_MAX_CHARS = 400  # a snippet of 16 very long "words" is cut to this
SNIPPET_SCAN_CHARS = 8000  # the snippet's window is sought in this much text around the hits
MAX_RANGES = 100  # hits placed for the snippet (all hits are counted for ranking)
EXCERPT_SCAN_CHARS = 1_000_000  # how far into a huge message its first hit is sought
EXCERPT_BEFORE, EXCERPT_AFTER = 300, 3000  # the excerpt marked around that hit
ELLIPSIS = "…"
_TOKEN = re.compile(r"[^\W_]+")
_NON_WORD = re.compile(r"[\W_]")
# A token of raw text: combining accents (dropped by the tokenizer) do not split it.
_TOKEN_CHAR = re.compile(r"[^\W_]|[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff]")
_TRAILING_TOKEN = re.compile(
    r"(?:[^\W_]|[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff])*\Z"
)
_RAW_TOKEN = re.compile(r"[^\W_](?:[^\W_]|[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff])*")


def normalize(text: str) -> list[str]:
    """The tokens FTS5 indexes for ``text``: case-folded, without accents."""
    folded = text.casefold()
    if not folded.isascii():
        decomposed = unicodedata.normalize("NFD", folded)
        folded = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _TOKEN.findall(folded)


@dataclass(frozen=True)
class QueryWord:
    """One query word as FTS5 matches it: its tokens, the last a prefix or not."""

    tokens: tuple[str, ...]
    prefix: bool

    def matches(self, tokens: list[str]) -> bool:
        """Whether a highlighted phrase with ``tokens`` is an instance of this word."""
        if len(tokens) != len(self.tokens) or not tokens:
            return False
        if tokens[:-1] != list(self.tokens[:-1]):
            return False
        last = self.tokens[-1]
        return tokens[-1] == last or (self.prefix and tokens[-1].startswith(last))


@dataclass(frozen=True)
class Match:
    """One highlighted message: its plain text, the ranges FTS5 marked in it, the query
    word each range is an instance of (-1: none recognised), and its token count."""

    plain: str
    ranges: list[tuple[int, int]]  # the first MAX_RANGES hits
    owners: list[int]
    counts: list[int]  # per query word: how often it occurs
    length: int
    cut_before: bool = False  # ``plain`` is an excerpt: the message has text before it
    cut_after: bool = False  # ... and after it


class MatchReader:
    """Reads ``highlight(..., start, end)`` output for one query's ``words``."""

    def __init__(self, words: list[QueryWord], start: str, end: str) -> None:
        self.words, self.start, self.end = words, start, end
        self._marked = re.compile(f"{re.escape(start)}(.*?){re.escape(end)}", re.DOTALL)
        self._owner: dict[str, int] = {}  # marked text -> query word (most texts repeat)

    def owner(self, text: str) -> int:
        """The query word a marked phrase is an instance of; -1 if none is recognised."""
        found = self._owner.get(text)
        if found is None:
            phrase = normalize(text)
            found = next((i for i, w in enumerate(self.words) if w.matches(phrase)), -1)
            self._owner[text] = found
        return found

    def read(
        self,
        highlighted: str,
        *,
        length: int | None = None,
        cut_before: bool = False,
        cut_after: bool = False,
        place: bool = True,
    ) -> Match:
        """The plain text, its marked ranges and what they are. ``length`` (in words)
        defaults to the text's own; an excerpt passes the whole message's. Without
        ``place``, a text with many hits is only counted (for ranking; no snippet)."""
        if highlighted.count(self.start) <= MAX_RANGES:  # the usual case: one pass
            return self._read_few(highlighted, length, cut_before, cut_after)
        counts = [0] * len(self.words)
        for text, n in Counter(self._marked.findall(highlighted)).items():
            which = self.owner(text)
            if which >= 0:
                counts[which] += n
        # Length in words: BM25 only compares it with the average, so whitespace is enough
        # (the marks add none).
        words = len(highlighted.split()) if length is None else length
        if not place:
            return Match("", [], [], counts, words, cut_before, cut_after)
        ranges, owners = [], []
        marks = len(self.start) + len(self.end)
        for index, found in enumerate(
            itertools.islice(self._marked.finditer(highlighted), MAX_RANGES)
        ):
            at = found.start() - index * marks  # in the plain text
            ranges.append((at, at + len(found.group(1))))
            owners.append(self.owner(found.group(1)))
        plain = "".join(self._marked.split(highlighted))  # marked text kept, marks gone
        return Match(plain, ranges, owners, counts, words, cut_before, cut_after)

    def _read_few(
        self, highlighted: str, length: int | None, cut_before: bool, cut_after: bool
    ) -> Match:
        counts = [0] * len(self.words)
        ranges, owners, pieces = [], [], []
        at = size = 0  # in the highlighted text; in the plain text
        for found in self._marked.finditer(highlighted):
            before, text = highlighted[at : found.start()], found.group(1)
            size += len(before)
            ranges.append((size, size + len(text)))
            size += len(text)
            pieces += [before, text]
            at = found.end()
            which = self.owner(text)
            owners.append(which)
            if which >= 0:
                counts[which] += 1
        plain = "".join([*pieces, highlighted[at:]]) if ranges else highlighted
        words = len(plain.split()) if length is None else length
        return Match(plain, ranges, owners, counts, words, cut_before, cut_after)


def bm25_scores(matches: list[Match]) -> list[float]:
    """BM25 of each match (higher is better), every query word weighted alike, lengths
    compared with the average of ``matches``."""
    if not matches:
        return []
    average = sum(m.length for m in matches) / len(matches) or 1.0
    scores = []
    for m in matches:
        norm = K1 * (1 - B + B * m.length / average)
        scores.append(sum(tf * (K1 + 1) / (tf + norm) for tf in m.counts if tf))
    return scores


def snippet(match: Match, start: str, end: str) -> str:
    """Up to SNIPPET_TOKENS tokens where the most distinct query words (then the most
    marked words) are, centred on them, with the marks; an ellipsis where text was cut.
    The window is sought in at most SNIPPET_SCAN_CHARS of text around the placed hits."""
    text, ranges = match.plain, match.ranges
    lo_scan = max(0, ranges[0][0] - SNIPPET_SCAN_CHARS // 8) if ranges else 0
    hi_scan = min(len(text), lo_scan + SNIPPET_SCAN_CHARS)
    if lo_scan > 0:  # start at a token's beginning
        boundary = _NON_WORD.search(text, lo_scan, hi_scan)
        lo_scan = boundary.start() if boundary else lo_scan
    plain = text[lo_scan:hi_scan]
    ranges = [(a - lo_scan, b - lo_scan) for a, b in ranges if a >= lo_scan and b <= hi_scan]
    owners = [
        o
        for (a, b), o in zip(match.ranges, match.owners, strict=True)
        if a >= lo_scan and b <= hi_scan
    ]
    more_before = match.cut_before or lo_scan > 0
    more_after = match.cut_after or hi_scan < len(text)
    tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(plain)]
    n = len(tokens)
    if n == 0:
        return _bounded(plain, [], start, end, more_before, more_after)
    # Per token: the query word of the marked range it lies in (ranges and tokens are
    # both in text order), None if unmarked.
    hit_of: list[int | None] = []
    r = 0
    for lo, hi in tokens:
        while r < len(ranges) and ranges[r][1] <= lo:
            r += 1
        inside = r < len(ranges) and ranges[r][0] < hi
        hit_of.append(owners[r] if inside else None)
    size = min(SNIPPET_TOKENS, n)
    in_window: dict[int | None, int] = {}
    for h in hit_of[:size]:
        in_window[h] = in_window.get(h, 0) + 1

    def key() -> tuple[int, int]:
        hits = {h: c for h, c in in_window.items() if h is not None and c}
        return len(hits), sum(hits.values())

    best, best_key = 0, key()
    for first in range(1, n - size + 1):  # slide by one token: O(tokens)
        gone, new = hit_of[first - 1], hit_of[first + size - 1]
        in_window[gone] -= 1
        in_window[new] = in_window.get(new, 0) + 1
        if gone != new and (gone is not None or new is not None):
            current = key()
            if current > best_key:  # ties keep the earliest window
                best, best_key = first, current
    # Centre the marked words in the window, for context on both sides.
    marked = [i for i in range(best, best + size) if hit_of[i] is not None]
    if marked:
        best = max(0, min(n - size, (marked[0] + marked[-1] + 1 - size) // 2))
    last = best + size - 1
    lo = 0 if best == 0 else tokens[best][0]
    hi = len(plain) if last == n - 1 else tokens[last][1]
    cut = [(max(a, lo) - lo, min(b, hi) - lo) for a, b in ranges if b > lo and a < hi]
    return _bounded(
        plain[lo:hi], cut, start, end, more_before or best > 0, more_after or last < n - 1
    )


def _bounded(
    text: str, ranges: list[tuple[int, int]], start: str, end: str, before: bool, after: bool
) -> str:
    """``text`` with its ``ranges`` marked, cut to SNIPPET_MAX_CHARS around the first mark,
    and an ellipsis on each side where there is more."""
    if len(text) > SNIPPET_MAX_CHARS:
        first = ranges[0][0] if ranges else 0
        lo = max(0, min(first - SNIPPET_MAX_CHARS // 4, len(text) - SNIPPET_MAX_CHARS))
        hi = lo + SNIPPET_MAX_CHARS
        before, after = before or lo > 0, after or hi < len(text)
        ranges = [(max(a, lo) - lo, min(b, hi) - lo) for a, b in ranges if b > lo and a < hi]
        text = text[lo:hi]
    pieces = [ELLIPSIS] if before else []
    cursor = 0
    for a, b in ranges:
        pieces += [text[cursor:a], start, text[a:b], end]
        cursor = b
    pieces.append(text[cursor:])
    if after:
        pieces.append(ELLIPSIS)
    return "".join(pieces)


def _starts_instance(token: str, words: list[QueryWord]) -> bool:
    """Whether a raw token could begin an instance of one of the query ``words``."""
    first = normalize(token)[:1]
    return bool(first) and any(
        w.tokens
        and (
            first[0] == w.tokens[0]
            or (w.prefix and len(w.tokens) == 1 and first[0].startswith(w.tokens[0]))
        )
        for w in words
    )


def _candidates(words: list[QueryWord]) -> re.Pattern[str] | None:
    """A case-insensitive search for each word's first token: where an instance may start."""
    firsts = sorted({w.tokens[0] for w in words if w.tokens}, key=len, reverse=True)
    if not firsts:
        return None
    return re.compile("|".join(re.escape(t) for t in firsts), re.IGNORECASE)


def _at_token_start(text: str, at: int) -> bool:
    return at == 0 or _TOKEN_CHAR.match(text, at - 1) is None


def first_hit(text: str, words: list[QueryWord]) -> int | None:
    """Where the first token of ``text`` that begins an instance of a query word starts;
    None if none is among the first 64 candidates. Candidates come from a search in C; a
    word written with accents the query lacks is not found this way (the caller then
    shows the text's beginning)."""
    pattern = _candidates(words)
    if pattern is None:
        return None
    for found in itertools.islice(pattern.finditer(text), 64):
        at = found.start()
        if not _at_token_start(text, at):
            continue  # inside a longer token
        token = _RAW_TOKEN.match(text, at)
        if token is not None and _starts_instance(token.group(), words):
            return at
    return None


def _mark_in_c(excerpt: str, words: list[QueryWord], start: str, end: str) -> str | None:
    """``excerpt`` marked by one regex substitution (in C, whatever the number of hits),
    where that is exact: ASCII text and one-token words. None otherwise."""
    if not excerpt.isascii() or not all(len(w.tokens) == 1 for w in words):
        return None
    alternatives = [
        re.escape(w.tokens[0]) + (r"[a-z0-9]*" if w.prefix else "")
        for w in sorted(words, key=lambda w: len(w.tokens[0]), reverse=True)
    ]
    pattern = re.compile(
        rf"(?<![a-z0-9])((?:{'|'.join(alternatives)}))(?![a-z0-9])", re.IGNORECASE | re.ASCII
    )
    parts = pattern.split(excerpt)  # text, hit, text, ...: split in C (sub's template is not)
    parts[1::2] = [start + hit + end for hit in parts[1::2]]
    return "".join(parts)


def _instances(excerpt: str, words: list[QueryWord]) -> list[tuple[int, int]]:
    """The spans of ``excerpt`` that are instances of the query words, in order (at most
    MAX_RANGES * 4 in ASCII text: each costs Python time)."""
    spans: list[tuple[int, int]] = []
    longest = max((len(w.tokens) for w in words), default=0)
    pattern = _candidates(words)
    if excerpt.isascii() and pattern is not None:
        # Plain ASCII (most text): only where a word's first token occurs (found in C)
        # is looked at; an ASCII token's normal form is itself in lower case.
        for found in pattern.finditer(excerpt):
            at = found.start()
            if (spans and at < spans[-1][1]) or not _at_token_start(excerpt, at):
                continue
            tokens = list(itertools.islice(_RAW_TOKEN.finditer(excerpt, at), longest))
            lowered = [t.group().lower() for t in tokens]
            width = next((len(w.tokens) for w in words if w.matches(lowered[: len(w.tokens)])), 0)
            if width:
                spans.append((tokens[0].start(), tokens[width - 1].end()))
                if len(spans) >= 4 * MAX_RANGES:
                    break
        return spans
    tokens = list(_RAW_TOKEN.finditer(excerpt))
    norms = ["".join(normalize(t.group())) for t in tokens]
    i = 0
    while i < len(tokens):
        width = next((len(w.tokens) for w in words if w.matches(norms[i : i + len(w.tokens)])), 0)
        if width:
            spans.append((tokens[i].start(), tokens[i + width - 1].end()))
        i += width or 1
    return spans


def mark_excerpt(
    text: str, words: list[QueryWord], start: str, end: str, *, whole: bool = True
) -> tuple[str, int, int]:
    """Mark the query words in an excerpt of a long ``text`` as ``highlight()`` would:
    EXCERPT_BEFORE + EXCERPT_AFTER characters around its first hit within the first
    EXCERPT_SCAN_CHARS (its beginning if none is found). ``whole``: ``text`` is the
    whole message, not its beginning. Returns the marked excerpt and where it starts and
    ends in ``text``. The cost is bounded by those constants, not by the text."""
    hit = first_hit(text[:EXCERPT_SCAN_CHARS], words) or 0
    lo = max(0, hit - EXCERPT_BEFORE)
    if lo > 0:  # begin at a token boundary
        boundary = _NON_WORD.search(text, lo, hit)
        lo = boundary.start() + 1 if boundary else hit
    hi = min(len(text), hit + EXCERPT_AFTER)
    cut = _TOKEN_CHAR.match(text, hi) if hi < len(text) else not whole
    if cut and hi > lo and _TOKEN_CHAR.match(text, hi - 1):
        # The last token goes on beyond the excerpt (or may): end before it.
        tail = _TRAILING_TOKEN.search(text, max(lo, hi - 256), hi)
        hi = tail.start() if tail else hi
    excerpt = text[lo:hi]
    marked = _mark_in_c(excerpt, words, start, end)
    if marked is not None:
        return marked, lo, hi
    pieces, cursor = [], 0
    for a, b in _instances(excerpt, words):
        pieces += [excerpt[cursor:a], start, excerpt[a:b], end]
        cursor = b
    pieces.append(excerpt[cursor:])
    return "".join(pieces), lo, hi
