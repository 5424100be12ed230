"""The ``mixchat`` command line. Thin: parsing here, work in ``mixchat.commands``.

Nothing heavy is imported at module level: ``mixchat --help`` and ``mixchat list``
never import torch, transformers, textual or rich.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mixchat.commands.errors import handle_errors

app = typer.Typer(
    name="mixchat",
    help="Chat with Mixtral-8x7B-Instruct on your own hardware.",
    add_completion=False,
    no_args_is_help=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Model and generation flags, shared by `ask` and the interactive app.
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Hub id or local directory.")]
SystemOpt = Annotated[str | None, typer.Option("--system", "-s", help="System prompt.")]
TempOpt = Annotated[float | None, typer.Option("--temperature", "-t", help="0 = greedy.")]
TopPOpt = Annotated[float | None, typer.Option("--top-p", help="Nucleus sampling mass.")]
TopKOpt = Annotated[int | None, typer.Option("--top-k", help="0 = off.")]
RepOpt = Annotated[float | None, typer.Option("--repetition-penalty", help="1.0 = off.")]
MaxTokOpt = Annotated[int | None, typer.Option("--max-tokens", help="Longest reply in tokens.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed for reproducible sampling.")]
DtypeOpt = Annotated[
    str | None, typer.Option("--dtype", help="auto | bfloat16 | float16 | float32.")
]
Q4Opt = Annotated[bool, typer.Option("--4bit", help="NF4 4-bit weights (bitsandbytes).")]
Q8Opt = Annotated[bool, typer.Option("--8bit", help="8-bit weights (bitsandbytes).")]
FlashOpt = Annotated[bool, typer.Option("--flash-attn", help="Use flash-attention 2 if possible.")]
DeviceOpt = Annotated[str | None, typer.Option("--device-map", help="auto | cpu | cuda:N.")]
MaxMemOpt = Annotated[
    str | None,
    typer.Option("--max-memory", help="Per-device limits for auto placement: 0=70GiB,1=70GiB."),
]
RemoteOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Run code shipped with the model.")
]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        help="OpenAI-compatible server URL (vLLM, TGI, llama.cpp); key from $MIXCHAT_API_KEY.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def model_flags(
    *,
    model: str | None = None,
    system: str | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    repetition_penalty: float | None = None,
    max_tokens: int | None = None,
    seed: int | None = None,
    dtype: str | None = None,
    four_bit: bool = False,
    eight_bit: bool = False,
    flash_attn: bool = False,
    device_map: str | None = None,
    trust_remote_code: bool = False,
    endpoint: str | None = None,
    max_memory: str | None = None,
) -> dict[str, Any]:
    """Flags as config keys; unset flags are ``None`` and do not override the config."""
    if four_bit and eight_bit:
        raise typer.BadParameter("choose one of --4bit and --8bit")
    quantization = "4bit" if four_bit else "8bit" if eight_bit else None
    return {
        "model": model,
        "system_prompt": system,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "repetition_penalty": repetition_penalty,
        "max_new_tokens": max_tokens,
        "seed": seed,
        "dtype": dtype,
        "quantization": quantization,
        "attention": "flash_attention_2" if flash_attn else None,
        "device_map": device_map,
        "trust_remote_code": True if trust_remote_code else None,
        "endpoint": endpoint,
        "max_memory": max_memory,
    }


def _model_options(parameters: dict[str, Any]) -> dict[str, Any]:
    """The model and generation options among a command's parameters (``locals()``)."""
    names = model_flags.__kwdefaults__ or {}
    return {name: value for name, value in parameters.items() if name in names}


@app.callback(invoke_without_command=True)
@handle_errors
def main_callback(
    ctx: typer.Context,
    model: ModelOpt = None,
    system: SystemOpt = None,
    temperature: TempOpt = None,
    top_p: TopPOpt = None,
    top_k: TopKOpt = None,
    repetition_penalty: RepOpt = None,
    max_tokens: MaxTokOpt = None,
    seed: SeedOpt = None,
    dtype: DtypeOpt = None,
    four_bit: Q4Opt = False,
    eight_bit: Q8Opt = False,
    flash_attn: FlashOpt = False,
    device_map: DeviceOpt = None,
    max_memory: MaxMemOpt = None,
    trust_remote_code: RemoteOpt = False,
    endpoint: EndpointOpt = None,
    resume: Annotated[
        str | None, typer.Option("--resume", "-r", help="Open conversation ID (prefix ok).")
    ] = None,
    continue_last: Annotated[
        bool, typer.Option("--continue", "-c", help="Open the last conversation.")
    ] = False,
) -> None:
    """Chat with Mixtral-8x7B-Instruct on your own hardware.

    With no command, opens the interactive app (F1 lists its keys).
    """
    if ctx.invoked_subcommand is not None:
        return
    from mixchat.commands.interactive import run_interactive

    flags = model_flags(**_model_options(locals()))
    raise typer.Exit(run_interactive(flags, resume, continue_last))


@app.command()
@handle_errors
def ask(
    prompt: Annotated[str | None, typer.Argument(help="The question; stdin is appended.")] = None,
    model: ModelOpt = None,
    system: SystemOpt = None,
    temperature: TempOpt = None,
    top_p: TopPOpt = None,
    top_k: TopKOpt = None,
    repetition_penalty: RepOpt = None,
    max_tokens: MaxTokOpt = None,
    seed: SeedOpt = None,
    dtype: DtypeOpt = None,
    four_bit: Q4Opt = False,
    eight_bit: Q8Opt = False,
    flash_attn: FlashOpt = False,
    device_map: DeviceOpt = None,
    max_memory: MaxMemOpt = None,
    trust_remote_code: RemoteOpt = False,
    endpoint: EndpointOpt = None,
    continue_last: Annotated[
        bool, typer.Option("--continue", "-c", help="Continue the last conversation.")
    ] = False,
    conversation: Annotated[
        str | None, typer.Option("--conversation", help="Continue conversation ID (prefix ok).")
    ] = None,
    no_save: Annotated[bool, typer.Option("--no-save", help="Keep nothing on disk.")] = False,
    as_json: JsonOpt = False,
    show_prompt: Annotated[
        bool, typer.Option("--show-prompt", help="Print the exact prompt; load no weights.")
    ] = False,
) -> None:
    """Ask one question and stream the answer to stdout."""
    from mixchat.commands.ask import AskRequest, run_ask

    flags = model_flags(**_model_options(locals()))
    request = AskRequest(
        prompt=prompt,
        flags=flags,
        continue_last=continue_last,
        conversation=conversation,
        save=not no_save,
        as_json=as_json,
        show_prompt=show_prompt,
    )
    raise typer.Exit(run_ask(request))


@app.command("list")
@handle_errors
def list_(
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most N.", min=1)] = 50,
) -> None:
    """List saved conversations, newest first."""
    from mixchat.commands.history import list_conversations

    list_conversations(limit=limit, as_json=as_json)


@app.command()
@handle_errors
def show(
    conversation_id: Annotated[str, typer.Argument(metavar="ID", help="Id or unique prefix.")],
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
    limit: Annotated[int, typer.Option("--limit", "-n", min=1)] = 50,
) -> None:
    """Full-text search over all saved messages."""
    from mixchat.commands.history import search_messages

    search_messages(query, limit=limit, as_json=as_json)


@app.command()
@handle_errors
def export(
    conversation_id: Annotated[str, typer.Argument(metavar="ID")],
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
    conversation_id: Annotated[str, typer.Argument(metavar="ID")],
    title: Annotated[str, typer.Argument(help="New title.")],
) -> None:
    """Rename a conversation."""
    from mixchat.commands.history import rename_conversation

    rename_conversation(conversation_id, title)


@app.command()
@handle_errors
def rm(conversation_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Delete a conversation and every copy of its text."""
    from mixchat.commands.history import remove_conversation

    remove_conversation(conversation_id)


@app.command()
@handle_errors
def config(as_json: JsonOpt = False) -> None:
    """Show the settings in effect, where they come from, and where data lives."""
    from mixchat.commands.history import show_config

    show_config(as_json=as_json)


@app.command()
@handle_errors
def doctor(
    model: ModelOpt = None,
    four_bit: Q4Opt = False,
    eight_bit: Q8Opt = False,
    as_json: JsonOpt = False,
) -> None:
    """Check Python, torch, CUDA, GPUs, bitsandbytes, flash-attn, and whether the model fits."""
    from mixchat.commands.doctor import run_doctor

    flags = model_flags(model=model, four_bit=four_bit, eight_bit=eight_bit)
    run_doctor(flags, as_json)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="mixchat")


if __name__ == "__main__":  # pragma: no cover
    main()
