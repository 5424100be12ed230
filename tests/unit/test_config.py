"""Tests for mixchat.config: layering, parsing and error messages."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import pytest

from mixchat import paths
from mixchat.config import (
    DEFAULT_MODEL,
    ENV_PREFIX,
    FIELDS,
    OPTIONS,
    ConfigError,
    Settings,
    env_values,
    load_settings,
    option_source,
    read_toml,
)


def write_config(text: str) -> Path:
    path = paths.config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- layering ---------------------------------------------------------------


def test_config_file_lives_under_mixchat_home(mixchat_home: Path) -> None:
    assert paths.config_file() == mixchat_home / "config" / "config.toml"


def test_defaults_without_file_env_or_flags() -> None:
    assert not paths.config_file().exists()
    settings = load_settings()
    assert settings == Settings()
    assert settings.model == DEFAULT_MODEL
    assert settings.seed is None
    assert settings.system_prompt is None
    assert settings.trust_remote_code is False


def test_every_field_is_documented_and_settable_from_env() -> None:
    names = {f.name for f in fields(Settings)}
    assert set(FIELDS) == names
    assert all(FIELDS[n].doc.strip() for n in names)
    environ = {ENV_PREFIX + n.upper(): "x" for n in names}
    assert set(env_values(environ)) == names


def test_file_overrides_defaults() -> None:
    write_config('temperature = 0.2\nmodel = "from-file"\ntop_k = 40\n')
    settings = load_settings()
    assert settings.temperature == 0.2
    assert settings.model == "from-file"
    assert settings.top_k == 40
    assert settings.top_p == Settings().top_p  # untouched keys keep their defaults


def test_env_overrides_file(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config('temperature = 0.2\nmodel = "from-file"\n')
    monkeypatch.setenv("MIXCHAT_TEMPERATURE", "0.3")
    settings = load_settings()
    assert settings.temperature == 0.3
    assert settings.model == "from-file"


def test_flags_override_env_and_file(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config('temperature = 0.2\nmodel = "from-file"\nmax_new_tokens = 10\n')
    monkeypatch.setenv("MIXCHAT_TEMPERATURE", "0.3")
    monkeypatch.setenv("MIXCHAT_MODEL", "from-env")
    settings = load_settings({"temperature": 0.4, "model": "from-flag"})
    assert settings.temperature == 0.4
    assert settings.model == "from-flag"
    assert settings.max_new_tokens == 10


def test_none_flags_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config("temperature = 0.2\n")
    monkeypatch.setenv("MIXCHAT_TOP_P", "0.5")
    settings = load_settings({"temperature": None, "top_p": None, "seed": None, "model": None})
    assert settings.temperature == 0.2
    assert settings.top_p == 0.5
    assert settings.seed is None
    assert settings.model == DEFAULT_MODEL


def test_explicit_environ_mapping_replaces_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXCHAT_TEMPERATURE", "0.3")
    assert load_settings(environ={}).temperature == Settings().temperature
    assert load_settings(environ={"MIXCHAT_TEMPERATURE": "0.1"}).temperature == 0.1


def test_explicit_config_path(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text("top_k = 7\n", encoding="utf-8")
    write_config("top_k = 3\n")
    assert load_settings(config_path=other).top_k == 7
    assert load_settings().top_k == 3


def test_env_vars_without_prefix_or_unknown_are_ignored() -> None:
    environ = {"TEMPERATURE": "9", "MIXCHAT_NOT_A_SETTING": "1", "mixchat_temperature": "2"}
    assert env_values(environ) == {}
    assert load_settings(environ=environ) == Settings()


# -- error messages name key and source -------------------------------------

BAD_VALUES = [
    ("temperature", "hot"),
    ("temperature", "-1"),
    ("temperature", "nan"),
    ("temperature", "101"),
    ("top_p", "1.5"),
    ("top_k", "-1"),
    ("top_k", "2.5"),
    ("repetition_penalty", "0"),
    ("max_new_tokens", "0"),
    ("max_new_tokens", "many"),
    ("seed", "-3"),
    ("seed", "abc"),
    ("dtype", "int3"),
    ("quantization", "2bit"),
    ("attention", "magic"),
    ("trust_remote_code", "maybe"),
    ("model", "   "),
    ("model", ""),
    ("device_map", ""),
    ("theme", ""),
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_bad_env_value_names_key_and_variable(
    key: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    var = ENV_PREFIX + key.upper()
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert f"environment variable {var}" in message
    assert key in message


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_bad_flag_value_names_the_flag_the_user_typed(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({key: value})
    message = str(info.value)
    assert message.startswith(option_source(key) + " ")
    if OPTIONS[key].flag and OPTIONS[key].flag != "--" + key.replace("_", "-"):
        # e.g. --max-tokens, never the internal name --max-new-tokens
        assert "--" + key.replace("_", "-") not in message


TOML_BAD = [
    ("temperature", '"hot"'),
    ("temperature", "true"),
    ("temperature", "-0.5"),
    ("top_k", "2.5"),
    ("top_k", "true"),
    ("max_new_tokens", "0"),
    ("seed", "1.0"),
    ("seed", "-1"),
    ("trust_remote_code", "1"),
    ("trust_remote_code", '"maybe"'),
    ("dtype", "16"),
    ("model", "3"),
    ("system_prompt", "5"),
    ("theme", "[]"),
]


@pytest.mark.parametrize(("key", "toml_value"), TOML_BAD)
def test_bad_file_value_names_key_and_file(key: str, toml_value: str) -> None:
    path = write_config(f"{key} = {toml_value}\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert str(path) in message
    assert key in message


def test_error_message_shows_the_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXCHAT_TOP_P", "7.5")
    with pytest.raises(ConfigError, match=r"top_p .*between 0 and 1.*7\.5"):
        load_settings()


def test_unknown_key_in_file_is_an_error() -> None:
    path = write_config('temprature = 0.5\nmodel = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(path) in str(info.value)
    assert "temprature" in str(info.value)
    assert "unknown" in str(info.value)


def test_toml_table_is_an_unknown_key() -> None:
    path = write_config("[generation]\ntemperature = 0.5\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(path) in str(info.value)
    assert "generation" in str(info.value)


def test_unknown_flag_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"--colour.*unknown setting 'colour'"):
        load_settings({"colour": "red"})


def test_invalid_toml_names_the_file() -> None:
    path = write_config("temperature = = 0.5\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(path) in str(info.value)
    assert "TOML" in str(info.value)


def test_undecodable_file_names_the_file() -> None:
    path = paths.config_file()
    path.parent.mkdir(parents=True)
    path.write_bytes(b'model = "\xff\xfe"\n')
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(path) in str(info.value)


def test_missing_file_reads_as_empty(tmp_path: Path) -> None:
    assert read_toml(tmp_path / "nope.toml") == {}


def test_bad_file_error_wins_over_good_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    # A broken file is reported even when higher layers would override the key.
    path = write_config('temperature = "hot"\n')
    monkeypatch.setenv("MIXCHAT_TEMPERATURE", "0.1")
    with pytest.raises(ConfigError, match="temperature") as info:
        load_settings({"temperature": 0.2})
    assert str(path) in str(info.value)


# -- value parsing ----------------------------------------------------------


@pytest.mark.parametrize("text", ["1", "true", "TRUE", "yes", "On"])
def test_env_boolean_true(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXCHAT_TRUST_REMOTE_CODE", text)
    assert load_settings().trust_remote_code is True


@pytest.mark.parametrize("text", ["0", "false", "False", "no", "OFF"])
def test_env_boolean_false(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config("trust_remote_code = true\n")
    monkeypatch.setenv("MIXCHAT_TRUST_REMOTE_CODE", text)
    assert load_settings().trust_remote_code is False


def test_toml_booleans_and_numbers_are_native() -> None:
    write_config(
        "trust_remote_code = true\ntemperature = 1\ntop_k = 50\nmax_new_tokens = 64\nseed = 0\n"
    )
    settings = load_settings()
    assert settings.trust_remote_code is True
    assert settings.temperature == 1.0 and isinstance(settings.temperature, float)
    assert settings.top_k == 50 and isinstance(settings.top_k, int)
    assert settings.max_new_tokens == 64
    assert settings.seed == 0  # zero is a real seed, not "unset"


def test_env_numbers_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXCHAT_TOP_K", "12")
    monkeypatch.setenv("MIXCHAT_MAX_NEW_TOKENS", "256")
    monkeypatch.setenv("MIXCHAT_REPETITION_PENALTY", "1.1")
    monkeypatch.setenv("MIXCHAT_TEMPERATURE", "0")
    settings = load_settings()
    assert settings.top_k == 12 and isinstance(settings.top_k, int)
    assert settings.max_new_tokens == 256
    assert settings.repetition_penalty == 1.1
    assert settings.temperature == 0.0


def test_number_bounds_are_inclusive() -> None:
    settings = load_settings({"top_p": 0, "temperature": 100, "top_k": 0, "max_new_tokens": 1})
    assert (settings.top_p, settings.temperature, settings.top_k, settings.max_new_tokens) == (
        0.0,
        100.0,
        0,
        1,
    )
    assert load_settings({"top_p": 1}).top_p == 1.0


def test_bool_is_not_a_number() -> None:
    with pytest.raises(ConfigError, match="--temperature"):
        load_settings({"temperature": True})
    with pytest.raises(ConfigError, match="--max-tokens must"):
        load_settings({"max_new_tokens": True})


def test_seed_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXCHAT_SEED", "42")
    assert load_settings().seed == 42


@pytest.mark.parametrize("text", ["", "none"])
def test_seed_can_be_unset_from_env(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config("seed = 7\n")
    assert load_settings().seed == 7
    monkeypatch.setenv("MIXCHAT_SEED", text)
    assert load_settings().seed is None


def test_seed_flag_overrides_file() -> None:
    write_config("seed = 7\n")
    assert load_settings({"seed": 0}).seed == 0
    assert load_settings({"seed": None}).seed == 7


def test_system_prompt_empty_env_unsets_file_value(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config('system_prompt = "be terse"\n')
    assert load_settings().system_prompt == "be terse"
    monkeypatch.setenv("MIXCHAT_SYSTEM_PROMPT", "")
    assert load_settings().system_prompt is None


def test_choices_accept_every_documented_value() -> None:
    for dtype in ("auto", "bfloat16", "float16", "float32"):
        assert load_settings({"dtype": dtype}).dtype == dtype
    for quant in ("none", "4bit", "8bit"):
        assert load_settings({"quantization": quant}).quantization == quant
    for attn in ("auto", "sdpa", "eager", "flash_attention_2"):
        assert load_settings({"attention": attn}).attention == attn


def test_settings_are_immutable() -> None:
    settings = load_settings()
    with pytest.raises(AttributeError):
        settings.temperature = 0.1  # type: ignore[misc]


# -- loading never writes ---------------------------------------------------


def test_loading_never_modifies_the_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config('# my settings\ntemperature = 0.25   # keep\nmodel = "m"\n')
    before = path.read_bytes()
    stat = path.stat()
    monkeypatch.setenv("MIXCHAT_TOP_K", "3")
    settings = load_settings({"seed": 5, "temperature": 0.9})
    assert settings.temperature == 0.9
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == stat.st_mtime_ns
    assert sorted(os.listdir(path.parent)) == ["config.toml"]


def test_loading_without_a_file_creates_nothing(mixchat_home: Path) -> None:
    load_settings({"temperature": 0.5})
    assert not paths.config_file().exists()
    assert not mixchat_home.exists()


def test_failed_load_leaves_file_untouched() -> None:
    path = write_config('temperature = "hot"\n')
    before = path.read_bytes()
    with pytest.raises(ConfigError):
        load_settings()
    assert path.read_bytes() == before


def test_max_memory_parses_per_device_limits() -> None:
    from mixchat.config import parse_max_memory

    assert parse_max_memory("0=70GiB, 1=70.5GiB,cpu=200GB,2=512MiB,3=1.5mb") == {
        0: 70 * 2**30,
        1: int(70.5 * 2**30),
        "cpu": 200 * 10**9,
        2: 512 * 2**20,
        3: 1_500_000,
    }
    settings = load_settings({"max_memory": "0=40GiB"})
    assert settings.max_memory == "0=40GiB"
    for bad in ("70GiB", "0=70", "gpu=1GiB", "0=70GiB,,"):
        with pytest.raises(ConfigError, match="--max-memory"):
            load_settings({"max_memory": bad})


def test_max_memory_is_ignored_with_a_notice_off_auto_placement() -> None:
    from mixchat.engine.local.policy import stock_max_memory

    notes: list[str] = []
    assert stock_max_memory(Settings(max_memory="0=10GiB"), None, notes.append) is None
    assert notes and "--max-memory" in notes[0]
    assert stock_max_memory(Settings(max_memory="0=10GiB"), "auto", notes.append) == {0: 10 * 2**30}
