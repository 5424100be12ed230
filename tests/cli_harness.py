"""Run the ``mixchat`` command in this process, with engines loaded once per test session.

Spawning ``mixchat ask`` costs ~15 s of importing torch and transformers per call; what a
command prints, saves and exits with can be checked in process instead. Real processes
stay where they are the point: signals, kills, terminals, and one smoke test per command.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from typer.testing import CliRunner

from mixchat.config import OPTIONS, Scope, Settings
from mixchat.engine import factory
from mixchat.engine.base import Engine

LOAD_KEYS = tuple(name for name, option in OPTIONS.items() if option.scope is Scope.LOAD)


class EnginePool:
    """Local engines by their load settings, each loaded once and shared by every test;
    ``close()`` on a shared engine does nothing until the pool closes it."""

    def __init__(self) -> None:
        self._engines: dict[tuple[Any, ...], Any] = {}
        self._real = factory.make_engine

    def make(self, settings: Settings) -> Engine:
        if settings.endpoint:
            return self._real(settings)
        key = tuple(getattr(settings, name) for name in LOAD_KEYS)
        engine = self._engines.get(key)
        if engine is None:
            engine = self._real(settings)
            engine.close = lambda: None  # type: ignore[method-assign]  # the pool closes it
            self._engines[key] = engine
        return engine

    def close(self) -> None:
        for engine in self._engines.values():
            type(engine).close(engine)
        self._engines.clear()


@dataclass
class CliResult:
    """What a run printed and how it ended (named like ``subprocess.CompletedProcess``)."""

    returncode: int
    stdout: str
    stderr: str


class Cli:
    """``cli("ask", "--model", ...)`` runs the command in process."""

    def __call__(
        self, *args: str, input: str | bytes | None = None, env: dict[str, str] | None = None
    ) -> CliResult:
        from mixchat import cli

        data = input.encode("utf-8", "surrogateescape") if isinstance(input, str) else input
        saved_stdin = sys.stdin
        try:
            result = CliRunner().invoke(
                cli.app,
                list(args),
                input=data if data is not None else b"",
                env=env,
                catch_exceptions=False,
                prog_name="mixchat",
            )
        finally:
            sys.stdin = saved_stdin
        return CliResult(result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="session")
def engine_pool() -> Iterator[EnginePool]:
    pool = EnginePool()
    yield pool
    pool.close()


@pytest.fixture
def cli(engine_pool: EnginePool, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The mixchat CLI in process, with local engines shared across the session."""
    monkeypatch.setattr(factory, "make_engine", engine_pool.make)
    return Cli()
