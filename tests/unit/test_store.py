"""Tests of mixchat.store: the SQLite conversation store."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixchat import paths
from mixchat import store as store_module
from mixchat.conversation import Conversation, Message, Role, Status
from mixchat.store import (
    MARK_END,
    MARK_START,
    MIGRATIONS,
    AmbiguousIdError,
    ConversationStore,
    NotFoundError,
    StoreError,
    _error,
)
from tests.examples import examples

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "home"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ConversationStore]:
    with ConversationStore.open(tmp_path / "db" / "conversations.db") as s:
        yield s


def new_conv(store: ConversationStore, **kw: object) -> Conversation:
    args: dict[str, object] = {"model": "mixtral", "system_prompt": None, "settings": {}}
    args.update(kw)
    return store.create_conversation(**args)  # type: ignore[arg-type]


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# -- round trips ---------------------------------------------------------------


def test_round_trip(store: ConversationStore) -> None:
    conv = new_conv(store, system_prompt="be brief", settings={"temperature": 0.7, "n": [1]})
    user = store.append_message(conv.id, Message(Role.USER, "Hello there\nsecond line"))
    assert user.id is not None
    reply = store.start_reply(conv.id)
    store.checkpoint_reply(reply.id or 0, "Hi")
    store.finish_reply(
        reply.id or 0,
        "Hi! How can I help?",
        Status.COMPLETE,
        prompt_tokens=12,
        completion_tokens=7,
        ttft_s=0.25,
        duration_s=1.5,
    )
    got = store.get_conversation(conv.id)
    assert got.id == conv.id
    assert got.title == "Hello there second line"
    assert got.model == "mixtral"
    assert got.system_prompt == "be brief"
    assert got.settings == {"temperature": 0.7, "n": [1]}
    assert got.created_at == conv.created_at
    assert got.updated_at >= conv.updated_at
    assert [m.role for m in got.messages] == [Role.USER, Role.ASSISTANT]
    assert got.messages[0] == user
    last = got.messages[1]
    assert (last.id, last.content, last.status) == (
        reply.id,
        "Hi! How can I help?",
        Status.COMPLETE,
    )
    assert (last.prompt_tokens, last.completion_tokens, last.ttft_s, last.duration_s) == (
        12,
        7,
        0.25,
        1.5,
    )


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contents=st.lists(st.text(), min_size=1, max_size=4))
def test_content_round_trips_exactly(
    tmp_path_factory: pytest.TempPathFactory, contents: list[str]
) -> None:
    with ConversationStore.open(tmp_path_factory.mktemp("rt") / "c.db") as s:
        conv = new_conv(s)
        for text in contents:
            s.append_message(conv.id, Message(Role.USER, text))
        assert [m.content for m in s.get_conversation(conv.id).messages] == contents


def test_title_from_first_user_message(store: ConversationStore) -> None:
    conv = new_conv(store)
    assert conv.title == ""
    store.append_message(conv.id, Message(Role.SYSTEM, "system text"))
    assert store.get_conversation(conv.id).title == ""
    store.append_message(conv.id, Message(Role.USER, "  What is   a\tmonad? "))
    store.append_message(conv.id, Message(Role.USER, "something else"))
    assert store.get_conversation(conv.id).title == "What is a monad?"
    titled = new_conv(store, title="Mine")
    store.append_message(titled.id, Message(Role.USER, "question"))
    assert store.get_conversation(titled.id).title == "Mine"


def test_reply_is_interrupted_until_finished(store: ConversationStore) -> None:
    conv = new_conv(store)
    reply = store.start_reply(conv.id)
    assert (reply.role, reply.content, reply.status) == (Role.ASSISTANT, "", Status.INTERRUPTED)
    store.checkpoint_reply(reply.id or 0, "partial")
    (saved,) = store.get_conversation(conv.id).messages
    assert (saved.content, saved.status) == ("partial", Status.INTERRUPTED)
    store.finish_reply(reply.id or 0, "partial and failed", Status.ERROR)
    (saved,) = store.get_conversation(conv.id).messages
    assert (saved.content, saved.status) == ("partial and failed", Status.ERROR)
    with pytest.raises(NotFoundError):
        store.checkpoint_reply(123456, "x")
    with pytest.raises(NotFoundError):
        store.finish_reply(123456, "x", Status.COMPLETE)


def test_rename_update_settings_delete(store: ConversationStore) -> None:
    conv = new_conv(store, system_prompt="old", settings={"a": 1})
    store.rename(conv.id[:6], "New title")
    store.update_settings(conv.id, settings={"b": 2})
    got = store.get_conversation(conv.id)
    assert (got.title, got.system_prompt, got.settings) == ("New title", "old", {"b": 2})
    store.update_settings(conv.id, system_prompt=None, model="other")
    got = store.get_conversation(conv.id)
    assert (got.system_prompt, got.settings, got.model) == (None, {"b": 2}, "other")
    store.delete(conv.id)
    with pytest.raises(NotFoundError):
        store.get_conversation(conv.id)
    with pytest.raises(NotFoundError):
        store.delete(conv.id)
    with pytest.raises(NotFoundError):
        store.append_message(conv.id, Message(Role.USER, "x"))


def test_import_conversation(store: ConversationStore) -> None:
    messages = [
        Message(Role.SYSTEM, "sys", created_at=100.0),
        Message(Role.USER, "question", created_at=101.0),
        Message(
            Role.ASSISTANT, "answer", Status.INTERRUPTED, None, 5, 3, 0.1, 0.9, created_at=102.0
        ),
    ]
    source = Conversation(uuid.uuid4().hex, "", 100.0, 102.0, "m", "sp", {"k": "v"}, messages)
    first = store.import_conversation(source)
    assert first.id == source.id
    assert first.title == "question"
    again = store.import_conversation(source)
    assert again.id != source.id
    odd = store.import_conversation(Conversation("not-hex", "T", 1.0, 2.0))
    assert len(odd.id) == 32 and odd.id != "not-hex"
    for conv_id in (first.id, again.id):
        got = store.get_conversation(conv_id)
        assert (got.created_at, got.updated_at, got.model, got.system_prompt, got.settings) == (
            100.0,
            102.0,
            "m",
            "sp",
            {"k": "v"},
        )
        assert [(m.role, m.content, m.status, m.created_at) for m in got.messages] == [
            (m.role, m.content, m.status, m.created_at) for m in messages
        ]
        assert got.messages[2].prompt_tokens == 5 and got.messages[2].duration_s == 0.9
        assert got.messages == first.messages if conv_id == first.id else True


# -- ids -------------------------------------------------------------------------


def test_prefix_resolution(store: ConversationStore) -> None:
    a = store.import_conversation(Conversation("abc1" + "0" * 28, "A", 1.0, 1.0))
    store.import_conversation(Conversation("abc2" + "0" * 28, "B", 1.0, 1.0))
    assert store.resolve_id("abc1") == a.id
    assert store.resolve_id("ABC1") == a.id
    assert store.resolve_id(a.id) == a.id
    assert store.get_conversation("abc1").title == "A"
    with pytest.raises(AmbiguousIdError, match=r"abc1.*abc2") as err:
        store.resolve_id("abc")
    assert "\n" not in str(err.value)
    for bad in [
        "abd",
        "\ud800",
        "f",
        "",
        " ",
        "%",
        "_",
        "'",
        "abc%",
        "abc_",
        "' OR 1=1 --",
        "g",
        "a" * 33,
    ]:
        with pytest.raises(NotFoundError):
            store.resolve_id(bad)
    assert issubclass(AmbiguousIdError, StoreError) and issubclass(NotFoundError, StoreError)


def test_list_conversations_and_last(store: ConversationStore) -> None:
    assert store.list_conversations() == []
    assert store.last_conversation_id() is None
    convs = [new_conv(store, title=f"c{i}") for i in range(5)]
    time.sleep(0.01)
    store.append_message(convs[1].id, Message(Role.USER, "bump"))
    store.append_message(convs[1].id, Message(Role.ASSISTANT, "ok"))
    listed = store.list_conversations()
    assert [c.title for c in listed] == ["c1", "c4", "c3", "c2", "c0"]
    assert [c.message_count for c in listed] == [2, 0, 0, 0, 0]
    assert [c.title for c in store.list_conversations(limit=2, offset=1)] == ["c4", "c3"]
    assert store.last_conversation_id() == convs[1].id
    store.delete(convs[1].id)
    assert store.last_conversation_id() == convs[4].id


def test_listing_and_search_use_indexes(store: ConversationStore) -> None:
    conn = sqlite3.connect(store.path)
    # 10,000 conversations: listing must not scan or sort them.
    conn.executemany(
        "INSERT INTO conversations (id, title, created_at, updated_at) VALUES (?, ?, ?, ?)",
        [(uuid.uuid4().hex, f"t{i}", i, i) for i in range(10_000)],
    )
    conn.commit()
    page = store.list_conversations(limit=50)
    everything = store.list_conversations()
    assert [c.updated_at for c in page] == [float(i) for i in range(9999, 9949, -1)]
    assert len(everything) == 10_000
    plan = " ".join(
        str(r[3])
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM conversations ORDER BY updated_at DESC, rowid DESC"
        )
    )
    assert "conversations_updated" in plan and "TEMP B-TREE" not in plan
    conn.close()


# -- search ------------------------------------------------------------------------


def test_search_finds_words(store: ConversationStore) -> None:
    conv = new_conv(store)
    user = store.append_message(conv.id, Message(Role.USER, "How do I deploy to Kubernetes?"))
    reply = store.append_message(
        conv.id, Message(Role.ASSISTANT, "Café au lait; Привет мир; use kubectl apply.")
    )
    other = new_conv(store, title="Other")
    store.append_message(other.id, Message(Role.USER, "unrelated text about cats"))

    hits = store.search("kubernetes")
    assert [(h.conversation_id, h.message_id, h.role) for h in hits] == [
        (conv.id, user.id, Role.USER)
    ]
    assert hits[0].title == "How do I deploy to Kubernetes?"
    assert f"{MARK_START}Kubernetes{MARK_END}" in hits[0].snippet
    assert [h.message_id for h in store.search("DEPLOY kubernetes")] == [user.id]  # any case
    assert [h.message_id for h in store.search("deploy kube*")] == [user.id]  # typed prefix
    assert [h.message_id for h in store.search("deploy kube", typing=True)] == [user.id]
    assert [h.message_id for h in store.search("dep kube")] == [user.id]  # no whole: prefixes
    assert [h.message_id for h in store.search("cafe")] == [reply.id]  # diacritics ignored
    assert [h.message_id for h in store.search("привет")] == [reply.id]
    assert [h.message_id for h in store.search("kubectl-apply")] == [reply.id]  # phrase
    assert store.search("deploy cats") == []  # every word must match
    assert store.search("kubectl", limit=0) == []
    assert store.search("") == store.search("  ") == store.search('"*()') == []
    assert store.search("\x00 \ud800 \u0301") == []
    assert [h.message_id for h in store.search('"kubectl" (apply* :')] == [reply.id]
    assert store.search("kubectl AND apply") == []  # operators are plain words


def test_search_ranks_only_the_newest_matches(
    store: ConversationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    conv = new_conv(store)
    strong = store.append_message(conv.id, Message(Role.USER, "tofu tofu tofu"))
    weak = [store.append_message(conv.id, Message(Role.USER, "tofu " + "x " * i)) for i in range(4)]
    assert store.search("tofu")[0].message_id == strong.id
    monkeypatch.setattr(store_module, "SEARCH_WINDOW", 3)
    assert [h.message_id for h in store.search("tofu", limit=2)] == [weak[1].id, weak[2].id]
    assert store.search("tofu", limit=10)[0].message_id == strong.id  # window >= limit


def test_search_ranks_and_follows_edits(store: ConversationStore) -> None:
    conv = new_conv(store)
    weak = store.append_message(conv.id, Message(Role.USER, "rust " + "filler " * 50))
    strong = store.append_message(conv.id, Message(Role.USER, "rust rust rust"))
    assert [h.message_id for h in store.search("rust")] == [strong.id, weak.id]
    reply = store.start_reply(conv.id)
    store.checkpoint_reply(reply.id or 0, "streaming zanzibar")
    assert [h.message_id for h in store.search("zanzibar")] == [reply.id]
    store.finish_reply(reply.id or 0, "final text", Status.COMPLETE)
    assert store.search("zanzibar") == []
    assert [h.message_id for h in store.search("final")] == [reply.id]


hostile = st.one_of(
    st.text(),
    st.lists(
        st.sampled_from(['"', "'", "*", "(", ")", ":", "^", "-", "+", "AND", "OR", "NOT", "NEAR",
                         "NEAR(", "content:", "{", "}", "\\", "%", "_", "\x00", "word", "é", "🙂"]),
    ).map(" ".join),
)  # fmt: skip


def test_search_never_raises_on_hostile_input(store: ConversationStore) -> None:
    conv = new_conv(store)
    store.append_message(conv.id, Message(Role.USER, 'word AND "quoted" (paren) NEAR col:on é 🙂'))

    @settings(max_examples=examples(300), deadline=None)
    @given(query=hostile)
    def check(query: str) -> None:
        hits = store.search(query)
        assert all(h.conversation_id == conv.id for h in hits)

    check()
    assert len(store.search("word AND NEAR")) == 1


def matches(word: str, term: str, prefix: bool) -> bool:
    """Oracle: a term matches the whole word, or as a word prefix when ``prefix``
    (one-character terms whole words only)."""
    return word == term or (prefix and len(term) > 1 and word.startswith(term))


VOCAB = [
    "a",
    "b",
    "apple",
    "apply",
    "banana",
    "band",
    "cherry",
    "chess",
    "delta",
    "deltas",
    "echo",
    "eel",
]


def test_search_matches_oracle(store: ConversationStore) -> None:
    rng = random.Random(7)
    conv = new_conv(store)
    docs: dict[int, list[str]] = {}
    for _ in range(150):
        words = rng.choices(VOCAB, k=rng.randint(1, 6))
        text = " ".join(w.upper() if rng.random() < 0.2 else w for w in words) + "."
        msg = store.append_message(conv.id, Message(Role.USER, text))
        docs[msg.id or 0] = words

    prefixes = sorted({w[:n] for w in VOCAB for n in range(1, len(w) + 1)})

    def expected(terms: list[str], prefix: list[bool]) -> set[int]:
        return {
            mid
            for mid, words in docs.items()
            if all(any(matches(w, t, p) for w in words) for t, p in zip(terms, prefix, strict=True))
        }

    @settings(max_examples=examples(150), deadline=None)
    @given(
        terms=st.lists(st.sampled_from(prefixes), min_size=1, max_size=3),
        starred=st.lists(st.booleans(), min_size=3, max_size=3),
        typing=st.booleans(),
    )
    def check(terms: list[str], starred: list[bool], typing: bool) -> None:
        # Whole words unless typed with '*' (or last while typing); if nothing
        # matches that way, every word as a prefix.
        prefix = [starred[i] or (typing and i == len(terms) - 1) for i in range(len(terms))]
        want = expected(terms, prefix) or expected(terms, [True] * len(terms))
        query = " ".join(t + "*" * s for t, s in zip(terms, starred[: len(terms)], strict=True))
        got = {h.message_id for h in store.search(query, limit=1000, typing=typing)}
        assert got == want

    check()


# -- deletion leaves no trace -------------------------------------------------------


def test_delete_leaves_no_trace(store: ConversationStore) -> None:
    secret = "zyxsecretquokka"
    keep = new_conv(store)
    store.append_message(keep.id, Message(Role.USER, "kept message " * 20))
    conv = new_conv(store, system_prompt=f"sys {secret}")
    store.append_message(conv.id, Message(Role.USER, f"tell me about {secret} please"))
    reply = store.start_reply(conv.id)
    for i in range(5):
        store.checkpoint_reply(reply.id or 0, f"the {secret} is " + "long text " * (i * 200))
    store.finish_reply(reply.id or 0, f"the {secret} is done", Status.COMPLETE)
    store.append_message(keep.id, Message(Role.USER, "more kept text"))
    assert store.search(secret)

    store.delete(conv.id)

    assert store.search(secret) == []
    assert len(store.search("kept")) == 2
    conn = raw(store.path)
    conn.execute("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, messages_fts, 'row')")
    terms = {r[0] for r in conn.execute("SELECT term FROM temp.vocab")}
    assert "kept" in terms and secret not in terms
    conn.close()
    needle = secret.encode()
    for suffix in ("", "-wal", "-journal"):
        side = store.path.with_name(store.path.name + suffix)
        if side.exists():
            assert needle not in side.read_bytes(), side


# -- files, permissions and schema ----------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_default_location_and_permissions(tmp_path: Path) -> None:
    with ConversationStore.open() as s:
        assert s.path == tmp_path / "home" / "data" / "conversations.db"
        new_conv(s)
        assert mode(s.path.parent) == 0o700
        assert mode(s.path.parent.parent) == 0o700  # created by us too
        assert mode(s.path) == 0o600
        for suffix in ("-wal", "-shm"):
            side = s.path.with_name(s.path.name + suffix)
            assert side.exists() and mode(side) == 0o600
    (tmp_path / "home" / "data").chmod(0o755)
    ConversationStore.open().close()
    assert mode(tmp_path / "home" / "data") == 0o700


def test_new_database_schema(store: ConversationStore) -> None:
    conn = raw(store.path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 1
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    store.close()
    with ConversationStore.open(store.path) as again:  # reopening migrates nothing
        assert again.list_conversations() == []


def test_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    ConversationStore.open(path).close()
    conn = raw(path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer mixchat") as err:
        ConversationStore.open(path)
    message = str(err.value)
    assert str(path) in message and "999" in message and "\n" not in message
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [b"this is not a database\n" * 300, b"SQLite format 3\x00" + b"\xff" * 8000],
    ids=["text", "bad-header"],
)
def test_invalid_file_is_refused_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "c.db"
    path.write_bytes(content)
    with pytest.raises(StoreError, match="not a valid mixchat database") as err:
        ConversationStore.open(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.db"]


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = raw(path)
    conn.execute("CREATE TABLE notes (x)")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a valid mixchat database"):
        ConversationStore.open(path)
    assert path.read_bytes() == before


def test_corrupt_pages_raise_store_error(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with ConversationStore.open(path) as s:
        conv = new_conv(s)
        for i in range(50):
            s.append_message(conv.id, Message(Role.USER, f"message {i} " * 100))
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xa5" * (len(data) - 4096)  # keep page 1 (header and schema)
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError), ConversationStore.open(path) as s:
        s.get_conversation(conv.id)
        s.search("message")


def test_unusable_location(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create"):
        ConversationStore.open(blocker / "sub" / "c.db")


def test_read_only_file(tmp_path: Path) -> None:
    """A read-only database gives a one-line StoreError and is left as it was.

    Root ignores file modes, so as root the file is made immutable (chattr +i)."""
    path = tmp_path / "c.db"
    ConversationStore.open(path).close()
    before = path.read_bytes()
    path.chmod(0o400)
    immutable = os.geteuid() == 0
    if immutable:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        with pytest.raises(StoreError) as caught, ConversationStore.open(path) as s:
            new_conv(s)
        message = str(caught.value)
        assert str(path) in message and "\n" not in message
        assert "read-only" in message or "cannot open" in message
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("attempt to write a readonly database", "read-only"),
        ("database or disk is full", "disk is full"),
        ("disk I/O error", "disk I/O error"),
        ("unable to open database file", "cannot open"),
        ("database disk image is malformed", "not a valid mixchat database"),
        ("database is locked", "locked"),
    ],
)
def test_error_messages(message: str, expected: str) -> None:
    err = _error(sqlite3.OperationalError(message), Path("/x/c.db"))
    assert expected in str(err) and "/x/c.db" in str(err)


# -- several processes and crashes ---------------------------------------------------


def _append_many(path: str, conv_id: str | None, tag: str, barrier: object) -> None:
    """Run in a spawned process: append 500 messages, one transaction each."""
    barrier.wait()  # type: ignore[attr-defined]  # both processes begin together
    with ConversationStore.open(Path(path)) as s:
        if conv_id is None:
            conv_id = new_conv(s).id
        for i in range(500):
            s.append_message(conv_id, Message(Role.USER, f"{tag} {i}"))


@pytest.mark.parametrize("shared", [True, False], ids=["same-conversation", "two-conversations"])
def test_two_processes_append_at_once(tmp_path: Path, shared: bool) -> None:
    path = tmp_path / "c.db"
    targets: list[str | None] = [None, None]  # each process creates the db and a conversation
    if shared:
        with ConversationStore.open(path) as s:
            targets = [new_conv(s).id] * 2
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_append_many, args=(str(path), conv_id, tag, barrier))
        for conv_id, tag in zip(targets, "ab", strict=True)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
    assert [proc.exitcode for proc in procs] == [0, 0]
    with ConversationStore.open(path) as s:
        convs = s.list_conversations()
        assert len(convs) == (1 if shared else 2)
        messages = [m for c in convs for m in s.get_conversation(c.id).messages]
        assert sorted(m.content for m in messages) == sorted(
            f"{tag} {i}" for tag in "ab" for i in range(500)
        )
        assert sum(c.message_count for c in convs) == 1000
    conn = raw(path)
    positions = [
        r[0]
        for r in conn.execute("SELECT position FROM messages ORDER BY conversation_id, position")
    ]
    conn.close()
    assert positions == (list(range(1000)) if shared else list(range(500)) * 2)


CRASH_SCRIPT = """
import os, signal, sys
from pathlib import Path
from mixchat.conversation import Message, Role
from mixchat.store import ConversationStore
s = ConversationStore.open(Path(sys.argv[1]))
conv = s.create_conversation(model="m", system_prompt=None, settings={})
s.append_message(conv.id, Message(Role.USER, "question"))
reply = s.start_reply(conv.id)
s.checkpoint_reply(reply.id, "partial")
s.checkpoint_reply(reply.id, "partial answer " * 500)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_killed_mid_reply_leaves_interrupted_partial(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(path)], cwd=REPO_ROOT, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with ConversationStore.open(path) as s:
        conv_id = s.last_conversation_id()
        assert conv_id is not None
        question, reply = s.get_conversation(conv_id).messages
        assert (question.content, question.status) == ("question", Status.COMPLETE)
        assert (reply.content, reply.status) == ("partial answer " * 500, Status.INTERRUPTED)
        assert [h.message_id for h in s.search("partial")] == [reply.id]
    conn = raw(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
    conn.close()


STREAM_SCRIPT = """
import sys
from pathlib import Path
from mixchat.conversation import Message, Role
from mixchat.store import ConversationStore
s = ConversationStore.open(Path(sys.argv[1]))
conv = s.create_conversation(model="m", system_prompt=None, settings={})
reply = s.start_reply(conv.id)
text = ""
while True:  # stream until killed
    text += "token%d " % len(text)
    s.checkpoint_reply(reply.id, text)
    if text == "token0 token7 ":  # the second checkpoint is in: say so once
        print("streaming", flush=True)
"""


def test_killed_at_a_random_moment_while_streaming(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", STREAM_SCRIPT, str(path)], cwd=REPO_ROOT, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"streaming\n"
    time.sleep(random.uniform(0.05, 0.3))
    proc.kill()
    proc.wait()
    with ConversationStore.open(path) as s:
        conv_id = s.last_conversation_id()
        assert conv_id is not None
        (reply,) = s.get_conversation(conv_id).messages
        assert reply.status == Status.INTERRUPTED
        assert reply.content.startswith("token0 token7 ")
        assert reply.content.endswith(" ")  # a whole checkpoint, never a torn one
    conn = raw(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
    conn.close()
