"""History commands at their edges: ids that share a long prefix, titles with line breaks,
a write-ahead log deleted under a running mixchat."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mixchat.conversation import Message, Role
from mixchat.store import ConversationStore
from tests.reliability.helpers import assert_one_line_error, cli, database

pytestmark = pytest.mark.e2e


def _import(tmp_path: Path, data: object) -> str:
    source = tmp_path / "in.json"
    source.write_text(json.dumps(data))
    result = cli("import", str(source))
    assert result.code == 0, result.err
    return result.out.strip()


def test_ambiguous_ids_are_listed_with_enough_characters_to_tell_apart(tmp_path: Path) -> None:
    ids = [
        "0123456789abcdef0000000000000000",
        "0123456789abcdef0011111111111111",
        "0123456789abcdef1111111111111111",
    ]
    for n, conv_id in enumerate(ids):
        msgs = [{"role": "user", "content": f"q{n}"}]
        assert _import(tmp_path, {"id": conv_id, "title": f"t{n}", "messages": msgs}) == conv_id
    line = assert_one_line_error(cli("show", "0123"), 2, "ambiguous")
    shown = re.findall(r"([0-9a-f]{8,32}) \(t\d\)", line)
    assert len(shown) == 3 and len(set(shown)) == 3, line
    assert all(conv_id.startswith(prefix) for conv_id, prefix in zip(ids, shown, strict=True))
    for prefix in shown:  # each one shown is enough to pick that conversation
        assert cli("show", prefix, "--json").code == 0


def test_a_title_with_line_breaks_stays_on_its_line(tmp_path: Path) -> None:
    title = "first line\n# injected heading\r\n- and a list\u2028end"
    conv_id = _import(
        tmp_path,
        {"title": title, "model": "m`x\ny", "messages": [{"role": "user", "content": "q"}]},
    )
    markdown = cli("export", conv_id, "--format", "md").out.splitlines()
    assert markdown[0] == "# first line # injected heading - and a list end"
    assert not any(line.startswith(("# injected", "- and a list")) for line in markdown)
    assert "- model: ``m`x y``" in markdown
    shown = cli("show", conv_id).out.splitlines()
    assert shown[0] == "first line # injected heading - and a list end"
    listed = cli("list").out.splitlines()
    assert len(listed) == 2 and "first line # injected heading" in listed[1]
    # Renamed by the CLI, and the JSON export keeps the title exactly as it is.
    assert cli("rename", conv_id, "two\nlines").code == 0
    assert cli("export", conv_id, "--format", "md").out.splitlines()[0] == "# two lines"
    assert json.loads(cli("export", conv_id, "--format", "json").out)["title"] == "two\nlines"


def test_a_deleted_write_ahead_log_is_named_as_such(mixchat_home: Path) -> None:
    db = database(mixchat_home)
    with ConversationStore.open(db) as running:  # another mixchat, still open
        conv = running.create_conversation(model="m", system_prompt=None, settings={})
        running.append_message(conv.id, Message(Role.USER, "kept in the log"))
        db.with_name(db.name + "-wal").unlink()
        for args in (["list"], ["search", "kept"], ["rename", conv.id, "new"]):
            line = assert_one_line_error(cli(*args), 2, f"{db}-wal", "deleted")
            assert "full" not in line and "failing" not in line
    # The process that still held the log saved its contents when it closed.
    shown = cli("show", conv.id, "--json")
    assert shown.code == 0 and json.loads(shown.out)["messages"][0]["content"] == "kept in the log"
