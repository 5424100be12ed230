"""One place that turns errors a user can cause into a one-line message and an exit code."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from mixchat.textsafe import neutralize

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILURE = 1  # the model failed to load or to answer
EXIT_USAGE = 2  # bad input, bad config, unreadable data
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_USAGE) -> int:
    """Print ``mixchat: error: message`` on stderr and return ``code``."""
    line = neutralize(" ".join(message.split()))
    print(f"mixchat: error: {line}", file=sys.stderr, flush=True)
    return code


def handle_errors(func: F) -> F:
    """Catch the known error types of the core and exit with a one-line message."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import typer

        from mixchat.config import ConfigError
        from mixchat.engine.base import EngineError
        from mixchat.prompt import PromptError
        from mixchat.store import StoreError
        from mixchat.transcript import TranscriptError

        try:
            return func(*args, **kwargs)
        except (ConfigError, StoreError, TranscriptError, PromptError) as exc:
            raise typer.Exit(fail(str(exc), EXIT_USAGE)) from None
        except EngineError as exc:
            raise typer.Exit(fail(str(exc), EXIT_FAILURE)) from None
        except BrokenPipeError:
            # The reader went away (e.g. `| head`); stop quietly like other tools.
            sys.stderr.close()
            raise typer.Exit(EXIT_FAILURE) from None
        except KeyboardInterrupt:
            print("", file=sys.stderr)
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]
