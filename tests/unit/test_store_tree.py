"""Messages form a tree: siblings instead of deletions, the shown path, switching, deleting a
branch, forks, search on every branch, and the migration of conversations saved as lines."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixchat.conversation import Conversation, Message, Role, Status
from mixchat.store import MIGRATIONS, ConversationStore, NotFoundError, StoreError


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "db" / "conversations.db"


@pytest.fixture
def store(db: Path) -> Iterator[ConversationStore]:
    with ConversationStore.open(db) as s:
        yield s


def line(store: ConversationStore, *texts: str) -> tuple[str, list[Message]]:
    """A conversation of alternating user and assistant messages."""
    conv = store.create_conversation(model="m", system_prompt=None, settings={})
    roles = [Role.USER, Role.ASSISTANT]
    saved = [store.append_message(conv.id, Message(roles[i % 2], t)) for i, t in enumerate(texts)]
    return conv.id, saved


def shown(store: ConversationStore, conv_id: str) -> list[str]:
    return [m.content for m in store.get_conversation(conv_id).messages]


def ids(messages: list[Message]) -> list[int]:
    found = [m.id for m in messages]
    assert None not in found
    return found  # type: ignore[return-value]


def count(store: ConversationStore, conv_id: str) -> int:
    (row,) = [c for c in store.list_conversations() if c.id == conv_id]
    return row.message_count


def answer_again(store: ConversationStore, conv_id: str, question: Message, text: str) -> Message:
    """A reply to ``question`` beside its earlier ones (regenerate), finished."""
    assert question.id is not None
    reply = store.start_reply(conv_id, parent_id=question.id)
    assert reply.id is not None
    store.finish_reply(reply.id, text, Status.COMPLETE)
    return reply


# -- siblings and the shown path -------------------------------------------------------------


def test_a_new_answer_to_a_question_is_a_sibling_and_is_shown(store: ConversationStore) -> None:
    conv_id, (q, a1) = line(store, "question", "answer one")
    a2 = store.start_reply(conv_id, parent_id=q.id)
    assert a2.id is not None and a2.parent_id == q.id
    store.finish_reply(a2.id, "answer two", Status.COMPLETE)
    assert shown(store, conv_id) == ["question", "answer two"]
    assert [m.content for m in store.siblings(a2.id)] == ["answer one", "answer two"]
    assert store.siblings(a1.id) == store.siblings(a2.id)
    assert store.sibling_places(conv_id) == {a2.id: (2, 2)}
    assert count(store, conv_id) == 2  # the shown path, as `show` prints it
    tree = store.get_tree(conv_id)
    assert [m.content for m in tree.messages] == ["question", "answer two"]
    assert [(m.content, m.parent_id) for m in tree.branches] == [("answer one", q.id)]
    # the path goes on from the new answer
    nxt = store.append_message(conv_id, Message(Role.USER, "follow-up"))
    assert nxt.parent_id == a2.id
    assert shown(store, conv_id) == ["question", "answer two", "follow-up"]
    assert count(store, conv_id) == 3


def test_an_edit_is_a_sibling_of_the_edited_message(store: ConversationStore) -> None:
    conv_id, (_q1, a1, q2, _a2) = line(store, "one", "answer one", "tow", "answer tow")
    assert q2.id is not None
    edited = store.add_sibling(q2.id, Message(Role.USER, "two"), conversation_id=conv_id)
    assert edited.parent_id == a1.id
    assert shown(store, conv_id) == ["one", "answer one", "two"]
    assert [m.content for m in store.siblings(q2.id)] == ["tow", "two"]
    assert store.sibling_places(conv_id) == {edited.id: (2, 2)}
    # nothing was lost: the old question still has its answer
    assert [m.content for m in store.switch_to(q2.id).messages] == [
        "one",
        "answer one",
        "tow",
        "answer tow",
    ]
    assert store.sibling_places(conv_id) == {q2.id: (1, 2)}
    with pytest.raises(NotFoundError):  # a message of another conversation
        other, _ = line(store, "elsewhere")
        store.add_sibling(q2.id, Message(Role.USER, "x"), conversation_id=other)


def test_editing_a_first_message_makes_two_first_messages(store: ConversationStore) -> None:
    conv_id, (q, _a) = line(store, "Waht is 2+2", "4")
    assert q.id is not None
    new = store.add_sibling(q.id, Message(Role.USER, "What is 2+2?"))
    assert new.parent_id is None
    assert shown(store, conv_id) == ["What is 2+2?"]
    assert [m.content for m in store.siblings(new.id)] == ["Waht is 2+2", "What is 2+2?"]  # type: ignore[arg-type]
    assert store.sibling_places(conv_id) == {new.id: (2, 2)}
    assert store.get_conversation(conv_id).title == "Waht is 2+2"  # the title stays


def test_switching_goes_down_the_most_recently_shown_branch(store: ConversationStore) -> None:
    conv_id, (q, a1) = line(store, "q", "a1")
    assert q.id is not None and a1.id is not None
    store.append_message(conv_id, Message(Role.USER, "q under a1"))
    store.append_message(conv_id, Message(Role.ASSISTANT, "deep under a1"))
    a2 = store.start_reply(conv_id, parent_id=q.id)
    assert a2.id is not None
    store.append_message(conv_id, Message(Role.USER, "q under a2"))
    # back to a1: the path goes on down to where it was, not just to a1
    assert shown(store, conv_id) == ["q", "", "q under a2"]
    assert [m.content for m in store.switch_to(a1.id).messages] == [
        "q",
        "a1",
        "q under a1",
        "deep under a1",
    ]
    assert count(store, conv_id) == 4
    # two branches under a1: the one shown last wins, whichever is newer
    under = store.get_conversation(conv_id).messages[2]
    assert under.id is not None
    alt = store.add_sibling(under.id, Message(Role.USER, "other q under a1"))
    assert alt.id is not None
    store.switch_to(under.id)
    store.switch_to(a2.id)
    assert shown(store, store.switch_to(a1.id).id)[-1] == "deep under a1"
    store.switch_to(alt.id)
    store.switch_to(a2.id)
    assert shown(store, store.switch_to(a1.id).id)[-1] == "other q under a1"
    # switching to a message on the shown path keeps the path
    before = shown(store, conv_id)
    assert [m.content for m in store.switch_to(q.id).messages] == before


def test_switching_counts_as_use_and_is_news_to_other_windows(
    store: ConversationStore, db: Path
) -> None:
    conv_id, (q, a1) = line(store, "q", "a1")
    assert q.id is not None and a1.id is not None
    store.start_reply(conv_id, parent_id=q.id)
    later, _ = line(store, "a newer conversation")
    assert store.last_conversation_id() == later
    version = store.data_version()
    store.switch_to(a1.id)
    assert store.last_conversation_id() == conv_id  # `-c` goes on with it
    assert store.data_version() == version  # our own switch is not news
    with ConversationStore.open(db) as other:
        other.switch_to(ids(store.siblings(a1.id))[1])
    assert store.data_version() != version
    assert shown(store, conv_id) == ["q", ""]


# -- deleting a branch -------------------------------------------------------------------


def test_deleting_from_a_message_deletes_its_branch_only(store: ConversationStore) -> None:
    conv_id, (q, a1, _q2, a2) = line(store, "q", "a1", "q2", "a2")
    assert q.id is not None and a1.id is not None
    b1 = answer_again(store, conv_id, q, "b1")
    store.append_message(conv_id, Message(Role.USER, "under b1"))
    assert store.truncate_from(ids([b1])[0]) == 2
    # the shown path went through it: the parent's remaining branch is shown
    assert shown(store, conv_id) == ["q", "a1", "q2", "a2"]
    assert count(store, conv_id) == 4
    assert store.sibling_places(conv_id) == {}
    assert store.search("b1") == [] and store.search("under") == []
    # a branch off the shown path: the shown path stays
    c1 = answer_again(store, conv_id, q, "c1")
    store.switch_to(a1.id)
    assert store.truncate_from(ids([c1])[0]) == 1
    assert shown(store, conv_id) == ["q", "a1", "q2", "a2"]
    # the last answer: the path ends at its question, as before branches
    assert store.truncate_from(ids([a2])[0]) == 1
    assert shown(store, conv_id) == ["q", "a1", "q2"]
    # the first message: nothing is left, the conversation stays, empty
    assert store.truncate_from(q.id) == 3
    assert shown(store, conv_id) == [] and count(store, conv_id) == 0
    with pytest.raises(NotFoundError):
        store.truncate_from(q.id)
    conn = sqlite3.connect(store.path)
    sizes = conn.execute("SELECT count(*) FROM message_sizes").fetchone()[0]
    assert sizes == conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()


def test_deleting_a_first_message_shows_another_first_message(store: ConversationStore) -> None:
    conv_id, (q, _) = line(store, "first", "answer")
    assert q.id is not None
    edited = store.add_sibling(q.id, Message(Role.USER, "first, edited"))
    store.append_message(conv_id, Message(Role.ASSISTANT, "answer to the edit"))
    assert edited.id is not None
    store.truncate_from(edited.id)
    assert shown(store, conv_id) == ["first", "answer"]


def test_deleting_a_long_branch_is_one_statement(store: ConversationStore) -> None:
    conv_id, messages = line(store, *[f"message {i}" for i in range(1_500)])
    assert count(store, conv_id) == 1_500
    assert store.truncate_from(ids(messages)[0]) == 1_500
    assert shown(store, conv_id) == [] and store.search("message") == []


def test_replace_from_swaps_a_branch(store: ConversationStore) -> None:
    conv_id, (q, a, q2, a2) = line(store, "q", "a", "tow", "answer tow")
    other = answer_again(store, conv_id, q, "another answer")  # a branch beside `a`
    store.switch_to(ids([a2])[0])
    new = store.replace_from(ids([q2])[0], Message(Role.USER, "two"))
    assert new.parent_id == a.id
    assert shown(store, conv_id) == ["q", "a", "two"]
    assert [m.content for m in store.siblings(ids([new])[0])] == ["two"]
    assert [m.id for m in store.siblings(ids([a])[0])] == [a.id, other.id]


# -- forks -----------------------------------------------------------------------------------


def test_fork_copies_the_path_up_to_a_message(store: ConversationStore) -> None:
    conv = store.create_conversation(
        model="mixtral", system_prompt="be brief", settings={"temperature": 0.2}
    )
    texts = ["q1", "a1", "q2", "a2"]
    saved = [
        store.append_message(conv.id, Message([Role.USER, Role.ASSISTANT][i % 2], t))
        for i, t in enumerate(texts)
    ]
    store.finish_reply(ids(saved)[1], "a1", Status.COMPLETE, prompt_tokens=3, ttft_s=0.5)
    answer_again(store, conv.id, saved[0], "other a1")  # a branch the fork does not take
    store.switch_to(ids(saved)[3])
    fork = store.fork(ids(saved)[1])
    assert fork.id != conv.id
    assert (fork.title, fork.model, fork.system_prompt, fork.settings) == (
        "q1 (fork)",
        "mixtral",
        "be brief",
        {"temperature": 0.2},
    )
    got = store.get_tree(fork.id)
    assert [m.content for m in got.messages] == ["q1", "a1"] and got.branches == []
    assert got.messages == fork.messages
    assert (got.messages[1].prompt_tokens, got.messages[1].ttft_s) == (3, 0.5)
    assert not set(ids(got.messages)) & set(ids(saved))  # copies
    assert store.last_conversation_id() == fork.id  # `-c` continues the fork
    assert count(store, fork.id) == 2
    # the two go their own ways; removing one leaves the other whole
    store.append_message(fork.id, Message(Role.USER, "only in the fork"))
    assert shown(store, conv.id) == texts
    store.delete(conv.id)
    assert shown(store, fork.id) == ["q1", "a1", "only in the fork"]
    assert [h.conversation_id for h in store.search("q1")] == [fork.id]


def test_fork_of_a_branch_not_shown(store: ConversationStore) -> None:
    conv_id, (q, _) = line(store, "q", "a")
    other = answer_again(store, conv_id, q, "b")
    store.switch_to(ids([_])[0])
    fork = store.fork(ids([other])[0])
    assert shown(store, fork.id) == ["q", "b"]
    with pytest.raises(NotFoundError):
        store.fork(10**9)


# -- search ------------------------------------------------------------------------------


def test_search_finds_every_branch_and_says_which_is_shown(store: ConversationStore) -> None:
    conv_id, (q, a1) = line(store, "about zebras", "zebras are striped")
    a2 = answer_again(store, conv_id, q, "zebras run fast")
    _plain, _ = line(store, "zebras in a line")
    hits = {h.message_id: h.shown for h in store.search("zebras")}
    assert hits == {q.id: True, a1.id: False, a2.id: True, ids(_)[0]: True}
    store.switch_to(ids([a1])[0])
    hits = {h.message_id: h.shown for h in store.search("zebras")}
    assert (hits[a1.id], hits[a2.id]) == (True, False)  # type: ignore[index]


# -- import --------------------------------------------------------------------------------


def tree_conversation() -> Conversation:
    def msg(mid: int, parent: int | None, role: Role, text: str) -> Message:
        return Message(role, text, id=mid, parent_id=parent)

    conv = Conversation(id="", title="", created_at=1.0, updated_at=2.0)
    conv.messages = [msg(10, None, Role.USER, "q"), msg(12, 10, Role.ASSISTANT, "newer a")]
    conv.branches = [
        msg(11, 10, Role.ASSISTANT, "older a"),
        msg(13, 11, Role.USER, "under older"),
        msg(9, None, Role.USER, "first q"),
    ]
    return conv


def test_import_of_a_tree_keeps_its_shape_and_shown_path(store: ConversationStore) -> None:
    saved = store.import_conversation(tree_conversation())
    assert shown(store, saved.id) == ["q", "newer a"]
    assert saved.messages == store.get_conversation(saved.id).messages
    shown_ids = ids(saved.messages)
    assert [m.content for m in store.siblings(shown_ids[1])] == ["older a", "newer a"]
    assert [m.content for m in store.siblings(shown_ids[0])] == ["first q", "q"]
    assert store.sibling_places(saved.id) == {shown_ids[0]: (2, 2), shown_ids[1]: (2, 2)}
    tree = store.get_tree(saved.id)
    assert sorted(m.content for m in tree.branches) == ["first q", "older a", "under older"]
    assert count(store, saved.id) == 2
    assert store.last_conversation_id() is None  # imported, not used here yet


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda c: setattr(c.branches[0], "parent_id", 99), "unknown parent 99"),
        (lambda c: setattr(c.branches[1], "id", 10), "used twice"),
        (lambda c: setattr(c.messages[1], "parent_id", 11), "path is broken"),
        (lambda c: setattr(c.branches[2], "id", None), "has no id"),
        (
            lambda c: setattr(c.branches[0], "parent_id", 13),
            "cycle",
        ),
    ],
    ids=["unknown-parent", "duplicate-id", "broken-path", "missing-id", "cycle"],
)
def test_import_refuses_what_is_not_a_tree(store: ConversationStore, change, error: str) -> None:  # type: ignore[no-untyped-def]
    conv = tree_conversation()
    change(conv)
    with pytest.raises(StoreError, match=error):
        store.import_conversation(conv)
    assert store.list_conversations() == []


# -- migration of conversations saved as lines ------------------------------------------------


def test_conversations_saved_as_lines_become_trees_with_one_path(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for migrate in MIGRATIONS[:4]:  # the schema before branches (4: attachments)
        migrate(conn)
    conn.execute("PRAGMA user_version = 4")
    now = time.time()
    lines = {"a" * 32: 4, "b" * 32: 1, "c" * 32: 0}
    for conv_id, n in lines.items():
        conn.execute(
            "INSERT INTO conversations (id, title, created_at, updated_at, used_at)"
            " VALUES (?, 'old', ?, ?, ?)",
            (conv_id, now, now, now),
        )
        for i in range(n):
            conn.execute(
                "INSERT INTO messages (conversation_id, position, role, content, status,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, 'complete', ?, ?)",
                (conv_id, i * 3, ["user", "assistant"][i % 2], f"{conv_id[0]} {i} okapi", now, now),
            )
    conn.close()
    with ConversationStore.open(path) as store:
        a = store.get_conversation("a" * 32)
        assert [m.content for m in a.messages] == [f"a {i} okapi" for i in range(4)]
        assert [m.parent_id for m in a.messages] == [None, *ids(a.messages)[:-1]]
        assert {c.id: c.message_count for c in store.list_conversations()} == lines
        assert store.sibling_places("a" * 32) == {}
        assert store.get_tree("a" * 32).branches == []
        assert len(store.search("okapi")) == 5 and all(h.shown for h in store.search("okapi"))
        # the line goes on, and branches from where it was
        q = a.messages[2]
        answer_again(store, "a" * 32, q, "a new third answer")
        assert [m.content for m in store.siblings(ids(a.messages)[3])] == [
            "a 3 okapi",
            "a new third answer",
        ]
        store.append_message("c" * 32, Message(Role.USER, "first in c"))
        assert shown(store, "c" * 32) == ["first in c"]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    positions = conn.execute(
        "SELECT position FROM messages WHERE conversation_id = ? ORDER BY id", ("a" * 32,)
    ).fetchall()
    assert [p[0] for p in positions] == [0, 1, 2, 3, 3]  # depths: the new answer beside 3
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
    conn.close()
