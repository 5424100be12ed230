"""Search over hostile history through the command: a message holding one word 160,000
times, a 50 MB message, a 100 KB query. Before the bounds these took 11 s, forever and
seconds; the test has no timing threshold (the command's own time limit only stops a
hang), it checks that the answers are right and their size bounded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixchat.conversation import Message, Role
from mixchat.searchrank import SNIPPET_MAX_CHARS
from mixchat.store import MAX_QUERY_CHARS, ConversationStore
from tests.reliability.helpers import assert_one_line_error, cli, database

pytestmark = pytest.mark.e2e

PROSE = "the quick brown fox jumps over the lazy dog while the kettle sings "


def test_search_over_huge_messages_answers_with_short_lines(mixchat_home: Path) -> None:
    with ConversationStore.open(database(mixchat_home)) as store:
        conv = store.create_conversation(model="m", system_prompt=None, settings={})
        ids = [
            store.append_message(conv.id, Message(Role.USER, text)).id
            for text in ("kettle " * 160_000, PROSE * (50_000_000 // len(PROSE)), "a kettle")
        ]
    result = cli("search", "kettle", "--json", timeout=300)
    assert result.code == 0, result.err
    hits = json.loads(result.out)
    assert {h["message_id"] for h in hits} == set(ids)
    assert all("kettle" in h["snippet"] and len(h["snippet"]) <= SNIPPET_MAX_CHARS for h in hits)
    plain = cli("search", "kettle sings", timeout=300)
    assert plain.code == 0 and len(plain.out.splitlines()) == 1, plain.err
    assert len(plain.out) < 400


def test_a_100_kb_query_is_one_line(mixchat_home: Path) -> None:
    with ConversationStore.open(database(mixchat_home)) as store:
        store.create_conversation(
            model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, PROSE)
        )
    query = " ".join(f"w{i}x" for i in range(100_000 // 8))
    assert_one_line_error(cli("search", query), 2, f"at most {MAX_QUERY_CHARS:,}")
    assert cli("search", "kettle").code == 0
