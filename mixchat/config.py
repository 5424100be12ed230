"""Settings: defaults < ``config.toml`` < ``MIXCHAT_*`` environment < command-line flags.

Every field is declared once in ``FIELDS`` with its type, default, allowed values
and a line of documentation; ``mixchat config`` prints them.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from mixchat import paths

DEFAULT_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
ENV_PREFIX = "MIXCHAT_"


class ConfigError(Exception):
    """A setting has a bad value; the message names the key and where it came from."""


@dataclass(frozen=True)
class Settings:
    """Everything mixchat can be told. Field docs live in ``FIELDS``."""

    model: str = DEFAULT_MODEL
    dtype: str = "auto"
    quantization: str = "none"
    double_quant: bool = True
    attention: str = "auto"
    device_map: str = "auto"
    max_memory: str = ""
    trust_remote_code: bool = False
    system_prompt: str | None = None
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 1024
    seed: int | None = None
    theme: str = "mixchat-dark"
    import_max_bytes: int = 64 * 1024 * 1024
    endpoint: str = ""
    api_key_env: str = "MIXCHAT_API_KEY"


@dataclass(frozen=True)
class Field:
    """How one setting is parsed and what it means."""

    name: str
    doc: str
    parse: Callable[[Any], Any]


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value


def _optional_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _number(low: float, high: float | None = None) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError("must be a number") from None
        if number != number or number < low or (high is not None and number > high):
            bound = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
            raise ValueError(f"must be {bound}")
        return number

    return parse


def _integer(
    low: int, optional: bool = False, high: int | None = None
) -> Callable[[Any], int | None]:
    def parse(value: Any) -> int | None:
        if optional and (value is None or value == "" or value == "none"):
            return None
        if isinstance(value, (bool, float)):
            raise ValueError("must be a whole number")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError("must be a whole number") from None
        if number < low:
            raise ValueError(f"must be >= {low}")
        if high is not None and number > high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


_MEMORY_ITEM = re.compile(r"^(cpu|\d+)=(\d+(?:\.\d+)?)\s*(GiB|GB|MiB|MB)$", re.IGNORECASE)


def parse_max_memory(value: str) -> dict[int | str, str]:
    """``"0=70GiB,1=70GiB,cpu=200GiB"`` -> ``{0: "70GiB", 1: "70GiB", "cpu": "200GiB"}``."""
    limits: dict[int | str, str] = {}
    for item in value.split(","):
        match = _MEMORY_ITEM.match(item.strip())
        if match is None:
            raise ValueError("must look like 0=70GiB,1=70GiB,cpu=200GiB")
        device, amount, unit = match.groups()
        key: int | str = int(device) if device.isdigit() else "cpu"
        limits[key] = f"{amount}{unit}"
    return limits


def _max_memory(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string like 0=70GiB,1=70GiB")
    if value.strip():
        parse_max_memory(value)
    return value.strip()


def _endpoint(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL (empty: run the model locally)")
    return value


def _env_name(value: Any) -> str:
    if not isinstance(value, str) or not value.isidentifier() or not value.isascii():
        raise ValueError("must be the name of an environment variable")
    return value


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


FIELDS: dict[str, Field] = {
    f.name: f
    for f in [
        Field("model", "Hugging Face model id or local directory", _text),
        Field(
            "dtype",
            "weight dtype: auto (bf16 on CUDA, fp32 on CPU)",
            _choice("auto", "bfloat16", "float16", "float32"),
        ),
        Field(
            "quantization",
            "none, 4bit (NF4) or 8bit (bitsandbytes)",
            _choice("none", "4bit", "8bit"),
        ),
        Field(
            "double_quant",
            "4-bit only: quantize the NF4 block scales too (~2.2 GB less for Mixtral)",
            _boolean,
        ),
        Field(
            "attention",
            "auto, sdpa, eager or flash_attention_2",
            _choice("auto", "sdpa", "eager", "flash_attention_2"),
        ),
        Field("device_map", "auto, cpu or cuda:N", _text),
        Field(
            "max_memory",
            "per-device limits for --device-map auto, e.g. 0=70GiB,1=70GiB",
            _max_memory,
        ),
        Field("trust_remote_code", "run code shipped with the model (off by default)", _boolean),
        Field("system_prompt", "system prompt for new conversations", _optional_text),
        Field("temperature", "sampling temperature; 0 means greedy", _number(0.0, 100.0)),
        Field("top_p", "nucleus sampling probability mass", _number(0.0, 1.0)),
        Field("top_k", "sample from the k most likely tokens; 0 turns it off", _integer(0)),
        Field("repetition_penalty", "1.0 turns it off", _number(0.01, 100.0)),
        Field("max_new_tokens", "longest reply, in tokens", _integer(1)),
        # torch.manual_seed takes at most 2**64 - 1.
        Field(
            "seed",
            "random seed for reproducible sampling",
            _integer(0, optional=True, high=2**64 - 1),
        ),
        Field("theme", "theme of the interactive app", _text),
        # Limits on what `mixchat import` reads (a file, or endless stdin such as /dev/zero).
        Field(
            "import_max_bytes",
            "largest file (or stdin) `mixchat import` reads, in bytes (default 64 MiB)",
            _integer(1),
        ),
        Field(
            "endpoint",
            "URL of an OpenAI-compatible server (vLLM, TGI, llama.cpp); empty runs locally",
            _endpoint,
        ),
        # The key itself is never stored: only the name of the variable that holds it.
        Field("api_key_env", "environment variable holding the server's API key", _env_name),
    ]
}
assert set(FIELDS) == {f.name for f in fields(Settings)}


def _apply(settings: Settings, values: Mapping[str, Any], source: str) -> Settings:
    changes: dict[str, Any] = {}
    for key, raw in values.items():
        field = FIELDS.get(key)
        if field is None:
            raise ConfigError(f"{source}: unknown setting {key!r}")
        try:
            changes[key] = field.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: {key} {exc} (got {raw!r})") from None
    return replace(settings, **changes)


def apply_values(settings: Settings, values: Mapping[str, Any], source: str) -> Settings:
    """Validate ``values`` (as typed by a user) and apply them; ``ConfigError`` names
    the key and ``source``."""
    return _apply(settings, values, source)


def read_toml(path: Path) -> dict[str, Any]:
    """Read the settings table of a TOML file; a missing file is empty."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return data


def env_values(environ: Mapping[str, str]) -> dict[str, str]:
    """``MIXCHAT_TEMPERATURE=0.2`` -> ``{"temperature": "0.2"}`` for known keys."""
    found = {}
    for name in FIELDS:
        value = environ.get(ENV_PREFIX + name.upper())
        if value is not None:
            found[name] = value
    return found


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults, the TOML file, the environment and flags (``None`` flags are unset)."""
    path = config_path or paths.config_file()
    settings = _apply(Settings(), read_toml(path), str(path))
    env = os.environ if environ is None else environ
    for key, value in env_values(env).items():
        settings = _apply(settings, {key: value}, f"environment variable {ENV_PREFIX}{key.upper()}")
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    for key, value in given.items():
        settings = _apply(settings, {key: value}, f"--{key.replace('_', '-')}")
    return settings


def save_setting(key: str, value: str, path: Path | None = None) -> None:
    """Set one top-level string setting in ``config.toml``, keeping the rest of the file.

    The file is replaced atomically through ``safefile`` (a link to it is followed, its
    mode kept); an unreadable, invalid or non-regular file is left alone (``ConfigError``).
    """
    import json
    import re
    import stat

    from mixchat.safefile import WriteError, reason, write_text

    if key not in FIELDS:
        raise ConfigError(f"unknown setting {key!r}")
    target = path or paths.config_file()
    try:
        if not stat.S_ISREG(target.stat().st_mode):
            raise ConfigError(f"{target}: not a regular file; left alone")
    except FileNotFoundError:
        pass  # a new file (or a dangling link, which write_text refuses)
    except OSError as exc:
        raise ConfigError(f"{target}: cannot read: {reason(exc)}") from None
    read_toml(target)  # refuse to edit a file we cannot parse
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    line = f"{key} = {json.dumps(value, ensure_ascii=False)}"
    pattern = re.compile(rf"^{re.escape(key)}\s*=.*$", re.MULTILINE)
    table = re.search(r"^\s*\[", text, re.MULTILINE)
    head = text[: table.start()] if table else text
    head = pattern.sub(lambda _: line, head, count=1) if pattern.search(head) else f"{line}\n{head}"
    new_text = head + (text[table.start() :] if table else "")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {target.parent}: {reason(exc)}") from None
    try:
        write_text(target, new_text)
    except WriteError as exc:
        raise ConfigError(str(exc)) from None
