"""Search ranking and snippets read from FTS5's highlight() output (pure functions)."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from mixchat.searchrank import (
    ELLIPSIS,
    EXCERPT_SCAN_CHARS,
    MAX_RANGES,
    SNIPPET_MAX_CHARS,
    SNIPPET_TOKENS,
    Match,
    MatchReader,
    QueryWord,
    bm25_scores,
    mark_excerpt,
    normalize,
    snippet,
)

S, E = "\x02", "\x03"


def word(text: str, prefix: bool = False) -> QueryWord:
    return QueryWord(tuple(normalize(text)), prefix)


def test_normalize_like_unicode61_remove_diacritics() -> None:
    assert normalize("Café au LAIT") == ["cafe", "au", "lait"]
    assert normalize("kubectl-apply snake_case x2") == ["kubectl", "apply", "snake", "case", "x2"]
    assert normalize("Привет, МИР!") == ["привет", "мир"]
    assert normalize("Straße") == ["strasse"]
    assert normalize("... --") == []


def test_query_words_match_whole_words_prefixes_and_phrases() -> None:
    assert word("Cafe").matches(["cafe"])
    assert not word("cafe").matches(["cafes"])
    assert word("cafe", prefix=True).matches(["cafes"])
    assert word("kubectl-apply").matches(["kubectl", "apply"])
    assert not word("kubectl-apply").matches(["kubectl"])
    assert word("kubectl-app", prefix=True).matches(["kubectl", "apply"])
    assert not QueryWord((), False).matches([])


def test_reader_finds_ranges_counts_and_plain_text() -> None:
    reader = MatchReader([word("rust"), word("cargo", prefix=True)], S, E)
    match = reader.read(f"Use {S}Rust{E} and {S}cargo{E} build; {S}rust{E}y {S}Cargo.toml{E}")
    assert match.plain == "Use Rust and cargo build; rusty Cargo.toml"
    assert [match.plain[a:b] for a, b in match.ranges] == ["Rust", "cargo", "rust", "Cargo.toml"]
    # "Cargo.toml" is two tokens, not an instance of the one-token word "cargo*"
    assert match.owners == [0, 1, 0, -1]
    assert match.counts == [2, 1]
    assert match.length == 7
    # A marker character that was in the text itself is left alone.
    stray = reader.read(f"odd {E} text {S}rust{E} and {S} more")
    assert stray.plain == f"odd {E} text rust and {S} more"
    assert [stray.plain[a:b] for a, b in stray.ranges] == ["rust"]


def test_bm25_prefers_more_occurrences_shorter_text_and_balance() -> None:
    reader = MatchReader([word("tofu"), word("soy")], S, E)

    def text(tofu: int, soy: int, filler: int) -> str:
        return " ".join([f"{S}tofu{E}"] * tofu + [f"{S}soy{E}"] * soy + ["x"] * filler)

    more, fewer, longer, balanced, lopsided = (
        reader.read(text(*shape))
        for shape in ((3, 1, 4), (1, 1, 6), (1, 1, 40), (2, 2, 4), (4, 0, 4))
    )
    scores = bm25_scores([more, fewer, longer, balanced, lopsided])
    assert scores[0] > scores[1] > scores[2]
    assert scores[3] > scores[4]  # each word saturates: two of each beat four of one
    assert bm25_scores([]) == []


def test_snippet_of_a_short_text_is_the_whole_text_marked() -> None:
    reader = MatchReader([word("kubernetes")], S, E)
    match = reader.read(f"How do I deploy to {S}Kubernetes{E}?")
    assert snippet(match, "[", "]") == "How do I deploy to [Kubernetes]?"


def test_snippet_of_a_long_text_is_the_densest_window() -> None:
    reader = MatchReader([word("alpha"), word("beta")], S, E)
    words = [f"w{i}" for i in range(60)]
    words[5] = f"{S}alpha{E}"
    words[30], words[33] = f"{S}alpha{E}", f"{S}beta{E}"  # both words: this window wins
    cut = snippet(reader.read(" ".join(words) + "."), "[", "]")
    assert cut.startswith(ELLIPSIS) and cut.endswith(ELLIPSIS)
    inner = cut.strip(ELLIPSIS).split()
    assert len(inner) == SNIPPET_TOKENS
    assert "[alpha]" in inner and "[beta]" in inner
    assert (inner[6], inner[9]) == ("[alpha]", "[beta]")  # centred on the two hits
    head = snippet(reader.read(" ".join([f"{S}beta{E}", f"{S}alpha{E}", *words[:40]])), "[", "]")
    assert head.startswith("[beta] [alpha] w0") and head.endswith(ELLIPSIS)
    tail = snippet(reader.read(" ".join([*words[6:28], f"{S}alpha{E}", f"{S}beta{E}!"])), "<", ">")
    assert tail.endswith("<alpha> <beta>!") and tail.startswith(ELLIPSIS)


# -- bounded work: huge messages, many hits -----------------------------------------------

VOCABULARY = ["tea", "Tea", "TEAPOT", "café", "Cafe", "naïve", "x2", "kettle", "kettles"]
SEPARATORS = [" ", ", ", ".\n", " -- ", "\t", "'", "_"]


def fts5_highlight(text: str, query: str) -> str | None:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE VIRTUAL TABLE t USING fts5(body, tokenize='unicode61 remove_diacritics 2')"
    )
    conn.execute("INSERT INTO t VALUES (?)", (text,))
    row = conn.execute(
        "SELECT highlight(t, 0, ?, ?) FROM t WHERE t MATCH ?", (S, E, query)
    ).fetchone()
    conn.close()
    return None if row is None else str(row[0])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(VOCABULARY), st.sampled_from(SEPARATORS)), max_size=30),
    st.lists(st.tuples(st.sampled_from(["tea", "cafe", "naive", "kettle", "x2"]), st.booleans()),
             min_size=1, max_size=3),
)  # fmt: skip
def test_excerpts_are_marked_as_fts5_highlights_them(
    pieces: list[tuple[str, str]], query: list[tuple[str, bool]]
) -> None:
    text = "".join(w + sep for w, sep in pieces)
    fts_query = " OR ".join(f'"{w}"' + ("*" if prefix else "") for w, prefix in query)
    expected = fts5_highlight(text, fts_query)
    marked, lo, hi = mark_excerpt(text, [word(w, prefix) for w, prefix in query], S, E)
    assert (lo, hi) == (0, len(text))
    if expected is not None:
        assert marked == expected
    else:
        assert S not in marked


def test_an_excerpt_is_cut_around_the_first_hit_of_a_huge_text() -> None:
    filler = "lorem ipsum dolor " * 20_000  # 360,000 characters without the word
    text = filler + "the kettle sings " + filler
    marked, lo, hi = mark_excerpt(text, [word("kettle")], S, E)
    assert f"{S}kettle{E} sings" in marked
    assert 0 < lo < len(filler) < hi < len(text) and hi - lo < 4000
    assert marked.replace(S, "").replace(E, "") == text[lo:hi]
    # Beyond the scanned beginning: the excerpt is the beginning, unmarked.
    far = "lorem " * (EXCERPT_SCAN_CHARS // 6 + 10) + "kettle"
    marked, lo, hi = mark_excerpt(far, [word("kettle")], S, E, whole=False)
    assert lo == 0 and S not in marked and len(marked) < 4000


def test_reading_counts_every_hit_but_places_only_the_first() -> None:
    reader = MatchReader([word("tea")], S, E)
    match = reader.read(" ".join([f"{S}tea{E}"] * 5000))
    assert match.counts == [5000] and len(match.ranges) == MAX_RANGES
    assert match.plain == " ".join(["tea"] * 5000)
    cut = snippet(match, "[", "]")
    assert cut.count("[tea]") == SNIPPET_TOKENS and cut.endswith(ELLIPSIS)


def test_snippets_stay_short_whatever_the_words() -> None:
    reader = MatchReader([word("kettle")], S, E)
    long_words = " ".join(["y" * 5000] * 10 + [f"{S}kettle{E}"] + ["z" * 5000] * 10)
    cut = snippet(reader.read(long_words), "[", "]")
    assert "[kettle]" in cut and len(cut) <= SNIPPET_MAX_CHARS + 4
    assert cut.startswith(ELLIPSIS) and cut.endswith(ELLIPSIS)
    # A hit deep in a long text: the snippet is found there and cut on both sides.
    deep = " ".join(["w"] * 20_000 + [f"{S}kettle{E}"] + ["w"] * 20_000)
    cut = snippet(reader.read(deep), "[", "]")
    assert "[kettle]" in cut and cut.startswith(ELLIPSIS) and cut.endswith(ELLIPSIS)
    # An excerpt says there is more on each side even where its own text ends.
    excerpt = Match("a kettle b", [(2, 8)], [0], [1], 3, cut_before=True, cut_after=True)
    assert snippet(excerpt, "[", "]") == f"{ELLIPSIS}a [kettle] b{ELLIPSIS}"


def test_excerpt_phrases_and_many_hits_match_fts5() -> None:
    texts = [
        "run kubectl-apply then kubectl apply, not kubectl-get; KUBECTL  APPLY!",
        "café kubectl-apply naïve kubectl apply",
    ]
    for text in texts:
        expected = fts5_highlight(text, '"kubectl apply"')
        marked, _, _ = mark_excerpt(text, [word("kubectl-apply")], S, E)
        assert marked == expected
    many = "tea " * 2000
    marked, lo, hi = mark_excerpt(many, [word("tea")], S, E)
    assert (lo, marked.count(S)) == (0, len(many[lo:hi].split()))
    reader = MatchReader([word("tea")], S, E)
    counted, placed = reader.read(marked, place=False), reader.read(marked)
    assert counted.counts == placed.counts and counted.length == placed.length
    assert counted.ranges == [] and len(placed.ranges) == MAX_RANGES
