"""Numbers in settings are ASCII; tiny temperatures are greedy; --device-map is validated.

Python's int()/float() read other scripts' digits (``int("٣") == 3``), fullwidth digits,
underscores, ``+``, any Unicode space, ``inf`` and ``nan``: a setting must mean what it
looks like, from every source (environment, config file, flags, the app's settings).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mixchat import paths
from mixchat.config import GREEDY_BELOW, ConfigError, Settings, apply_values, load_settings
from mixchat.engine.base import GenerationParams
from mixchat.numbers import parse_float, parse_int
from tests.e2e.helpers import mixchat_exe

NOT_INTEGERS = [
    "٣",  # Arabic-Indic three
    "３",  # fullwidth three
    "१२",  # Devanagari twelve
    "𝟓",  # mathematical bold five
    "1_000",
    "+5",
    "5\u00a0",  # no-break space
    "\u20035",  # em space
    "5\n",
    "\x1c5",  # Python's int() strips this "whitespace" too
    "0x10",
    "1e3",
    "5.0",
    "",
    " ",
    "-",
    "--5",
    "5 5",
]
NOT_NUMBERS = [
    "٠.٥",
    "０.５",
    "1_0.5",
    "inf",
    "-inf",
    "nan",
    "Infinity",
    "+0.5",
    "0,5",
    "1e",
    ".",
    "-",
    "e5",
    "0.5\u3000",
    "",
    "0x1p-3",
    "1.5e٣",
]


@pytest.mark.parametrize("text", NOT_INTEGERS)
def test_parse_int_takes_only_ascii_digits(text: str) -> None:
    with pytest.raises(ValueError, match="digits 0-9"):
        parse_int(text)


@pytest.mark.parametrize("text", NOT_NUMBERS)
def test_parse_float_takes_only_ascii_numbers(text: str) -> None:
    with pytest.raises(ValueError, match="digits 0-9"):
        parse_float(text)


@pytest.mark.parametrize(
    ("text", "value"), [("512", 512), ("0", 0), ("-3", -3), (" 7\t", 7), ("007", 7)]
)
def test_parse_int_accepts(text: str, value: int) -> None:
    assert parse_int(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("0.7", 0.7), (".5", 0.5), ("5.", 5.0), ("1e-3", 1e-3), ("2E2", 200.0), (" 1 ", 1.0)],
)
def test_parse_float_accepts(text: str, value: float) -> None:
    assert parse_float(text) == value


@pytest.mark.parametrize("text", NOT_INTEGERS)
def test_env_integers_are_ascii(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXCHAT_MAX_NEW_TOKENS", text)
    with pytest.raises(ConfigError, match="MIXCHAT_MAX_NEW_TOKENS: max_new_tokens must be a whole"):
        load_settings()
    monkeypatch.delenv("MIXCHAT_MAX_NEW_TOKENS")
    if text.strip(" \t") not in ("", "none"):  # an empty seed means "no seed"
        monkeypatch.setenv("MIXCHAT_SEED", text)
        with pytest.raises(ConfigError, match="MIXCHAT_SEED"):
            load_settings()


@pytest.mark.parametrize("text", NOT_NUMBERS)
def test_env_numbers_are_ascii(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("TEMPERATURE", "TOP_P", "REPETITION_PENALTY"):
        monkeypatch.setenv(f"MIXCHAT_{key}", text)
        with pytest.raises(ConfigError, match=f"MIXCHAT_{key}"):
            load_settings()
        monkeypatch.delenv(f"MIXCHAT_{key}")


def test_text_in_the_config_file_and_the_app_is_ascii_too() -> None:
    config = paths.config_file()
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('max_new_tokens = "٣"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="max_new_tokens"):
        load_settings()
    config.write_text("max_new_tokens = 3\ntemperature = 1\n", encoding="utf-8")  # TOML numbers
    assert (load_settings().max_new_tokens, load_settings().temperature) == (3, 1.0)
    with pytest.raises(ConfigError, match="settings: temperature"):
        apply_values(Settings(), {"temperature": "٠.٥"}, "settings")  # the app's settings form
    assert apply_values(Settings(), {"temperature": " 0.5 "}, "settings").temperature == 0.5


@pytest.mark.parametrize("text", ["1e-300", "5e-324", "4.9e-324", "1e-6", "0.000001", "0"])
def test_tiny_temperatures_are_greedy(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXCHAT_TEMPERATURE", text)
    assert load_settings().temperature == 0.0
    assert load_settings({"temperature": float(text)}).temperature == 0.0


def test_temperatures_from_the_threshold_up_are_kept() -> None:
    assert load_settings({"temperature": GREEDY_BELOW}).temperature == GREEDY_BELOW
    assert load_settings({"temperature": "0.01"}).temperature == 0.01


def test_sampling_below_the_threshold_is_greedy() -> None:
    from mixchat.engine.generation import sampling_kwargs

    for temperature in (5e-324, 1e-300, GREEDY_BELOW / 2, 0.0):
        kwargs = sampling_kwargs(GenerationParams(temperature=temperature))
        assert kwargs["do_sample"] is False and kwargs["temperature"] is None
    kept = sampling_kwargs(GenerationParams(temperature=GREEDY_BELOW))
    assert kept["do_sample"] is True and kept["temperature"] == GREEDY_BELOW


@pytest.mark.parametrize("value", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_map_accepts(value: str) -> None:
    assert load_settings({"device_map": value}).device_map == value


@pytest.mark.parametrize(
    "value",
    [
        "x",
        "",
        "CUDA",
        "cuda:",
        "cuda:x",
        "cuda:-1",
        "cuda:٣",
        "cudax",
        "cuda:0 ",
        "mps",
        "cpu,cuda",
    ],
)
def test_device_map_is_validated_with_the_other_settings(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="--device-map must be auto, cpu, cuda or"):
        load_settings({"device_map": value})
    monkeypatch.setenv("MIXCHAT_DEVICE_MAP", value)
    with pytest.raises(ConfigError, match="MIXCHAT_DEVICE_MAP"):
        load_settings()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [mixchat_exe(), *args], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["ask", "--max-tokens", "٣", "hi"], "--max-tokens"),
        (["ask", "--temperature", "٠.٥", "hi"], "--temperature"),
        (["ask", "--top-p", "inf", "hi"], "--top-p"),
        (["ask", "--seed", "１", "hi"], "--seed"),
        (["ask", "--top-k", "1_0", "hi"], "--top-k"),
        (["list", "--limit", "３"], "--limit"),
        (["search", "x", "-n", "+5"], "--limit"),
    ],
)
def test_flags_take_ascii_digits_only(args: list[str], flag: str, mixchat_home: Path) -> None:
    done = run(*args)
    assert done.returncode == 2, done.stderr
    # Settings flags are read by the settings table's parsers, --limit by click's.
    named = f"mixchat: error: {flag} must be" in done.stderr
    assert named or f"Invalid value for '{flag}'" in done.stderr
    assert "digits 0-9" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (mixchat_home / "data").exists()  # refused before anything was opened


def test_bad_device_map_flag_is_one_line_and_exit_2(mixchat_home: Path) -> None:
    done = run("ask", "--model", "/nonexistent", "--device-map", "x", "hi")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "mixchat: error: --device-map must be auto, cpu, cuda or cuda:N "
        "(N a GPU number such as 0) (got 'x')"
    ]
    assert not (mixchat_home / "data").exists()
