"""Errors a user can cause map to exit codes without importing every core module."""

from __future__ import annotations

from mixchat.commands.errors import EXIT_FAILURE, EXIT_USAGE, exit_code_for
from mixchat.config import ConfigError
from mixchat.engine.base import EngineError
from mixchat.prompt import ContextOverflowError, PromptError
from mixchat.store import NotFoundError, StoreError
from mixchat.transcript import TranscriptError


def test_user_errors_have_their_codes_and_bugs_have_none() -> None:
    for usage in (
        ConfigError("x"),
        StoreError("x"),
        NotFoundError("x"),
        TranscriptError("x"),
        PromptError("x"),
        ContextOverflowError(40_000, 1024, 32_768),
    ):
        assert exit_code_for(usage) == EXIT_USAGE, usage
    assert exit_code_for(EngineError("x")) == EXIT_FAILURE
    for bug in (ValueError("x"), KeyError("x"), RuntimeError("x")):
        assert exit_code_for(bug) is None
