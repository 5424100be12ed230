"""Command-line flags derived from the settings table (``mixchat.config.OPTIONS``).

``settings_flags(names)`` gives a typer command one option per named setting (and its
switches, such as ``--4bit``) and hands the command the values given as ``flags``: setting
name -> raw value, unset flags absent. Validation happens in ``mixchat.config``, so a bad
value is reported with the flag the user typed.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any, ClassVar, TypeVar

import typer
from typer.core import TyperCommand

from mixchat.config import OPTIONS

F = TypeVar("F", bound=Callable[..., Any])

# Everything a model-running command (`ask`, the app) accepts.
MODEL_SETTINGS = tuple(name for name, option in OPTIONS.items() if option.flag or option.switches)


def _value_param(name: str) -> str:
    return f"setting__{name}"


def _switch_param(name: str, index: int) -> str:
    return f"switch__{name}__{index}"


def _parameters(names: Iterable[str]) -> list[inspect.Parameter]:
    params = []
    for name in names:
        option = OPTIONS[name]
        if option.flag:
            decls = [option.flag, *([option.short] if option.short else [])]
            info = typer.Option(
                *decls, help=option.help or option.doc, metavar=option.metavar, show_default=False
            )
            params.append(
                inspect.Parameter(
                    _value_param(name),
                    inspect.Parameter.KEYWORD_ONLY,
                    default=None,
                    annotation=Annotated[str | None, info],
                )
            )
        for index, switch in enumerate(option.switches):
            params.append(
                inspect.Parameter(
                    _switch_param(name, index),
                    inspect.Parameter.KEYWORD_ONLY,
                    default=False,
                    annotation=Annotated[bool, typer.Option(switch.flag, help=switch.help)],
                )
            )
    return params


def _collect(names: Iterable[str], kwargs: dict[str, Any]) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    for name in names:
        option = OPTIONS[name]
        value = kwargs.pop(_value_param(name), None)
        chosen = [
            switch
            for index, switch in enumerate(option.switches)
            if kwargs.pop(_switch_param(name, index), False)
        ]
        if len(chosen) + (value is not None) > 1:
            used = [s.flag for s in chosen] + ([option.flag] if value is not None else [])
            raise typer.BadParameter(f"choose one of {' and '.join(map(str, used))}")
        if chosen:
            flags[name] = chosen[0].value
        elif value is not None:
            flags[name] = value
    return flags


def settings_flags(names: Iterable[str] = MODEL_SETTINGS) -> Callable[[F], F]:
    """Give the decorated typer command the flags of the named settings; it receives the
    values given as the keyword argument ``flags``."""
    chosen = tuple(names)

    def decorate(func: F) -> F:
        own = inspect.signature(func, eval_str=True)
        kept = [p for p in own.parameters.values() if p.name != "flags"]
        params = kept + _parameters(chosen)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return func(*args, flags=_collect(chosen, kwargs), **kwargs)

        wrapper.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper  # type: ignore[return-value]

    return decorate


_NUMBER = re.compile(r"^[+-]?[0-9]+$")


def optional_values(args: list[str], optional: dict[str, str]) -> list[str]:
    """Rewrite options whose value may be left out (``--extract [N]``): ``--extract 2`` ->
    ``--extract=2`` and a bare ``--extract`` -> ``--extract=DEFAULT``. Only a whole number
    is taken as the value, so ``--extract "write a script"`` leaves the prompt alone."""
    out: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            out.extend(args[index:])
            break
        index += 1
        if arg in optional:
            following = args[index] if index < len(args) else None
            if following is not None and _NUMBER.match(following):
                out.append(f"{arg}={following}")
                index += 1
            else:
                out.append(f"{arg}={optional[arg]}")
            continue
        out.append(arg)
    return out


class OptionalValueCommand(TyperCommand):
    """A command whose ``OPTIONAL`` options may be given without a value (click cannot
    say that through typer)."""

    OPTIONAL: ClassVar[dict[str, str]] = {"--extract": "-1"}

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, optional_values(args, self.OPTIONAL))
