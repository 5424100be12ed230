"""The ``mixchat`` command line. Thin: parsing here, work in ``mixchat.commands``.

Nothing heavy is imported at module level: ``mixchat --help`` and ``mixchat list``
never import torch, transformers, textual or rich.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mixchat.commands.errors import handle_errors
from mixchat.commands.flags import OptionalValueCommand, settings_flags
from mixchat.numbers import parse_int

app = typer.Typer(
    name="mixchat",
    help="Chat with Mixtral-8x7B-Instruct on your own hardware.",
    add_completion=True,
    no_args_is_help=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _ascii_int(minimum: int) -> Any:
    """A typer parser: whole numbers in ASCII digits only (click's own takes ``٣`` as 3)."""

    def parser(text: Any) -> Any:
        if not isinstance(text, str):
            return text  # a default value, already a number
        try:
            value = parse_int(text)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        if value < minimum:
            raise typer.BadParameter(f"{value} is below the minimum of {minimum}")
        return value

    return parser


def _complete_id(incomplete: str) -> list[tuple[str, str]]:
    """Shell completion of conversation ids (with their titles as help)."""
    from mixchat.commands.history import complete_conversation_ids

    return complete_conversation_ids(incomplete)


def _complete_preset(incomplete: str) -> list[tuple[str, str]]:
    """Shell completion of preset names (with their descriptions as help)."""
    from mixchat.commands.presets import complete_presets

    return complete_presets(incomplete)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
PresetOpt = Annotated[
    str | None,
    typer.Option(
        "--preset",
        metavar="NAME",
        help="System prompt and sampling from preset NAME (mixchat presets lists them).",
        autocompletion=_complete_preset,
    ),
]


def _extract_number(value: str | None) -> int | None:
    """``--extract``'s N: a whole number other than 0 (negative: from the end)."""
    if value is None:
        return None
    try:
        number = parse_int(value)
    except ValueError:
        number = 0
    if number == 0:
        raise typer.BadParameter(
            f"{value!r}: N counts code blocks from 1 (or from -1, the last)",
            param_hint="'--extract'",
        )
    return number


@app.callback(invoke_without_command=True)
@handle_errors
@settings_flags()
def main_callback(
    ctx: typer.Context,
    flags: dict[str, Any],
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            "-r",
            metavar="ID",
            help="Open conversation ID (prefix ok).",
            autocompletion=_complete_id,
        ),
    ] = None,
    continue_last: Annotated[
        bool, typer.Option("--continue", "-c", help="Open the last conversation.")
    ] = False,
    preset: PresetOpt = None,
) -> None:
    """Chat with Mixtral-8x7B-Instruct on your own hardware.

    With no command, opens the interactive app (F1 lists its keys).
    """
    if ctx.invoked_subcommand is not None:
        return
    from mixchat.commands.interactive import run_interactive

    raise typer.Exit(run_interactive(flags, resume, continue_last, preset))


@app.command(cls=OptionalValueCommand)
@handle_errors
@settings_flags()
def ask(
    flags: dict[str, Any],
    prompt: Annotated[str | None, typer.Argument(help="The question; stdin is appended.")] = None,
    continue_last: Annotated[
        bool, typer.Option("--continue", "-c", help="Continue the last conversation.")
    ] = False,
    conversation: Annotated[
        str | None,
        typer.Option(
            "--conversation",
            metavar="ID",
            help="Continue conversation ID (prefix ok).",
            autocompletion=_complete_id,
        ),
    ] = None,
    no_save: Annotated[bool, typer.Option("--no-save", help="Keep nothing on disk.")] = False,
    as_json: JsonOpt = False,
    show_prompt: Annotated[
        bool, typer.Option("--show-prompt", help="Print the exact prompt; load no weights.")
    ] = False,
    continue_reply: Annotated[
        bool,
        typer.Option(
            "--continue-reply", help="With -c or --conversation: go on with the last answer."
        ),
    ] = False,
    files: Annotated[
        list[str] | None,
        typer.Option(
            "--file", "-f", metavar="FILE", help="Put a text file into the message; repeatable."
        ),
    ] = None,
    preset: PresetOpt = None,
    extract: Annotated[
        str | None,
        typer.Option(
            "--extract",
            metavar="[N]",
            help="Print only the reply's last code block (N: the Nth; -N from the end).",
        ),
    ] = None,
) -> None:
    """Ask one question and stream the answer to stdout."""
    from mixchat.commands.ask import AskRequest, run_ask

    request = AskRequest(
        prompt=prompt,
        flags=flags,
        continue_last=continue_last,
        conversation=conversation,
        save=not no_save,
        as_json=as_json,
        show_prompt=show_prompt,
        continue_reply=continue_reply,
        files=list(files or []),
        preset=preset,
        extract=_extract_number(extract),
    )
    raise typer.Exit(run_ask(request))


@app.command("list")
@handle_errors
def list_(
    as_json: JsonOpt = False,
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="Show at most N.", parser=_ascii_int(1))
    ] = 50,
) -> None:
    """List saved conversations, newest first."""
    from mixchat.commands.history import list_conversations

    list_conversations(limit=limit, as_json=as_json)


@app.command()
@handle_errors
def show(
    conversation_id: Annotated[
        str, typer.Argument(metavar="ID", help="Id or unique prefix.", autocompletion=_complete_id)
    ],
    as_json: JsonOpt = False,
) -> None:
    """Print a saved conversation."""
    from mixchat.commands.history import show_conversation

    show_conversation(conversation_id, as_json=as_json)


@app.command()
@handle_errors
def search(
    query: Annotated[str, typer.Argument(help="Words to find.")],
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option("--limit", "-n", parser=_ascii_int(1))] = 50,
) -> None:
    """Full-text search over all saved messages."""
    from mixchat.commands.history import search_messages

    search_messages(query, limit=limit, as_json=as_json)


@app.command()
@handle_errors
def export(
    conversation_id: Annotated[str, typer.Argument(metavar="ID", autocompletion=_complete_id)],
    fmt: Annotated[str, typer.Option("--format", "-f", help="md | json.")] = "md",
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="File to write ('-o -': stdout).")
    ] = None,
) -> None:
    """Export a conversation as Markdown or JSON (OpenAI-style messages + metadata)."""
    from mixchat.commands.history import export_conversation

    export_conversation(conversation_id, fmt=fmt, output=None if output == "-" else output)


@app.command("import")
@handle_errors
def import_(file: Annotated[Path, typer.Argument(help="A JSON export ('-' for stdin).")]) -> None:
    """Import a conversation exported with ``export --format json``."""
    from mixchat.commands.history import import_conversation

    import_conversation(file)


@app.command()
@handle_errors
def rename(
    conversation_id: Annotated[str, typer.Argument(metavar="ID", autocompletion=_complete_id)],
    title: Annotated[str, typer.Argument(help="New title.")],
) -> None:
    """Rename a conversation."""
    from mixchat.commands.history import rename_conversation

    rename_conversation(conversation_id, title)


@app.command()
@handle_errors
def rm(
    conversation_id: Annotated[str, typer.Argument(metavar="ID", autocompletion=_complete_id)],
) -> None:
    """Delete a conversation and every copy of its text."""
    from mixchat.commands.history import remove_conversation

    remove_conversation(conversation_id)


@app.command()
@handle_errors
def presets(as_json: JsonOpt = False) -> None:
    """List the presets: name, where each is defined, its settings."""
    from mixchat.commands.presets import list_presets

    raise typer.Exit(list_presets(as_json=as_json))


@app.command()
@handle_errors
def config(as_json: JsonOpt = False) -> None:
    """Show the settings in effect, where they come from, and where data lives."""
    from mixchat.commands.history import show_config

    show_config(as_json=as_json)


@app.command()
@handle_errors
@settings_flags(("model", "quantization", "cpu_experts"))
def doctor(
    flags: dict[str, Any],
    as_json: JsonOpt = False,
    assume_gpu: Annotated[
        list[str] | None,
        typer.Option("--assume-gpu", help="Plan for a GPU of this size (24GiB); repeatable."),
    ] = None,
    assume_ram: Annotated[
        str | None, typer.Option("--assume-ram", help="Plan for this much system RAM (64GiB).")
    ] = None,
    measure: Annotated[
        bool, typer.Option("--measure", help="Time this machine's bandwidths for the estimate.")
    ] = False,
    assume_gpu_bandwidth: Annotated[
        str | None, typer.Option("--assume-gpu-bandwidth", help="GPU memory bandwidth: 936GB/s.")
    ] = None,
    assume_cpu_bandwidth: Annotated[
        str | None,
        typer.Option("--assume-cpu-bandwidth", help="Weights the CPU experts read per s: 16GB/s."),
    ] = None,
) -> None:
    """Check Python, torch, CUDA, GPUs, RAM, the kernels, and how the model would be placed."""
    from mixchat.commands.doctor import run_doctor

    bandwidths = (assume_gpu_bandwidth, assume_cpu_bandwidth)
    run_doctor(flags, as_json, assume_gpu, assume_ram, measure, bandwidths)


class _TerminalSafe:
    """A text stream that shows escapes, C1 controls and bidi overrides as visible escapes
    (click's usage errors quote what was typed: an argument, an unknown option)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        from mixchat.textsafe import for_terminal

        return int(self._stream.write(for_terminal(text)))

    def flush(self) -> None:
        self._stream.flush()


def main() -> None:
    """Console-script entry point."""
    import sys

    try:
        code = app(prog_name="mixchat", standalone_mode=False)
    except typer.TyperException as exc:  # click's usage errors (typer vendors click)
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show(file=_TerminalSafe(sys.stderr))
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
