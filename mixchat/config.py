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
    endpoint: str = ""
    api_key_env: str = "MIXCHAT_API_KEY"
    # Limits on an OpenAI-compatible server (--endpoint); documented in FIELDS.
    server_idle_timeout_s: float = 300.0
    server_reply_timeout_s: float = 1800.0
    server_max_event_bytes: int = 1 << 20
    server_max_reply_bytes: int = 64 << 20
    server_retries: int = 3
    server_retry_max_wait_s: float = 30.0


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


class _Masked(ValueError):
    """A bad value that holds a secret: the error shows ``shown`` instead of the value."""

    def __init__(self, message: str, shown: str) -> None:
        super().__init__(message)
        self.shown = shown


def check_endpoint(value: str) -> str:
    """An OpenAI-compatible server's URL, checked and with surrounding spaces removed.

    ``http(s)://host[:port][/path]``: a host, a port in 1-65535 if any, no user name or
    password (the key goes in the variable named by ``api_key_env``), no query or fragment,
    no spaces or control characters. Raises ``ValueError`` saying what is wrong.
    """
    from urllib.parse import urlsplit

    url = value.strip()
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL (empty: run the model locally)")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not a number in 0-65535
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        raise _Masked(
            "must not hold a user name or password; put the key in the variable "
            "that api_key_env names",
            repr(url.replace(userinfo + "@", "***@", 1)),
        )
    host = parts.hostname or ""
    if not host:
        raise ValueError("has no host name")
    if ":" in host or "[" in parts.netloc:  # an IPv6 literal: urlsplit checks only brackets
        import ipaddress

        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            raise ValueError(f"has an invalid IPv6 address {host!r}") from None
    elif any(c in _BAD_HOST_CHARS for c in host):
        raise ValueError(f"has an invalid host name {host!r}")
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        raise ValueError("has an invalid port (1-65535)")
    if not _NETLOC.match(parts.netloc):  # e.g. "[::1]]:80": urlsplit takes it apart anyway
        raise ValueError(f"is not a valid URL (host and port {parts.netloc!r})")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError("must not have a query (?...) or fragment (#...)")
    return url


_NETLOC = re.compile(r"^(\[[^\[\]]*\]|[^\[\]:]+)(:\d+)?$")
_BAD_HOST_CHARS = frozenset("<>\"{}|\\^`%[]/?#@,;=!$&'()*+")


def _endpoint(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return check_endpoint(value) if value.strip() else ""


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
        Field(
            "endpoint",
            "URL of an OpenAI-compatible server (vLLM, TGI, llama.cpp); empty runs locally",
            _endpoint,
        ),
        # The key itself is never stored: only the name of the variable that holds it.
        Field("api_key_env", "environment variable holding the server's API key", _env_name),
        # Limits on the server: each error names the setting to raise.
        Field(
            "server_idle_timeout_s",
            "seconds the server may send no data (before its first event or between two)",
            _number(0.001, 86400.0),
        ),
        Field(
            "server_reply_timeout_s",
            "seconds one reply from the server may take, retries included",
            _number(0.001, 604800.0),
        ),
        Field(
            "server_max_event_bytes",
            "largest stream event (one Server-Sent Event, or one line of it) from the server",
            _integer(1024, high=1 << 30),
        ),
        Field(
            "server_max_reply_bytes",
            "most bytes read from the server for one reply",
            _integer(1024, high=1 << 40),
        ),
        Field(
            "server_retries",
            "retries of a request that fails before the first token (refused connection, "
            "408, 429, 502, 503, 504, a dropped stream); 0 turns them off",
            _integer(0, high=100),
        ),
        Field(
            "server_retry_max_wait_s",
            "longest wait before a retry; a server asking (Retry-After) for longer is not retried",
            _number(0.0, 3600.0),
        ),
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
            got = exc.shown if isinstance(exc, _Masked) else repr(raw)
            raise ConfigError(f"{source}: {key} {exc} (got {got})") from None
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

    The file is rewritten atomically; an unreadable or invalid file is left alone
    (``ConfigError``).
    """
    import json
    import re

    if key not in FIELDS:
        raise ConfigError(f"unknown setting {key!r}")
    target = path or paths.config_file()
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
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(new_text, encoding="utf-8")
    tmp.replace(target)
