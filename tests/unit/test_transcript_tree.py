"""Export and import of a conversation's whole tree (``export --all-branches``): a round trip
keeps every branch and the shown path; a file that is not a tree is refused whole."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mixchat.conversation import Message, Role, Status
from mixchat.store import ConversationStore
from mixchat.transcript import TranscriptError, from_json, parse_json, to_json


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ConversationStore]:
    with ConversationStore.open(tmp_path / "conversations.db") as s:
        yield s


def branched(store: ConversationStore) -> str:
    """q1 with two answers (a1, then b1, shown), a follow-up under each, and an edited
    first question beside q1."""
    conv = store.create_conversation(model="m", system_prompt="be brief", settings={})
    q1 = store.append_message(conv.id, Message(Role.USER, "q1"))
    a1 = store.append_message(conv.id, Message(Role.ASSISTANT, "a1"))
    store.append_message(conv.id, Message(Role.USER, "under a1"))
    assert q1.id is not None and a1.id is not None
    b1 = store.start_reply(conv.id, parent_id=q1.id)
    assert b1.id is not None
    store.finish_reply(b1.id, "b1", Status.COMPLETE, prompt_tokens=4)
    store.append_message(conv.id, Message(Role.USER, "under b1"))
    store.add_sibling(q1.id, Message(Role.USER, "q1 edited"))
    store.switch_to(b1.id)  # shown: q1, b1, under b1
    return conv.id


def shape(store: ConversationStore, conv_id: str) -> tuple[list[str], set[tuple[str, str]]]:
    """The shown path's texts, and every (parent text, child text) link of the tree."""
    tree = store.get_tree(conv_id)
    everything = [*tree.messages, *tree.branches]
    text = {m.id: m.content for m in everything}
    links = {(text.get(m.parent_id, "-"), m.content) for m in everything}
    return [m.content for m in tree.messages], links


def export_text(store: ConversationStore, conv_id: str, *, all_branches: bool) -> str:
    conv = store.get_tree(conv_id) if all_branches else store.get_conversation(conv_id)
    return json.dumps(to_json(conv, all_branches=all_branches))


def test_the_whole_tree_round_trips(store: ConversationStore) -> None:
    conv_id = branched(store)
    data = json.loads(export_text(store, conv_id, all_branches=True))
    assert [m["content"] for m in data["messages"]] == ["be brief", "q1", "b1", "under b1"]
    assert sorted(m["content"] for m in data["branches"]) == ["a1", "q1 edited", "under a1"]
    back = store.import_conversation(from_json(parse_json(json.dumps(data).encode())))
    assert back.id != conv_id
    assert shape(store, back.id) == shape(store, conv_id)
    places = store.sibling_places(back.id)
    assert sorted(places.values()) == [(1, 2), (2, 2)]  # q1 of 2 first messages, b1 of 2
    assert store.get_conversation(back.id).messages[1].prompt_tokens == 4
    # and once more: an import of the import is the same tree
    again = export_text(store, back.id, all_branches=True)
    third = store.import_conversation(from_json(parse_json(again.encode())))
    assert shape(store, third.id) == shape(store, conv_id)


def test_a_plain_export_is_the_shown_path_as_before(store: ConversationStore) -> None:
    conv_id = branched(store)
    data = json.loads(export_text(store, conv_id, all_branches=False))
    assert "branches" not in data
    assert [m["content"] for m in data["messages"]] == ["be brief", "q1", "b1", "under b1"]
    assert all("id" not in m.get("mixchat", {}) for m in data["messages"])
    assert all("parent_id" not in m.get("mixchat", {}) for m in data["messages"])
    back = store.import_conversation(from_json(data))
    assert shape(store, back.id)[0] == ["q1", "b1", "under b1"]
    assert store.get_tree(back.id).branches == []


def tree_file() -> dict[str, Any]:
    """A small valid tree export: q (10) with answers 11 (shown) and 12, 13 under 12."""

    def item(mid: int, parent: int | None, role: str, text: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"id": mid}
        if parent is not None:
            meta["parent_id"] = parent
        return {"role": role, "content": text, "mixchat": meta}

    return {
        "messages": [item(10, None, "user", "q"), item(11, 10, "assistant", "a")],
        "branches": [item(12, 10, "assistant", "b"), item(13, 12, "user", "under b")],
    }


def set_meta(where: str, index: int, **values: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data[where][index]["mixchat"].update(values)

    return change


HOSTILE: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "dangling-parent": (set_meta("branches", 0, parent_id=99), "unknown parent 99"),
    "self-parent": (set_meta("branches", 1, parent_id=13), "cycle"),
    "two-cycle": (set_meta("branches", 0, parent_id=13), "cycle"),  # 12 <-> 13
    "duplicate-id": (set_meta("branches", 1, id=11), "used twice"),
    "path-through-a-branch": (set_meta("messages", 1, parent_id=12), "path is broken"),
    "path-not-from-a-first-message": (set_meta("messages", 0, parent_id=12), "path is broken"),
    "branch-without-id": (lambda d: d["branches"][1]["mixchat"].pop("id"), "has no id"),
    "branches-without-any-ids": (
        lambda d: [m["mixchat"].clear() for m in d["messages"] + d["branches"]],
        "branches need message ids",
    ),
    "negative-id": (set_meta("branches", 0, id=-1), "id must be a whole number"),
    "string-parent": (set_meta("branches", 0, parent_id="10"), "parent_id must be a whole"),
    "bool-id": (set_meta("branches", 0, id=True), "id must be a whole number"),
    "huge-id": (set_meta("branches", 0, id=2**70), "id must be a whole number"),
    "branches-not-a-list": (lambda d: d.update(branches={"a": 1}), "'branches' must be a list"),
    "branch-not-an-object": (lambda d: d["branches"].append("x"), "branch message 2 is not"),
    "system-branch": (
        lambda d: d["branches"].append({"role": "system", "content": "obey"}),
        "the system prompt has no branches",
    ),
    "unknown-role-branch": (
        lambda d: d["branches"].append({"role": "tool", "content": "x", "mixchat": {"id": 5}}),
        "branch message 2: unknown role 'tool'",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_what_is_not_a_tree_is_refused_with_one_line(store: ConversationStore, case: str) -> None:
    change, error = HOSTILE[case]
    data = tree_file()
    change(data)
    with pytest.raises(TranscriptError, match=error) as caught:
        from_json(parse_json(json.dumps(data).encode()))
    assert "\n" not in str(caught.value)
    assert store.list_conversations() == []


def test_the_valid_tree_file_is_taken(store: ConversationStore) -> None:
    saved = store.import_conversation(from_json(tree_file()))
    assert shape(store, saved.id) == (
        ["q", "a"],
        {("-", "q"), ("q", "a"), ("q", "b"), ("b", "under b")},
    )


def test_a_parent_in_another_conversation_is_unknown(store: ConversationStore) -> None:
    """Ids in a file are the file's own: a parent id naming a message of a stored
    conversation is refused, never linked across conversations."""
    conv_id = branched(store)
    foreign = store.get_conversation(conv_id).messages[-1].id
    data = tree_file()
    data["branches"][0]["mixchat"]["parent_id"] = foreign
    with pytest.raises(TranscriptError, match=f"unknown parent {foreign}"):
        from_json(data)
    assert [c.id for c in store.list_conversations()] == [conv_id]


def test_a_nesting_bomb_in_branches_is_refused() -> None:
    bomb = b'{"messages": [{"role": "user", "content": "q"}], "branches": ' + b"[" * 100_000
    bomb += b"]" * 100_000 + b"}"
    with pytest.raises(TranscriptError, match="nested more than"):
        parse_json(bomb)


@pytest.mark.slow
def test_a_very_deep_branch_imports_without_recursion(store: ConversationStore) -> None:
    """A chain 20,000 messages deep off the shown path: no recursion limit is hit on the
    way in, out or when switching to it."""
    data = tree_file()
    depth = 20_000
    roles = ["assistant", "user"]
    data["branches"] += [
        {"role": roles[i % 2], "content": f"deep {i}", "mixchat": {"id": 100 + i, "parent_id": p}}
        for i, p in enumerate([13, *range(100, 100 + depth - 1)])
    ]
    saved = store.import_conversation(from_json(parse_json(json.dumps(data).encode())))
    tree = store.get_tree(saved.id)
    assert len(tree.branches) == 2 + depth
    b = next(m for m in tree.branches if m.content == "b")
    assert b.id is not None
    path = store.switch_to(b.id).messages
    assert len(path) == 3 + depth and path[-1].content == f"deep {depth - 1}"
    out = to_json(store.get_tree(saved.id), all_branches=True)
    assert [m["content"] for m in out["branches"]] == ["a"]  # b's chain is shown now
