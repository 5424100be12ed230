"""Export then import round-trips a conversation exactly, hostile text included.

Property-based, through the command line's own code (typer's CliRunner runs the same
app in-process, which keeps hundreds of examples cheap): import a generated JSON
conversation, export it, import the export, and compare every field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mixchat.cli import app
from mixchat.textsafe import scrub_surrogates
from tests.examples import examples

PIECES = [
    "[bold]", "[/bold]", "[/INST]", "[INST]", "</s>", "<s>", "[link=file:///etc/passwd]",
    "\x1b[31m", "\x1b]0;title\x07", "\x1b]52;c;aGk=\x07", "\x9b2J", "\x00", "\r", "\t", "\n",
    "\ud800", "\udcff", "🦓", "中文", "e\u0301", "\u202e", "\ufeff", "\\", '"', "```",
]  # fmt: skip

text = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=12)), max_size=6).map("".join)
timestamp = st.floats(min_value=0, max_value=4e9, allow_nan=False)
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant"]),
        "content": text,
        "mixchat": st.fixed_dictionaries(
            {"status": st.sampled_from(["complete", "interrupted", "error"])},
            optional={
                "created_at": timestamp,
                "prompt_tokens": st.integers(0, 2**40),
                "completion_tokens": st.integers(0, 2**40),
                "ttft_s": st.floats(0, 1e3),
                "duration_s": st.floats(0, 1e3),
            },
        ),
    }
)
conversation = st.fixed_dictionaries(
    {"messages": st.lists(message, min_size=1, max_size=4)},
    optional={
        "title": text,
        "system_prompt": st.one_of(st.none(), text),
        "model": text,
        "created_at": timestamp,
        "updated_at": timestamp,
        "settings": st.fixed_dictionaries(
            {},
            optional={
                "temperature": st.floats(0, 2),
                "max_new_tokens": st.integers(1, 4096),
                "other": st.recursive(
                    st.none() | st.booleans() | st.integers() | text,
                    lambda inner: st.lists(inner, max_size=2),
                    max_leaves=3,
                ),
            },
        ),
    },
)


def _invoke(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, (args, result.output)
    return result.stdout_bytes.decode("utf-8")  # .stdout would turn "\r\n" into "\n"


def _scrub(value: Any) -> Any:
    """What the store keeps of a value: lone surrogates become U+FFFD."""
    if isinstance(value, str):
        return scrub_surrogates(value)
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    return value


def _comparable(shown: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: v for k, v in shown.items() if k != "id"},
        "messages": [{k: v for k, v in m.items() if k != "id"} for m in shown["messages"]],
    }


@pytest.mark.e2e
@settings(
    max_examples=examples(80),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=conversation)
def test_export_import_round_trip_is_exact(data: dict[str, Any], tmp_path: Path) -> None:
    runner = CliRunner()
    source = tmp_path / "source.json"
    source.write_text(json.dumps(data), encoding="utf-8")  # \\ud800 escapes stay valid JSON
    first = _invoke(runner, "import", str(source)).strip()
    original = json.loads(_invoke(runner, "show", first, "--json"))

    expected = _scrub(json.loads(json.dumps(data)))  # JSON joins escaped surrogate pairs
    assert [m["content"] for m in original["messages"]] == [
        m["content"] for m in expected["messages"]
    ]
    assert [m["status"] for m in original["messages"]] == [
        m["mixchat"]["status"] for m in expected["messages"]
    ]
    assert original["system_prompt"] == expected.get("system_prompt")
    assert original["settings"] == expected.get("settings", {})
    if expected.get("title"):
        assert original["title"] == expected["title"]

    exported = tmp_path / "export.json"
    _invoke(runner, "export", first, "--format", "json", "-o", str(exported))
    second = _invoke(runner, "import", str(exported)).strip()
    copy = json.loads(_invoke(runner, "show", second, "--json"))
    assert second != first
    assert _comparable(copy) == _comparable(original)
    markdown = _invoke(runner, "export", first, "--format", "md")
    assert all(m["content"] in markdown for m in original["messages"])
