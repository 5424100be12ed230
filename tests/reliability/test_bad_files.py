"""Corrupt, foreign and newer databases; broken and mistyped config files.

Every command that reads the file says so in one line naming it, exits 2, and leaves
the file byte-identical (no -wal or -shm left beside it either).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixchat.config import ConfigError, load_settings
from mixchat.conversation import Message, Role, Status
from mixchat.store import ConversationStore
from mixchat.transcript import from_json
from tests.reliability.helpers import Result, assert_one_line_error, cli, run_on_pty

pytestmark = pytest.mark.e2e

CONV_ID = "0123456789abcdef0123456789abcdef"


def _healthy(path: Path) -> bytes:
    """A real database with a few conversations; its bytes."""
    with ConversationStore.open(path) as store:
        for n in range(3):
            conv = store.create_conversation(model="m", system_prompt=None, settings={})
            for i in range(20):
                store.append_message(conv.id, Message(Role.USER, f"zebra {n} {i} " * 40))
            reply = store.start_reply(conv.id)
            store.finish_reply(reply.id or 0, "answer", Status.COMPLETE)
    return path.read_bytes()


def _newer(data: bytes) -> bytes:
    return data[:60] + (99).to_bytes(4, "big") + data[64:]  # the header's user_version


def _foreign(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('not ours')")
    conn.commit()
    conn.close()
    return path.read_bytes()


BAD_DATABASES: dict[str, Callable[[bytes], bytes]] = {
    "text": lambda good: b"these are my notes, not a database\n" * 200,
    "zeros": lambda good: b"\x00" * 8192,
    "bad-header": lambda good: b"SQLite format 3\x00" + b"\xff" * 8176,
    "truncated": lambda good: good[: len(good) // 2],
    "schema-page": lambda good: good[:100] + b"\xa5" * 3996 + good[4096:],
    "newer-schema": _newer,
}


def _commands(tiny_model: Path, import_file: Path) -> dict[str, list[str]]:
    return {
        "list": ["list"],
        "show": ["show", CONV_ID[:6]],
        "search": ["search", "zebra"],
        "export": ["export", CONV_ID[:6], "--format", "json"],
        "import": ["import", str(import_file)],
        "rename": ["rename", CONV_ID[:6], "x"],
        "rm": ["rm", CONV_ID[:6]],
        "ask": ["ask", "--model", str(tiny_model), "hi"],
        "app": [],  # the interactive app, on a terminal
    }


def _run(args: list[str], home: Path) -> Result:
    env = {"MIXCHAT_HOME": str(home)}
    if args:
        return cli(*args, env=env, timeout=120)
    code, output = run_on_pty("--model", "/nonexistent", env=env, timeout=60)
    # On a terminal stdout and stderr are one stream.
    text = output.decode("utf-8", "replace").replace("\r\n", "\n")
    return Result(code, "", text)


def test_bad_database_every_command_refuses_in_one_line(tmp_path: Path, tiny_model: Path) -> None:
    good = _healthy(tmp_path / "good.db")
    import_file = tmp_path / "import.json"
    import_file.write_text(json.dumps([{"role": "user", "content": "hello"}]))
    cases: list[tuple[str, str, Path, bytes, list[str]]] = []
    variants = {name: make(good) for name, make in BAD_DATABASES.items()}
    variants["foreign"] = _foreign(tmp_path / "foreign.db")
    everywhere = ("list", "show", "search", "ask", "import", "app")
    for variant, content in variants.items():
        for command, args in _commands(tiny_model, import_file).items():
            if command not in everywhere and variant not in ("text", "newer-schema"):
                continue  # the other writers, on two kinds of bad file
            home = tmp_path / f"{variant}-{command}"
            db = home / "data" / "conversations.db"
            db.parent.mkdir(parents=True)
            db.write_bytes(content)
            cases.append((variant, command, home, content, args))

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: _run(case[4], case[2]), cases))

    for (variant, command, home, content, _), result in zip(cases, results, strict=True):
        db = home / "data" / "conversations.db"
        where = f"{variant} / {command}"
        assert result.code == 2, (where, result.err[-2000:])
        assert "Traceback" not in result.err, (where, result.err[-3000:])
        line = [ln for ln in result.err.splitlines() if "mixchat: error:" in ln]
        assert len(line) == 1 and str(db) in line[0], (where, result.err[-2000:])
        assert db.read_bytes() == content, f"{where}: the database changed"
        assert sorted(p.name for p in db.parent.iterdir()) == [db.name], where


def test_corruption_found_late_never_gives_a_traceback(tmp_path: Path) -> None:
    """Pages damaged deep inside: reads fail in one line (or work) and never write."""
    good = _healthy(tmp_path / "good.db")
    conn = sqlite3.connect(tmp_path / "good.db")
    pages = dict(conn.execute("SELECT name, min(pageno) FROM dbstat GROUP BY name").fetchall())
    conv_ids = [r[0] for r in conn.execute("SELECT id FROM conversations")]
    conn.close()
    targets = ["conversations", "messages", "messages_position", "messages_fts_data"]
    cases = []
    for table in targets:
        start = (pages[table] - 1) * 4096
        content = good[: start + 8] + b"\xa5" * 4088 + good[start + 4096 :]
        home = tmp_path / table
        (home / "data").mkdir(parents=True)
        (home / "data" / "conversations.db").write_bytes(content)
        for args in (["list"], ["show", conv_ids[0]], ["search", "zebra"], ["export", conv_ids[1]]):
            cases.append((table, home, content, args))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda c: _run(c[3], c[1]), cases))
    failures = 0
    for (table, home, content, args), result in zip(cases, results, strict=True):
        db = home / "data" / "conversations.db"
        assert "Traceback" not in result.err, (table, args, result.err[-3000:])
        if result.code != 0:
            failures += 1
            assert_one_line_error(result, 2, str(db))
        assert db.read_bytes() == content, (table, args)
    assert failures >= len(targets)  # each damaged table is noticed by some command


BAD_CONFIGS: dict[str, bytes] = {
    "not-toml": b"this is = = not toml\n",
    "not-utf8": b'model = "\xff\xfe"\n',
    "wrong-type-number": b'temperature = "hot"\n',
    "wrong-type-integer": b"max_new_tokens = 1.5\n",
    "wrong-type-string": b"model = 3\n",
    "wrong-type-bool": b'trust_remote_code = "maybe"\n',
    "out-of-range": b"top_p = 2.0\n",
    "huge-seed": b"seed = 9223372036854775807\nmax_new_tokens = -4\n",
    "table": b"[model]\nname = 'x'\n",
    "unknown-key": b"temprature = 0.2\n",
}


def test_bad_config_file_stops_the_commands_that_read_it(tmp_path: Path, tiny_model: Path) -> None:
    with ConversationStore.open(tmp_path / "seed.db") as store:
        store.import_conversation(
            from_json({"id": CONV_ID, "messages": [{"role": "user", "content": "zebra"}]})
        )
    seeded = (tmp_path / "seed.db").read_bytes()
    import_file = tmp_path / "import.json"
    import_file.write_text(json.dumps([{"role": "user", "content": "hello"}]))
    readers = {
        "ask": ["ask", "--model", str(tiny_model), "hi"],
        "config": ["config"],
        "app": [],
        "import": ["import", str(import_file)],  # reads import_max_bytes
    }
    others = {
        "list": ["list"],
        "show": ["show", CONV_ID[:6]],
        "search": ["search", "zebra"],
    }
    cases = []
    for name, content in [*BAD_CONFIGS.items(), ("directory", b"")]:
        for command, args in {**readers, **others}.items():
            if command in others and name not in ("not-toml", "wrong-type-number"):
                continue
            home = tmp_path / f"{name}-{command}"
            config = home / "config" / "config.toml"
            if name == "directory":
                config.mkdir(parents=True)
            else:
                config.parent.mkdir(parents=True)
                config.write_bytes(content)
            (home / "data").mkdir(parents=True)
            (home / "data" / "conversations.db").write_bytes(seeded)
            cases.append((name, command, home, content, args))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda c: _run(c[4], c[2]), cases))
    for (name, command, home, content, _), result in zip(cases, results, strict=True):
        config = home / "config" / "config.toml"
        where = f"{name} / {command}"
        assert "Traceback" not in result.err, (where, result.err[-3000:])
        if command in readers:
            assert result.code == 2, (where, result.err[-2000:])
            line = [ln for ln in result.err.splitlines() if "mixchat: error:" in ln]
            assert len(line) == 1 and str(config) in line[0], (where, result.err[-2000:])
        else:  # these commands have no settings: a broken config does not stop them
            assert result.code == 0, (where, result.err)
        if name != "directory":
            assert config.read_bytes() == content, where
        assert sorted(p.name for p in config.parent.iterdir()) == ["config.toml"], where


toml_scalar = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(f), repr(f))
    ),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(max_size=20).map(lambda s: json.dumps(s)),
    st.sampled_from(["'literal'", '"""multi\nline"""', "1979-05-27T07:32:00Z", "0x1F", "1_000"]),
)
toml_value = st.recursive(
    toml_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), inner, max_size=2).map(
            lambda d: "{" + ", ".join(f"{k} = {v}" for k, v in d.items()) + "}"
        ),
    ),
    max_leaves=4,
)
config_keys = st.sampled_from(
    [
        "model",
        "dtype",
        "quantization",
        "attention",
        "device_map",
        "trust_remote_code",
        "system_prompt",
        "temperature",
        "top_p",
        "top_k",
        "repetition_penalty",
        "max_new_tokens",
        "seed",
        "theme",
        "nonsense",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(
        st.lists(st.tuples(config_keys, toml_value), max_size=4).map(
            lambda kv: "".join(f"{k} = {v}\n" for k, v in kv).encode("utf-8", "surrogatepass")
        ),
        st.binary(max_size=60),
    )
)
def test_any_config_file_loads_or_fails_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, body: bytes
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_bytes(body)
    try:
        load_settings(config_path=path, environ={})
    except ConfigError as exc:
        message = str(exc)
        assert str(path) in message and "\n" not in message
    assert path.read_bytes() == body
    assert os.listdir(path.parent) == ["config.toml"]
