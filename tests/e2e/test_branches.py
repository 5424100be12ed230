"""End to end: `fork`, `export --all-branches` and `import` of a tree, through the installed
CLI over a real store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixchat.conversation import Message, Role, Status
from mixchat.store import ConversationStore
from tests.e2e.helpers import run, show_json

pytestmark = pytest.mark.e2e


@pytest.fixture
def branched() -> str:
    """q1 answered twice (the second answer shown), and a follow-up under each answer."""
    with ConversationStore.open() as store:
        conv = store.create_conversation(model="tiny", system_prompt="Be kind.", settings={})
        q1 = store.append_message(conv.id, Message(Role.USER, "q1"))
        store.append_message(conv.id, Message(Role.ASSISTANT, "old answer"))
        store.append_message(conv.id, Message(Role.USER, "under old"))
        assert q1.id is not None
        again = store.start_reply(conv.id, parent_id=q1.id)
        assert again.id is not None
        store.finish_reply(again.id, "new answer", Status.COMPLETE)
        store.append_message(conv.id, Message(Role.USER, "under new"))
        return conv.id


def contents(conversation_id: str) -> list[str]:
    return [m["content"] for m in show_json(conversation_id)["messages"]]


def listed() -> list[str]:
    return [row["id"] for row in json.loads(run("list", "--json").stdout)]


def test_show_and_plain_export_follow_the_shown_path(branched: str) -> None:
    assert contents(branched) == ["q1", "new answer", "under new"]
    assert json.loads(run("list", "--json").stdout)[0]["message_count"] == 3
    data = json.loads(run("export", branched, "--format", "json").stdout)
    assert [m["content"] for m in data["messages"]] == ["Be kind.", "q1", "new answer", "under new"]
    assert "branches" not in data
    md = run("export", branched).stdout
    assert "new answer" in md and "old answer" not in md


def test_all_branches_round_trip(branched: str, tmp_path: Path) -> None:
    out = tmp_path / "tree.json"
    result = run("export", branched, "--all-branches", "-o", str(out))  # json by default
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    assert sorted(m["content"] for m in data["branches"]) == ["old answer", "under old"]
    imported = run("import", str(out))
    assert imported.returncode == 0, imported.stderr
    new_id = imported.stdout.strip()
    assert contents(new_id) == contents(branched)
    again = json.loads(run("export", new_id, "--all-branches").stdout)

    def links(doc: dict) -> set[tuple[str, str]]:  # type: ignore[type-arg]
        items = [m for m in doc["messages"] + doc["branches"] if m["role"] != "system"]
        text = {m["mixchat"]["id"]: m["content"] for m in items}
        return {(text.get(m["mixchat"].get("parent_id"), "-"), m["content"]) for m in items}

    assert links(again) == links(data)
    refused = run("export", branched, "--all-branches", "--format", "md")
    assert refused.returncode == 2 and "--all-branches" in refused.stderr


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda d: d["branches"][0]["mixchat"].update(parent_id=10**6), "unknown parent"),
        (
            lambda d: d["branches"][1]["mixchat"].update(
                parent_id=d["branches"][1]["mixchat"]["id"]
            ),
            "cycle",
        ),
        (
            lambda d: d["messages"][2]["mixchat"].update(
                parent_id=d["branches"][0]["mixchat"]["id"]
            ),
            "path is broken",
        ),
        (lambda d: d.update(branches="[" * 200), "must be a list"),
    ],
    ids=["dangling", "self-cycle", "broken-path", "not-a-list"],
)
def test_import_of_a_broken_tree_is_refused_whole(
    branched: str, tmp_path: Path, change, error: str
) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(run("export", branched, "--all-branches").stdout)
    change(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    result = run("import", str(bad))
    assert result.returncode == 2, result.stderr
    assert error in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("mixchat: error:") and "Traceback" not in result.stderr
    assert listed() == [branched]


def test_import_refuses_a_nesting_bomb(branched: str, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.json"
    bomb.write_text('{"messages": [], "branches": ' + "[" * 50_000 + "]" * 50_000 + "}")
    result = run("import", str(bomb))
    assert result.returncode == 2 and "nested more than" in result.stderr
    assert listed() == [branched]


def test_fork_copies_the_shown_path(branched: str) -> None:
    whole = run("fork", branched[:6])
    assert whole.returncode == 0, whole.stderr
    fork_id = whole.stdout.strip()
    assert fork_id != branched and contents(fork_id) == ["q1", "new answer", "under new"]
    assert f"to {fork_id[:8]}" in whole.stderr
    part = run("fork", branched, "--at", "2")
    assert part.returncode == 0, part.stderr
    part_id = part.stdout.strip()
    assert contents(part_id) == ["q1", "new answer"]
    assert show_json(part_id)["system_prompt"] == "Be kind."
    assert show_json(part_id)["title"] == "q1 (fork)"
    # a fork has no branches, and the original keeps its own
    tree = json.loads(run("export", part_id, "--all-branches").stdout)
    assert tree["branches"] == []
    # removing the original leaves the forks whole
    assert run("rm", branched).returncode == 0
    assert contents(part_id) == ["q1", "new answer"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--at", "4"], "shows 3 messages (1 to 3)"),
        (["--at", "0"], "below the minimum"),
        (["--at", "two"], "--at"),
    ],
)
def test_fork_refuses_a_message_it_does_not_have(
    branched: str, args: list[str], error: str
) -> None:
    result = run("fork", branched, *args)
    assert result.returncode == 2 and error in result.stderr, result.stderr
    assert listed() == [branched]


def test_fork_of_nothing(branched: str) -> None:
    assert run("fork", "ffffffff").returncode == 2
    with ConversationStore.open() as store:
        empty = store.create_conversation(model="m", system_prompt=None, settings={})
    result = run("fork", empty.id)
    assert result.returncode == 2 and "no messages to fork" in result.stderr
    assert len(listed()) == 2


def test_search_finds_every_branch_and_says_which_is_not_shown(branched: str) -> None:
    hits = {h["snippet"]: h["shown"] for h in json.loads(run("search", "answer", "--json").stdout)}
    assert hits == {"old answer": False, "new answer": True}
    lines = run("search", "answer").stdout.splitlines()
    assert any("[assistant, another branch] old answer" in line for line in lines)
    assert any("[assistant] new answer" in line for line in lines)
