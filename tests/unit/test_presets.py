"""Presets: where they come from, how they are checked, where they sit in the precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixchat import paths
from mixchat.config import (
    CONVERSATION_KEYS,
    ConfigError,
    Settings,
    conversation_settings,
    load_settings,
    load_sources,
)
from mixchat.conversation import Conversation
from mixchat.presets import (
    PRESET_KEYS,
    Preset,
    applied_to,
    apply_preset,
    find_preset,
    load_presets,
)
from mixchat.store import ConversationStore


def write_config(text: str) -> Path:
    path = paths.config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_preset(name: str, text: str) -> Path:
    directory = paths.presets_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_presets_from_config_tables_and_files_sorted_by_name() -> None:
    config = write_config(
        'temperature = 0.5\n[presets.coder]\nsystem_prompt = "You write Python."\n'
        'temperature = 0.2\ndescription = "for code"\n'
    )
    file = write_preset("brief", "max_new_tokens = 64\ntop_p = 0.5\nseed = 7\n")
    found = load_presets()
    assert found.errors == []
    brief, coder = found.presets
    assert (brief.name, brief.source) == ("brief", str(file))
    assert dict(brief.values) == {"max_new_tokens": 64, "top_p": 0.5, "seed": 7}
    assert coder.source == f"{config}: [presets.coder]"
    assert dict(coder.values) == {"system_prompt": "You write Python.", "temperature": 0.2}
    assert coder.description == "for code"
    # The [presets] tables are not settings: the config file still loads.
    assert load_settings().temperature == 0.5


def test_values_are_parsed_by_the_options_own_parsers() -> None:
    write_preset("p", 'temperature = "0.25"\ntop_k = 3\nsystem_prompt = ""\n')
    preset = find_preset("p")
    assert preset.values == {"temperature": 0.25, "top_k": 3, "system_prompt": None}


@pytest.mark.parametrize(
    ("body", "key", "says"),
    [
        ("temperature = 500", "temperature", "must be between 0 and 100 (got 500)"),
        ("top_p = 1.5", "top_p", "must be between 0 and 1"),
        ("max_new_tokens = 0", "max_new_tokens", "must be >= 1"),
        ('seed = "x"', "seed", "must be a whole number"),
        ("system_prompt = 3", "system_prompt", "must be a string"),
        ("temprature = 0.3", "temprature", "unknown setting"),
        ('model = "x"', "model", "cannot be set by a preset"),
        ('quantization = "4bit"', "quantization", "cannot be set by a preset"),
        ('theme = "x"', "theme", "cannot be set by a preset"),
        ("[nested]\ntemperature = 0.1", "nested", "unknown setting"),
        ("description = 3", "description", "must be a string"),
    ],
)
def test_a_bad_preset_file_is_one_line_naming_the_file_and_key(
    body: str, key: str, says: str
) -> None:
    path = write_preset("bad", body + "\n")
    with pytest.raises(ConfigError) as info:
        find_preset("bad")
    line = str(info.value)
    assert line.startswith(str(path)) and key in line and says in line
    assert "\n" not in line


def test_a_bad_preset_table_in_config_names_file_table_and_key() -> None:
    path = write_config("[presets.loose]\ntemperature = -1\n")
    with pytest.raises(ConfigError) as info:
        find_preset("loose")
    assert str(info.value).startswith(f"{path}: [presets.loose]: temperature must be")


def test_broken_toml_non_tables_and_bad_names() -> None:
    write_preset("broken", "temperature = = 1\n")
    write_config('presets = "no"\n')
    found = load_presets()
    lines = dict(found.errors)
    assert "not valid TOML" in lines["broken"]
    assert "[presets] must be a table" in lines[None]
    with pytest.raises(ConfigError, match="must be a table of presets"):
        find_preset("anything")  # it might have been defined there
    write_config('[presets]\nx = 3\n"bad name" = {temperature = 0.1}\n')
    lines = dict(load_presets().errors)
    assert "a preset must be a table" in lines["x"]
    assert "letters, digits" in lines["bad name"]


def test_a_name_defined_twice_is_refused() -> None:
    config = write_config("[presets.twin]\ntemperature = 0.1\n")
    file = write_preset("twin", "temperature = 0.2\n")
    with pytest.raises(ConfigError) as info:
        find_preset("twin")
    assert str(config) in str(info.value) and str(file) in str(info.value)


def test_unknown_name_lists_the_known_ones() -> None:
    write_preset("alpha", "top_k = 1\n")
    with pytest.raises(ConfigError, match=r"no preset named 'beta' \(presets: alpha"):
        find_preset("beta")


def test_a_fifo_in_the_presets_directory_is_never_opened() -> None:
    import os

    directory = paths.presets_dir()
    directory.mkdir(parents=True)
    os.mkfifo(directory / "pipe.toml")
    (directory / "real.toml").write_text("top_k = 2\n")
    found = load_presets()  # would block forever if the FIFO were opened
    assert [p.name for p in found.presets] == ["real"]
    assert "not a regular file" in dict(found.errors)["pipe"]


def test_hidden_and_other_files_are_ignored() -> None:
    directory = paths.presets_dir()
    directory.mkdir(parents=True)
    (directory / ".swap.toml").write_text("nonsense")
    (directory / "notes.txt").write_text("nonsense")
    assert load_presets().presets == [] and load_presets().errors == []


def test_presets_hold_exactly_the_conversation_settings() -> None:
    assert set(PRESET_KEYS) == {"system_prompt", *CONVERSATION_KEYS}


def test_full_precedence_defaults_config_env_preset_conversation_flags() -> None:
    """Each layer wins over the ones below it, for the keys it sets."""
    write_config(
        "repetition_penalty = 1.1\ntop_p = 0.8\ntemperature = 0.1\n"
        "[presets.mid]\ntemperature = 0.3\nmax_new_tokens = 200\nseed = 1\n"
        'system_prompt = "From the preset."\n'
    )
    environ = {
        "MIXCHAT_TOP_P": "0.85",
        "MIXCHAT_TEMPERATURE": "0.2",
        "MIXCHAT_MAX_NEW_TOKENS": "100",
    }
    sources = load_sources({"seed": "3"}, environ=environ).with_preset(find_preset("mid"))
    conversation = Conversation(
        "c" * 32, "t", 0, 0, system_prompt="From the conversation.",
        settings={"max_new_tokens": 300, "seed": 2},
    )  # fmt: skip
    saved = sources.effective(conversation)
    assert saved.top_k == Settings().top_k  # default
    assert saved.repetition_penalty == 1.1  # config over default
    assert saved.top_p == 0.85  # environment over config
    assert saved.temperature == 0.3  # preset over environment
    assert saved.max_new_tokens == 300  # the conversation over the preset
    assert saved.seed == 3  # a flag over the conversation
    assert saved.system_prompt == "From the conversation."
    new = sources.effective()  # a new conversation: no saved settings
    assert (new.temperature, new.max_new_tokens, new.seed) == (0.3, 200, 3)
    assert new.system_prompt == "From the preset."
    without = load_sources({}, environ=environ).effective()
    assert (without.temperature, without.max_new_tokens) == (0.2, 100)


def test_flags_and_preset_survive_each_other() -> None:
    preset = Preset("p", "here", {"temperature": 0.3})
    sources = load_sources({"temperature": "0.9", "top_k": "4"}).with_preset(preset)
    assert sources.effective().temperature == 0.9
    assert sources.without_flags(["temperature"]).effective().temperature == 0.3
    assert sources.without_flags(["temperature"]).preset is preset
    assert sources.with_flags({"top_p": "0.5"}).preset is preset


def test_a_new_conversation_saves_the_resulting_settings_and_the_name() -> None:
    preset = Preset("coder", "here", {"temperature": 0.2})
    settings = load_sources({}).with_preset(preset).effective()
    saved = conversation_settings(settings, preset)
    assert saved["preset"] == "coder"
    assert {k: saved[k] for k in CONVERSATION_KEYS} == conversation_settings(settings)
    assert saved["temperature"] == 0.2


def test_later_preset_edits_do_not_change_an_old_conversation() -> None:
    write_preset("p", "temperature = 0.2\nmax_new_tokens = 50\n")
    sources = load_sources({}).with_preset(find_preset("p"))
    with ConversationStore.open() as store:
        conv = store.create_conversation(
            model="m",
            system_prompt=None,
            settings=conversation_settings(sources.effective(), sources.preset),
        )
        write_preset("p", "temperature = 1.5\nmax_new_tokens = 9\n")
        later = load_sources({}).effective(store.get_conversation(conv.id))
    assert (later.temperature, later.max_new_tokens) == (0.2, 50)


def test_applying_a_preset_to_a_saved_conversation_writes_its_settings() -> None:
    preset = Preset("p", "here", {"temperature": 0.3, "system_prompt": "New."})
    keeps = Preset("q", "here", {"top_k": 9})
    with ConversationStore.open() as store:
        conv = store.create_conversation(
            model="m", system_prompt="Old.", settings={"temperature": 0.9, "top_p": 0.4}
        )
        shown = apply_preset(store, conv, preset)
        stored = store.get_conversation(conv.id)
        assert stored.settings == {"temperature": 0.3, "top_p": 0.4, "preset": "p"}
        assert stored.system_prompt == "New." == shown.system_prompt
        apply_preset(store, stored, keeps)  # no system prompt in it: the old one stays
        stored = store.get_conversation(conv.id)
        assert stored.system_prompt == "New." and stored.settings["preset"] == "q"
        assert stored.settings["top_k"] == 9
        unsaved = apply_preset(None, stored, preset)  # --no-save: nothing written
        assert unsaved.settings["preset"] == "p"
        assert store.get_conversation(conv.id).settings["preset"] == "q"


def test_applied_to_is_pure() -> None:
    saved = {"temperature": 0.9}
    result, system = applied_to(saved, None, Preset("p", "x", {"temperature": 0.1}))
    assert saved == {"temperature": 0.9}
    assert result == {"temperature": 0.1, "preset": "p"} and system is None
