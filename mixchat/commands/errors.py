"""One place that turns errors a user can cause into a one-line message and an exit code."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from mixchat.textsafe import for_terminal

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILURE = 1  # the model failed to load or to answer
EXIT_USAGE = 2  # bad input, bad config, unreadable data
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_USAGE) -> int:
    """Print ``mixchat: error: message`` on stderr and return ``code``."""
    line = for_terminal(" ".join(message.split()))
    print(f"mixchat: error: {line}", file=sys.stderr, flush=True)
    return code


# The core's error types a user can cause, by module: looked up in ``sys.modules`` rather
# than imported, since an exception of a type implies its module was imported, and importing
# them all up front costs ``mixchat list`` and ``search`` ~15 ms of start-up.
_USAGE_ERRORS = (
    ("mixchat.config", "ConfigError"),
    ("mixchat.store", "StoreError"),
    ("mixchat.transcript", "TranscriptError"),
    ("mixchat.prompt", "PromptError"),
    ("mixchat.safefile", "WriteError"),
    ("mixchat.engine.base", "DownloadRefused"),  # the user must choose: a flag, space
)
# An OSError of these kinds that reaches the top came from writing our output (a full disk
# behind `> file`, `> /dev/full`): the core turns its own file errors into its error types.
_OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)
_FAILURE_ERRORS = (("mixchat.engine.base", "EngineError"),)


def _is_one_of(exc: BaseException, types: tuple[tuple[str, str], ...]) -> bool:
    for module_name, type_name in types:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, getattr(module, type_name)):
            return True
    return False


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code for an error a user can cause; None for anything else (a bug)."""
    if _is_one_of(exc, _USAGE_ERRORS):
        return EXIT_USAGE
    if _is_one_of(exc, _FAILURE_ERRORS):
        return EXIT_FAILURE
    return None


def _output_failed(exc: OSError) -> int:
    """One line for output that could not be written; stdout then goes to /dev/null so
    the interpreter's last flush of what is still buffered cannot fail a second time."""
    from mixchat.safefile import reason

    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return fail(f"cannot write the output: {reason(exc)}")


def handle_errors(func: F) -> F:
    """Catch the known error types of the core and exit with a one-line message."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import typer

        try:
            try:
                result = func(*args, **kwargs)
            except typer.Exit:
                sys.stdout.flush()
                raise
            sys.stdout.flush()  # a full disk behind stdout shows here, not at exit
            return result
        except BrokenPipeError:
            # The reader went away (e.g. `| head`); stop quietly like other tools.
            sys.stderr.close()
            raise typer.Exit(EXIT_FAILURE) from None
        except OSError as exc:
            if exc.errno not in _OUTPUT_ERRNOS:
                raise
            raise typer.Exit(_output_failed(exc)) from None
        except KeyboardInterrupt:
            print("", file=sys.stderr)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            code = exit_code_for(exc)
            if code is None:
                raise
            raise typer.Exit(fail(str(exc), code)) from None

    return wrapper  # type: ignore[return-value]
