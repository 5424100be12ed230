"""What ``mixchat ask`` says about files it puts into the message (``-f``), and what it
prints instead of the whole reply (``--extract``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from mixchat.attachments import AttachedFile, describe
from mixchat.codeblocks import NoSuchBlock, nth_block, ordinal
from mixchat.commands.errors import EXIT_FAILURE, fail
from mixchat.conversation import Message
from mixchat.engine.base import count_context_tokens
from mixchat.textsafe import for_terminal


def refuse(lines: Sequence[str]) -> int:
    """Say each line as an error (one per file that cannot be attached); the exit code."""
    code = 0
    for line in lines:
        code = fail(line)
    return code


def report_files(
    engine: Any,
    files: Sequence[AttachedFile],
    messages: Sequence[Message],
    system_prompt: str | None,
    max_new_tokens: int,
) -> None:
    """Say on stderr what is attached and how many tokens the message and the prompt take.

    With a local model the whole prompt is built from the tokenizer alone (no weights), so
    a message too big for the context raises ``PromptError`` here, before anything is
    saved. Other engines say what they can count."""
    line = f"attached {describe(files)}"
    load_tokenizer = getattr(engine, "load_tokenizer", None)
    if callable(load_tokenizer):
        tokenizer = load_tokenizer()
        print_line(line)  # before the check, which may refuse the message
        prompt = tokenizer.build(list(messages), system_prompt, max_new_tokens)
        alone = len(tokenizer.build(list(messages[-1:]), None, 0).ids)
        context = tokenizer.context_size
        print_line(
            f"the message is {alone:,} tokens; the prompt {len(prompt.ids):,} of the "
            f"{context:,}-token context ({max_new_tokens:,} kept for the reply)"
        )
        return
    counted = count_context_tokens(engine, list(messages[-1:]), None)
    print_line(line + (f"; the message is about {counted:,} tokens" if counted else ""))


def print_line(message: str) -> None:
    """A diagnostic line on stderr."""
    print(f"mixchat: {for_terminal(message)}", file=sys.stderr, flush=True)


def print_code_block(reply: str, n: int, conversation_id: str | None) -> int:
    """``--extract N``: only the ``n``-th code block of ``reply`` on stdout (a newline
    ensured); exit 1 with one line when there is no such block. The exit code."""
    where = (
        f"; the whole reply is saved (mixchat show {conversation_id[:8]})"
        if conversation_id
        else ""
    )
    try:
        block = nth_block(reply, n)
    except NoSuchBlock as exc:
        flag = "--extract" if n == -1 else f"--extract {n}"  # -1: the last, as a bare --extract
        return fail(f"{flag}: the reply {exc}{where}", EXIT_FAILURE)
    if not block.closed:
        print_line(f"the {ordinal(n)} code block has no closing fence: the reply may be cut off")
    code = block.code if block.code.endswith("\n") or not block.code else block.code + "\n"
    sys.stdout.write(for_terminal(code) if sys.stdout.isatty() else code)
    sys.stdout.flush()
    return 0
