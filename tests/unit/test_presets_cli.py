"""``mixchat presets`` and ``mixchat ask --preset``."""

from __future__ import annotations

import json

import pytest

from mixchat import paths
from mixchat.config import CONVERSATION_KEYS
from mixchat.engine import factory
from mixchat.engine.scripted import ScriptedEngine
from tests.cli_harness import Cli


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture
def run(engine: ScriptedEngine, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setattr(factory, "make_engine", lambda settings: engine)
    return Cli()


def write(path_text: str, text: str) -> None:
    path = paths.config_dir() / path_text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


CODER = 'system_prompt = "You write Python."\ntemperature = 0.2\ndescription = "code"\n'


def test_presets_lists_name_source_and_values(run: Cli) -> None:
    write("config.toml", "[presets.brief]\nmax_new_tokens = 64\n")
    write("presets/coder.toml", CODER)
    result = run("presets")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"brief  ({paths.config_file()}: [presets.brief])"
    assert "  max_new_tokens = 64" in lines
    assert f"coder  ({paths.presets_dir() / 'coder.toml'})" in lines
    assert "  system_prompt = 'You write Python.'" in lines and "  code" in lines
    data = json.loads(run("presets", "--json").stdout)
    assert data[1] == {
        "name": "coder",
        "source": str(paths.presets_dir() / "coder.toml"),
        "description": "code",
        "settings": {"system_prompt": "You write Python.", "temperature": 0.2},
    }


def test_no_presets_says_where_they_go(run: Cli) -> None:
    result = run("presets")
    assert result.returncode == 0
    assert result.stdout == "" and str(paths.presets_dir()) in result.stderr
    assert run("presets", "--json").stdout.strip() == "[]"


def test_a_bad_preset_is_a_line_and_exit_2_the_good_ones_still_listed(run: Cli) -> None:
    write("presets/good.toml", "top_k = 5\n")
    write("presets/bad.toml", 'model = "elsewhere"\n')
    result = run("presets")
    assert result.returncode == 2
    assert result.stdout.startswith("good  (")
    (line,) = result.stderr.splitlines()
    assert line.startswith("mixchat: error: ") and "bad.toml: model cannot be set" in line


def test_ask_with_a_preset_saves_the_settings_and_its_name(
    run: Cli, engine: ScriptedEngine
) -> None:
    write("presets/coder.toml", CODER)
    result = run("ask", "--preset", "coder", "hello")
    assert result.returncode == 0, result.stderr
    _, system, params = engine.requests[-1]
    assert system == "You write Python." and params.temperature == 0.2
    (row,) = json.loads(run("list", "--json").stdout)
    assert row["preset"] == "coder"
    conv = json.loads(run("show", row["id"], "--json").stdout)
    assert conv["preset"] == "coder"
    assert conv["system_prompt"] == "You write Python."
    assert conv["settings"]["temperature"] == 0.2
    assert set(conv["settings"]) == {*CONVERSATION_KEYS, "preset"}
    assert "preset coder" in run("show", row["id"]).stdout
    # Editing the preset later leaves the conversation as it was.
    write("presets/coder.toml", 'system_prompt = "Changed."\ntemperature = 1.5\n')
    assert run("ask", "-c", "more").returncode == 0
    _, system, params = engine.requests[-1]
    assert system == "You write Python." and params.temperature == 0.2


def test_flags_given_now_beat_the_preset(run: Cli, engine: ScriptedEngine) -> None:
    write("presets/coder.toml", CODER)
    assert run("ask", "--preset", "coder", "-t", "0.9", "-s", "Mine.", "hi").returncode == 0
    _, system, params = engine.requests[-1]
    assert (system, params.temperature) == ("Mine.", 0.9)


def test_a_preset_applied_to_a_continued_conversation_changes_its_saved_settings(
    run: Cli, engine: ScriptedEngine
) -> None:
    assert run("ask", "-t", "0.7", "first").returncode == 0
    write("presets/cold.toml", "temperature = 0.0\ntop_k = 4\n")
    assert run("ask", "-c", "--preset", "cold", "second").returncode == 0
    assert engine.requests[-1][2].temperature == 0.0
    assert run("ask", "-c", "third").returncode == 0  # kept without --preset
    assert (engine.requests[-1][2].temperature, engine.requests[-1][2].top_k) == (0.0, 4)
    (row,) = json.loads(run("list", "--json").stdout)
    assert row["preset"] == "cold"


def test_no_save_with_a_preset_changes_nothing_on_disk(run: Cli, engine: ScriptedEngine) -> None:
    assert run("ask", "first").returncode == 0
    write("presets/cold.toml", "temperature = 0.0\n")
    before = run("show", "--json", json.loads(run("list", "--json").stdout)[0]["id"]).stdout
    assert run("ask", "-c", "--no-save", "--preset", "cold", "x").returncode == 0
    assert engine.requests[-1][2].temperature == 0.0
    after = run("show", "--json", json.loads(run("list", "--json").stdout)[0]["id"]).stdout
    assert after == before


@pytest.mark.parametrize(
    ("files", "says"),
    [
        ({}, "no preset named 'nope'"),
        ({"presets/nope.toml": "temperature = 9000\n"}, "nope.toml: temperature must be"),
        ({"presets/nope.toml": "top_p = ["}, "not valid TOML"),
        ({"presets/nope.toml": "device_map = 'cpu'\n"}, "device_map cannot be set by a preset"),
    ],
)
def test_an_unknown_or_bad_preset_is_exit_2_before_anything_is_asked(
    run: Cli, engine: ScriptedEngine, files: dict[str, str], says: str
) -> None:
    for name, text in files.items():
        write(name, text)
    result = run("ask", "--preset", "nope", "hi")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("mixchat: error: ") and says in line
    assert engine.requests == []
    assert json.loads(run("list", "--json").stdout) == []


def test_config_lists_the_presets_directory(run: Cli) -> None:
    data = json.loads(run("config", "--json").stdout)
    assert data["paths"]["presets_dir"] == str(paths.presets_dir())
