"""Search ranking and snippets read from FTS5's highlight() output (pure functions)."""

from __future__ import annotations

from mixchat.searchrank import (
    ELLIPSIS,
    SNIPPET_TOKENS,
    MatchReader,
    QueryWord,
    bm25_scores,
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
