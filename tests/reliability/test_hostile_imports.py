"""Hostile imports: nesting, endless input, times from the future, system messages that
would be lost. Each refusal is one line and exit code 2, and nothing is saved."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from mixchat.conversation import Message, Role
from mixchat.store import ConversationStore
from tests.e2e.helpers import mixchat_exe
from tests.reliability.helpers import Result, assert_one_line_error, cli, database

pytestmark = pytest.mark.e2e

USER = {"role": "user", "content": "hello"}


def _import(tmp_path: Path, data: Any, **kwargs: Any) -> Result:
    source = tmp_path / "in.json"
    source.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return cli("import", str(source), **kwargs)


def _run_with_stdin(stdin: Any, env: dict[str, str] | None = None) -> Result:
    done = subprocess.run(
        [mixchat_exe(), "import", "-"],
        stdin=stdin,
        capture_output=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


# -- sizes and nesting ------------------------------------------------------------------


@pytest.mark.parametrize("levels", [101, 1_000, 100_000])
def test_deep_nesting_is_one_line(tmp_path: Path, mixchat_home: Path, levels: int) -> None:
    shapes = {
        "arrays": "[" * levels + "]" * levels,
        "objects": '{"a":' * levels + "1" + "}" * levels,
        "in a setting": json.dumps({"messages": [USER], "settings": {"x": 0}}).replace(
            "0", "[" * levels + "]" * levels
        ),
        "in a message": json.dumps([{**USER, "mixchat": {"a": 0}}]).replace(
            "0", '{"b":' * levels + "1" + "}" * levels
        ),
    }
    for text in shapes.values():
        assert_one_line_error(_import(tmp_path, text), 2, "nested more than 100 levels")
    assert not database(mixchat_home).exists()


def test_nesting_within_the_limit_imports(tmp_path: Path) -> None:
    data = {"messages": [USER], "settings": {"deep": json.loads("[" * 90 + "]" * 90)}}
    result = _import(tmp_path, data)
    assert result.code == 0, result.err


def test_endless_and_oversized_input_is_refused_at_the_limit(
    tmp_path: Path, mixchat_home: Path
) -> None:
    small = {"MIXCHAT_IMPORT_MAX_BYTES": "100000"}
    for result in (
        cli("import", "/dev/zero", env=small),
        cli("import", "/dev/zero"),  # the default limit (64 MiB) ends it too
        _run_with_stdin(open("/dev/zero", "rb"), env=small),  # noqa: SIM115 (closed by run)
    ):
        assert_one_line_error(result, 2, "import_max_bytes", "MIXCHAT_IMPORT_MAX_BYTES")
    # An endless pipe.
    yes = subprocess.Popen(["yes", "[1,"], stdout=subprocess.PIPE)
    try:
        assert yes.stdout is not None
        result = _run_with_stdin(yes.stdout, env=small)
    finally:
        yes.kill()
        yes.wait()
    assert_one_line_error(result, 2, "import_max_bytes", "100,000 bytes")
    # A regular file too big is refused before it is read; one at the limit is fine.
    exact = json.dumps([{**USER, "content": "x" * 1000}])
    assert_one_line_error(
        _import(tmp_path, exact, env={"MIXCHAT_IMPORT_MAX_BYTES": str(len(exact) - 1)}),
        2,
        "import_max_bytes",
    )
    assert not database(mixchat_home).exists()
    assert _import(tmp_path, exact, env={"MIXCHAT_IMPORT_MAX_BYTES": str(len(exact))}).code == 0
    assert_one_line_error(
        _import(tmp_path, exact, env={"MIXCHAT_IMPORT_MAX_BYTES": "lots"}),
        2,
        "MIXCHAT_IMPORT_MAX_BYTES",
    )


def test_import_of_a_directory_or_a_missing_file_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(cli("import", str(tmp_path)), 2, "directory")
    assert_one_line_error(cli("import", str(tmp_path / "missing.json")), 2, "no such file")


# -- times from the future and `-c` -------------------------------------------------------


def test_times_from_the_future_are_brought_to_now(tmp_path: Path) -> None:
    data = {
        "title": "from the future",
        "created_at": 1e11,
        "updated_at": 1e11,
        "messages": [{**USER, "mixchat": {"status": "complete", "created_at": 9e10}}],
    }
    before = time.time()
    result = _import(tmp_path, data)
    assert result.code == 0, result.err
    assert "3 times out of range" in result.err and "Traceback" not in result.err
    shown = json.loads(cli("show", result.out.strip(), "--json").out)
    stamps = [shown["created_at"], shown["updated_at"], shown["messages"][0]["created_at"]]
    assert all(before <= t <= time.time() for t in stamps), stamps
    listed = cli("list").out
    assert "5138" not in listed and time.strftime("%Y") in listed
    # Before 1970 (a year -1199): 1970.
    past = _import(tmp_path, {**data, "created_at": -1e11, "updated_at": -5.0})
    assert past.code == 0 and "3 times out of range" in past.err
    shown = json.loads(cli("show", past.out.strip(), "--json").out)
    assert (shown["created_at"], shown["updated_at"]) == (0, 0)
    assert "-1199" not in cli("list").out
    # A time a little ahead (another machine's clock) is kept as it is.
    ahead = time.time() + 60
    kept = _import(tmp_path, {**data, "created_at": ahead, "updated_at": ahead})
    assert kept.code == 0 and "2 times" not in kept.err
    assert json.loads(cli("show", kept.out.strip(), "--json").out)["updated_at"] == ahead


def test_continue_means_the_conversation_last_used_here(
    tmp_path: Path, mixchat_home: Path, tiny_model: Path
) -> None:
    def continued() -> Result:
        return cli("ask", "--model", str(tiny_model), "--show-prompt", "-c", "next", "--json")

    stranger = {"updated_at": 1e11, "messages": [{**USER, "content": "stranger's words"}]}
    imported = _import(tmp_path, stranger).out.strip()
    # Only imported conversations: nothing was used here yet.
    assert_one_line_error(continued(), 2, "none was used on this machine", "--conversation")
    with ConversationStore.open(database(mixchat_home)) as store:
        store.create_conversation(
            model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "mine")
        )
    _import(tmp_path, {**stranger, "updated_at": time.time() + 300})
    prompt = json.loads(continued().out)["text"]
    assert "mine" in prompt and "stranger" not in prompt
    # Continuing the imported one (here with --conversation) makes it the last used.
    done = cli(
        "ask", "--model", str(tiny_model), "--max-tokens", "2", "--conversation", imported, "go"
    )
    assert done.code == 0, done.err
    prompt = json.loads(continued().out)["text"]
    assert "stranger's words" in prompt and "mine" not in prompt


# -- system messages ----------------------------------------------------------------------


def test_system_messages_that_would_be_lost_are_refused(tmp_path: Path, mixchat_home: Path) -> None:
    cases = {
        "message 2": [{"role": "system", "content": "be brief"}, USER,
                      {"role": "system", "content": "now be verbose"}],
        "message 1": [{"role": "system", "content": "a"}, {"role": "system", "content": "b"}, USER],
        "differs": {"system_prompt": "field", "messages": [
            {"role": "system", "content": "message"}, USER]},
    }  # fmt: skip
    for needle, data in cases.items():
        line = assert_one_line_error(_import(tmp_path, data), 2, needle, "system message", "lost")
        assert "in.json" in line
    assert not database(mixchat_home).exists()
    # One system message that agrees with the field is the system prompt.
    ok = _import(tmp_path, {"system_prompt": "same", "messages": [
        {"role": "system", "content": "same"}, USER]})  # fmt: skip
    assert ok.code == 0, ok.err
    assert json.loads(cli("show", ok.out.strip(), "--json").out)["system_prompt"] == "same"
