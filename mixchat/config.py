"""Settings, declared once.

Every setting is one field of ``Settings`` carrying its ``Option``: type, default, parser,
documentation, command-line flag, environment variable and scope. Everything else derives
from that table: the typer options of ``ask``, the app and ``doctor`` (``mixchat.cli``),
``GenerationParams``, the app's settings window, ``mixchat config``, and what a conversation
keeps of its settings.

Precedence, lowest first: defaults < ``config.toml`` < ``MIXCHAT_*`` environment < a preset
chosen now (``mixchat.presets``) < the conversation's own saved settings < flags given now
(``SettingsSources.effective``).
"""

from __future__ import annotations

import enum
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixchat import paths
from mixchat.numbers import parse_float, parse_int

if TYPE_CHECKING:
    from mixchat.conversation import Conversation
    from mixchat.presets import Preset

DEFAULT_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
ENV_PREFIX = "MIXCHAT_"
# Temperatures below this (0 included) mean greedy decoding: sampling at a tinier one picks
# the most likely token anyway, and dividing logits by it overflows to inf/nan.
GREEDY_BELOW = 1e-5


class ConfigError(Exception):
    """A setting has a bad value; the message names the key and where it came from."""


class Scope(enum.StrEnum):
    """What a setting governs."""

    LOAD = "load"  # how the model is loaded or reached; fixed for a process
    CONVERSATION = "conversation"  # sampling and system prompt; kept with each conversation
    APP = "app"  # the program itself: the app, the history commands, files put into a message


@dataclass(frozen=True)
class Switch:
    """A command-line flag that sets its option to a fixed value (``--4bit``)."""

    flag: str
    value: Any
    help: str


@dataclass(frozen=True)
class Option:
    """One setting: how it is parsed, what it means and how a user can set it."""

    name: str
    doc: str
    parse: Callable[[Any], Any]
    default: Any
    scope: Scope
    flag: str | None = None  # e.g. "--max-tokens"; None: config file and environment only
    short: str | None = None  # e.g. "-t"
    help: str | None = None  # shorter help for --help (default: doc)
    metavar: str = "TEXT"
    switches: tuple[Switch, ...] = ()

    @property
    def label(self) -> str:
        """A short name for a form ("Max new tokens"); ``doc`` says the rest."""
        return self.name.replace("_", " ").capitalize()

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return ENV_PREFIX + self.name.upper()


@dataclass(frozen=True)
class _Spec:
    doc: str
    parse: Callable[[Any], Any]
    scope: Scope
    flag: str | None
    short: str | None
    help: str | None
    metavar: str
    switches: tuple[Switch, ...]


def _option(
    default: Any,
    doc: str,
    parse: Callable[[Any], Any],
    scope: Scope,
    *,
    flag: str | None = None,
    short: str | None = None,
    help: str | None = None,
    metavar: str = "TEXT",
    switches: tuple[Switch, ...] = (),
) -> Any:
    spec = _Spec(doc, parse, scope, flag, short, help, metavar, switches)
    return field(default=default, metadata={"option": spec})


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


def _as_number(value: Any) -> float:
    """A TOML number as is; text (environment, flags, the app) in ASCII digits only."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_float(value)
        except ValueError:
            pass
    raise ValueError("must be a number written with the digits 0-9, like 0.7")


def _as_integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return parse_int(value)
        except ValueError:
            pass
    raise ValueError("must be a whole number written with the digits 0-9, like 512")


def _number(low: float, high: float | None = None) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        number = _as_number(value)
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
        number = _as_integer(value)
        if number < low:
            raise ValueError(f"must be >= {low}")
        if high is not None and number > high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


_MEMORY_ITEM = re.compile(
    r"^(cpu|\d+)=(\d+(?:\.\d+)?)\s*(GiB|GB|MiB|MB)$", re.IGNORECASE | re.ASCII
)
_MEMORY_UNITS = {"gib": 1024**3, "gb": 10**9, "mib": 1024**2, "mb": 10**6}


def parse_max_memory(value: str) -> dict[int | str, int]:
    """``"0=70GiB,1=70GiB,cpu=200GB"`` -> bytes by device: ``{0: 70 GiB, 1: ..., "cpu": ...}``.

    The one reader of ``--max-memory``: config validation, the stock loader (accelerate
    takes bytes) and the quantized placement all use it."""
    limits: dict[int | str, int] = {}
    for item in value.split(","):
        match = _MEMORY_ITEM.match(item.strip())
        if match is None:
            raise ValueError("must look like 0=70GiB,1=70GiB,cpu=200GiB")
        device, amount, unit = match.groups()
        key: int | str = int(device) if device.isdigit() else "cpu"
        limits[key] = int(float(amount) * _MEMORY_UNITS[unit.lower()])
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


def _temperature(value: Any) -> float:
    # Below GREEDY_BELOW sampling is greedy in effect, and dividing logits by a subnormal
    # temperature overflows to inf/nan: store such a temperature as 0 (greedy).
    number = _number(0.0, 100.0)(value)
    return 0.0 if number < GREEDY_BELOW else number


_DEVICE_MAP = re.compile(r"auto|cpu|cuda|cuda:[0-9]+")


def _device_map(value: Any) -> str:
    if not isinstance(value, str) or not _DEVICE_MAP.fullmatch(value):
        raise ValueError("must be auto, cpu, cuda or cuda:N (N a GPU number such as 0)")
    return value


_CPU_EXPERTS = re.compile(r"^(auto|\d+|\d+-\d+(,\s*\d+(-\d+)?)*|\d+(,\s*\d+(-\d+)?)+)$", re.ASCII)


def _cpu_experts(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("must be a number of layers, auto, or layers like 24-31")
    text = value.strip().lower()
    if text and not _CPU_EXPERTS.match(text):
        raise ValueError("must be a number of layers, auto, or layers like 24-31 or 0,2,5-7")
    return text


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


L, C, A = Scope.LOAD, Scope.CONVERSATION, Scope.APP


@dataclass(frozen=True)
class Settings:
    """Everything mixchat can be told: one field per setting, its ``Option`` in the metadata."""

    model: str = _option(
        DEFAULT_MODEL, "Hugging Face model id or local directory", _text, L,
        flag="--model", short="-m", help="Hub id or local directory.",
    )  # fmt: skip
    dtype: str = _option(
        "auto", "weight dtype: auto (bf16 on CUDA, fp32 on CPU)",
        _choice("auto", "bfloat16", "float16", "float32"), L,
        flag="--dtype", help="auto | bfloat16 | float16 | float32.",
    )  # fmt: skip
    quantization: str = _option(
        "none", "none, 4bit (NF4) or 8bit (bitsandbytes)", _choice("none", "4bit", "8bit"), L,
        switches=(
            Switch("--4bit", "4bit", "NF4 4-bit weights (bitsandbytes)."),
            Switch("--8bit", "8bit", "8-bit weights (bitsandbytes)."),
        ),
    )  # fmt: skip
    double_quant: bool = _option(
        True, "4-bit only: quantize the NF4 block scales too (~2.2 GB less for Mixtral)",
        _boolean, L,
    )  # fmt: skip
    attention: str = _option(
        "auto", "auto, sdpa, eager or flash_attention_2",
        _choice("auto", "sdpa", "eager", "flash_attention_2"), L,
        switches=(
            Switch("--flash-attn", "flash_attention_2", "Use flash-attention 2 if possible."),
        ),
    )  # fmt: skip
    device_map: str = _option(
        "auto", "auto, cpu, cuda or cuda:N", _device_map, L,
        flag="--device-map", help="auto | cpu | cuda | cuda:N.",
    )  # fmt: skip
    max_memory: str = _option(
        "", "per-device limits for --device-map auto, e.g. 0=70GiB,1=70GiB", _max_memory, L,
        flag="--max-memory", help="Per-device limits for auto placement: 0=70GiB,1=70GiB.",
    )  # fmt: skip
    cpu_experts: str = _option(
        "",
        "4bit/8bit Mixtral: layers whose experts stay in system RAM, computed on the CPU: "
        "N (the last N), auto (as few as fit), or layers like 24-31; empty: none",
        _cpu_experts, L, flag="--cpu-experts",
        help="4bit/8bit Mixtral: keep the experts of N layers (or auto, or 24-31) in system RAM.",
    )  # fmt: skip
    quant_cache: bool = _option(
        True, "4bit/8bit Mixtral: keep the quantized weights in mixchat's cache directory so "
        "the next start reads them instead of quantizing the checkpoint again (mixchat doctor "
        "shows where and how much; delete that directory to clear it)", _boolean, L,
        switches=(
            Switch("--no-quant-cache", False, "Quantize anew; neither read nor keep the "
                   "quantized weights in the cache."),
        ),
    )  # fmt: skip
    trust_remote_code: bool = _option(
        False, "run code shipped with the model (off by default)", _boolean, L,
        switches=(Switch("--trust-remote-code", True, "Run code shipped with the model."),),
    )  # fmt: skip
    system_prompt: str | None = _option(
        None, "system prompt for new conversations", _optional_text, C,
        flag="--system", short="-s", help="System prompt.",
    )  # fmt: skip
    temperature: float = _option(
        0.7, f"sampling temperature; 0 (or below {GREEDY_BELOW:g}) means greedy", _temperature, C,
        flag="--temperature", short="-t", help="0 = greedy.", metavar="FLOAT",
    )  # fmt: skip
    top_p: float = _option(
        0.95, "nucleus sampling probability mass", _number(0.0, 1.0), C,
        flag="--top-p", help="Nucleus sampling mass.", metavar="FLOAT",
    )  # fmt: skip
    top_k: int = _option(
        0, "sample from the k most likely tokens; 0 turns it off", _integer(0), C,
        flag="--top-k", help="0 = off.", metavar="INTEGER",
    )  # fmt: skip
    repetition_penalty: float = _option(
        1.0, "1.0 turns it off", _number(0.01, 100.0), C,
        flag="--repetition-penalty", help="1.0 = off.", metavar="FLOAT",
    )  # fmt: skip
    max_new_tokens: int = _option(
        1024, "longest reply, in tokens", _integer(1), C,
        flag="--max-tokens", help="Longest reply in tokens.", metavar="INTEGER",
    )  # fmt: skip
    # torch.manual_seed takes at most 2**64 - 1.
    seed: int | None = _option(
        None, "random seed for reproducible sampling",
        _integer(0, optional=True, high=2**64 - 1), C,
        flag="--seed", help="Seed for reproducible sampling.", metavar="INTEGER",
    )  # fmt: skip
    theme: str = _option("mixchat-dark", "theme of the interactive app", _text, A)
    # Limits on what `mixchat import` reads (a file, or endless stdin such as /dev/zero).
    import_max_bytes: int = _option(
        64 * 1024 * 1024,
        "largest file (or stdin) `mixchat import` reads, in bytes (default 64 MiB)",
        _integer(1), A, metavar="INTEGER",
    )  # fmt: skip
    clipboard: str = _option(
        "auto", "how the app copies: auto (OSC 52 where the terminal is known to take it, "
        "else wl-copy, xclip, xsel or pbcopy, else OSC 52), osc52 or system (a tool only)",
        _choice("auto", "osc52", "system"), A,
    )  # fmt: skip
    max_file_bytes: int = _option(
        1 << 20, "largest file that ask -f (or the app's attach) puts into a message, in bytes",
        _integer(1, high=1 << 30), A, metavar="INTEGER",
    )  # fmt: skip
    endpoint: str = _option(
        "", "URL of an OpenAI-compatible server (vLLM, TGI, llama.cpp); empty runs locally",
        _endpoint, L, flag="--endpoint",
        help="OpenAI-compatible server URL (vLLM, TGI, llama.cpp); key from $MIXCHAT_API_KEY.",
    )  # fmt: skip
    # The key itself is never stored: only the name of the variable that holds it.
    api_key_env: str = _option(
        "MIXCHAT_API_KEY", "environment variable holding the server's API key", _env_name, L
    )
    # Limits on an OpenAI-compatible server (--endpoint): each error names the setting to raise.
    server_idle_timeout_s: float = _option(
        300.0, "seconds the server may send no data (before its first event or between two)",
        _number(0.001, 86400.0), L, metavar="FLOAT",
    )  # fmt: skip
    server_reply_timeout_s: float = _option(
        1800.0, "seconds one reply from the server may take, retries included",
        _number(0.001, 604800.0), L, metavar="FLOAT",
    )  # fmt: skip
    server_max_event_bytes: int = _option(
        1 << 20, "largest stream event (one Server-Sent Event, or one line of it) from the server",
        _integer(1024, high=1 << 30), L, metavar="INTEGER",
    )  # fmt: skip
    server_max_reply_bytes: int = _option(
        64 << 20, "most bytes read from the server for one reply",
        _integer(1024, high=1 << 40), L, metavar="INTEGER",
    )  # fmt: skip
    server_retries: int = _option(
        3, "retries of a request that fails before the first token (refused connection, "
        "408, 429, 502, 503, 504, a dropped stream); 0 turns them off",
        _integer(0, high=100), L, metavar="INTEGER",
    )  # fmt: skip
    server_retry_max_wait_s: float = _option(
        30.0,
        "longest wait before a retry; a server asking (Retry-After) for longer is not retried",
        _number(0.0, 3600.0), L, metavar="FLOAT",
    )  # fmt: skip


def _options() -> dict[str, Option]:
    table = {}
    for f in fields(Settings):
        spec: _Spec = f.metadata["option"]
        table[f.name] = Option(
            f.name, spec.doc, spec.parse, f.default, spec.scope, spec.flag, spec.short,
            spec.help, spec.metavar, spec.switches,
        )  # fmt: skip
    return table


OPTIONS: dict[str, Option] = _options()
FIELDS = OPTIONS  # the name the rest of the code base has used for the table
DEFAULTS = Settings()
# Tables of config.toml that are not settings; each is read where it is used (read_table).
TABLES = ("keymap",)

# What a conversation keeps of its settings (its system prompt has a column of its own).
CONVERSATION_KEYS = tuple(
    name for name, o in OPTIONS.items() if o.scope is Scope.CONVERSATION and name != "system_prompt"
)


def option_source(name: str, given: str | None = None) -> str:
    """How a user names an option on the command line: its flag, else the switch used."""
    option = OPTIONS.get(name)
    if given or option is None:
        return given or f"--{name.replace('_', '-')}"
    return option.flag or (option.switches[0].flag if option.switches else f"--{name}")


def _apply(
    settings: Settings,
    values: Mapping[str, Any],
    source: str,
    sources: Mapping[str, str] | None = None,
) -> Settings:
    """Parse ``values`` onto ``settings``; an error names the key and its source (``sources``
    gives a source per key, e.g. the flag a user typed)."""
    changes: dict[str, Any] = {}
    for key, raw in values.items():
        option = OPTIONS.get(key)
        where = (sources or {}).get(key, source)
        if option is None:
            raise ConfigError(f"{where}: unknown setting {key!r}")
        try:
            changes[key] = option.parse(raw)
        except ValueError as exc:
            got = exc.shown if isinstance(exc, _Masked) else repr(raw)
            if sources is not None and key in sources:
                raise ConfigError(f"{where} {exc} (got {got})") from None
            raise ConfigError(f"{where}: {key} {exc} (got {got})") from None
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


def read_table(name: str, config_path: Path | None = None) -> Any:
    """The ``[name]`` table of ``config.toml`` as written, or None; it is checked by the
    code that uses it (``[keymap]``: the app's keys, ``mixchat.tui.keymap``)."""
    return read_toml(config_path or paths.config_file()).get(name)


def env_values(environ: Mapping[str, str]) -> dict[str, str]:
    """``MIXCHAT_TEMPERATURE=0.2`` -> ``{"temperature": "0.2"}`` for known keys."""
    found = {}
    for name in FIELDS:
        value = environ.get(ENV_PREFIX + name.upper())
        if value is not None:
            found[name] = value
    return found


# The key of a conversation's saved settings that names the preset it was started with (or
# had applied last); not a setting, so never read back as one.
PRESET_KEY = "preset"
PRESETS_TABLE = "presets"  # [presets.NAME] tables in config.toml


def conversation_settings(settings: Settings, preset: Preset | None = None) -> dict[str, Any]:
    """What a new conversation saves of ``settings`` (both front ends save the same keys),
    and the name of the ``preset`` it was started with."""
    saved: dict[str, Any] = {key: getattr(settings, key) for key in CONVERSATION_KEYS}
    if preset is not None:
        saved[PRESET_KEY] = preset.name
    return saved


@dataclass(frozen=True)
class SettingsSources:
    """Settings from defaults, the config file and the environment (``base``), kept apart
    from a preset and the flags given now, so that a conversation's saved settings can go
    between."""

    base: Settings
    flags: Mapping[str, Any] = field(default_factory=dict)  # validated; only the given ones
    preset: Preset | None = None  # chosen now (--preset, the app's picker); validated

    def effective(self, conversation: Conversation | None = None) -> Settings:
        """The settings in effect for ``conversation`` (None: a new one): defaults < config
        < environment < the preset < the conversation's saved settings and system prompt
        < flags."""
        settings = self.base
        if self.preset is not None:
            settings = replace(settings, **self.preset.values)
        if conversation is not None:
            saved = {k: v for k, v in conversation.settings.items() if k in CONVERSATION_KEYS}
            try:
                settings = _apply(settings, saved, f"conversation {conversation.id[:12]}")
            except ConfigError:
                # Saved values were validated when saved or imported; a bad one is ignored
                # key by key rather than making the conversation unusable.
                for key, value in saved.items():
                    try:
                        settings = _apply(settings, {key: value}, "conversation")
                    except ConfigError:
                        continue
            settings = replace(settings, system_prompt=conversation.system_prompt)
        return replace(settings, **self.flags)

    def without_flags(self, names: Iterable[str]) -> SettingsSources:
        """The same sources minus the flags of ``names`` (a later choice replaced them)."""
        dropped = set(names)
        kept = {k: v for k, v in self.flags.items() if k not in dropped}
        return replace(self, flags=kept)

    def with_flags(self, flags: Mapping[str, Any]) -> SettingsSources:
        """The same sources with more flags on top (validated; ``None`` values are unset)."""
        given = _validated_flags(flags)
        return replace(self, flags={**self.flags, **given})

    def with_preset(self, preset: Preset | None) -> SettingsSources:
        """The same sources with ``preset`` (None: none) between environment and the
        conversation's saved settings."""
        return replace(self, preset=preset)


def _validated_flags(flags: Mapping[str, Any] | None) -> dict[str, Any]:
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    checked = _apply(Settings(), given, "", sources={k: option_source(k) for k in given})
    return {k: getattr(checked, k) for k in given}


def load_sources(
    flags: Mapping[str, Any] | None = None,
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> SettingsSources:
    """Read defaults, the TOML file and the environment; validate the flags (``None`` flags
    are unset). Every error names its source: the file, the variable or the flag."""
    path = config_path or paths.config_file()
    table = read_toml(path)
    table.pop(PRESETS_TABLE, None)  # read (and checked) by mixchat.presets when one is used
    for name in TABLES:  # read where they are used (read_table)
        table.pop(name, None)
    settings = _apply(Settings(), table, str(path))
    env = os.environ if environ is None else environ
    for key, value in env_values(env).items():
        settings = _apply(settings, {key: value}, f"environment variable {OPTIONS[key].env}")
    return SettingsSources(settings, _validated_flags(flags))


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults, the TOML file, the environment and flags (``None`` flags are unset)."""
    return load_sources(flags, config_path=config_path, environ=environ).effective()


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
