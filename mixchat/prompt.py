"""Conversation → prompt token ids, context fitting and streaming decode. Pure, no I/O.

Mixtral-8x7B-Instruct (Mistral "v1" instruct format) prompts are built token for token the
way mistral-common's reference tokenizer builds them, but with SentencePiece alone, so
importing this module pulls in neither torch, transformers nor mistral-common.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from mixchat.conversation import Message, Role, Status
from mixchat.textsafe import scrub_surrogates

# mistral-common joins consecutive same-role messages, and the system prompt to the first
# user message, with this string.
_JOIN = "\n\n"
_REPLACEMENT = "\ufffd"


class PromptError(ValueError):
    """The conversation cannot be turned into a prompt."""


class ContextOverflowError(PromptError):
    """Even the newest user message alone does not fit the model's context."""

    def __init__(self, prompt_tokens: int, max_new_tokens: int, context_size: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.context_size = context_size
        super().__init__(
            f"the message is {prompt_tokens:,} tokens (system prompt included); with "
            f"{max_new_tokens:,} new tokens it does not fit the model's "
            f"{context_size:,}-token context"
        )


class TextTokenizer(Protocol):
    """What prompt building needs from a tokenizer (SentencePiece semantics)."""

    @property
    def bos_id(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    def encode(self, text: str) -> list[int]:
        """Plain text to ids: no BOS/EOS, dummy-prefix space added, special text kept literal."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...


class _Decoder(Protocol):
    def decode(self, ids: Sequence[int]) -> str: ...


class SentencePieceTokenizer:
    """`TextTokenizer` backed by a SentencePiece model file (e.g. Mixtral's tokenizer.model)."""

    def __init__(self, model_path: str | os.PathLike[str]) -> None:
        import sentencepiece  # imported here so that importing this module stays light

        self._sp = sentencepiece.SentencePieceProcessor(model_file=os.fspath(model_path))
        self.bos_id: int = int(self._sp.bos_id())
        self.eos_id: int = int(self._sp.eos_id())
        self.vocab_size: int = int(self._sp.get_piece_size())
        # History segments are re-encoded on every turn and during context fitting: cache them.
        self._encode_cached = functools.lru_cache(maxsize=4096)(self._encode_uncached)

    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        return tuple(self._sp.encode(text))

    def encode(self, text: str) -> list[int]:
        """Encode plain text; "<s>"/"</s>" in the text stay literal, never control tokens."""
        return list(self._encode_cached(text))

    def decode(self, ids: Sequence[int]) -> str:
        """Decode ids; control tokens (BOS/EOS) decode to nothing."""
        return str(self._sp.decode([int(i) for i in ids]))


@dataclass(frozen=True)
class PromptTokens:
    """A built prompt: token ids, a readable rendering, and how many messages were left out."""

    ids: list[int]
    text: str
    # The first `dropped_messages` messages of the list given to fit_to_context were left out.
    dropped_messages: int = 0


def prompt_messages(messages: Sequence[Message]) -> list[Message]:
    """The messages that reach a prompt: user and assistant ones, minus ERROR messages and
    empty assistant replies (interrupted replies with content stay)."""
    return [
        m
        for m in messages
        if m.role in (Role.USER, Role.ASSISTANT)
        and m.status is not Status.ERROR
        and not (m.role is Role.ASSISTANT and not m.content)
    ]


def context_messages(messages: Sequence[Message]) -> list[Message]:
    """The messages whose prompt is the context a conversation fills, for counting it: the
    prompt's messages, and when they end with a reply, an empty next question (the prompt
    of the next turn before its text). Empty when no message of the user's is there."""
    usable = prompt_messages(messages)
    if not any(m.role is Role.USER for m in usable):
        return []
    if usable[-1].role is not Role.USER:
        usable.append(Message(Role.USER, ""))
    return usable


def _turns(messages: Sequence[Message], pad: bool = True) -> list[tuple[Role, str]]:
    """Filter, then merge same-role runs the way mistral-common's normalizer does.

    The last turn is the user's (a reply is wanted) or the assistant's (its reply is to be
    continued: see ``continues_reply``).
    """
    msgs = prompt_messages(messages)
    if not any(m.role is Role.USER for m in msgs):
        raise PromptError("the conversation has no user message to answer")
    groups: list[tuple[Role, list[str]]] = []
    for m in msgs:
        if not groups or groups[-1][0] is not m.role:
            groups.append((m.role, []))
        if m.content:  # the normalizer skips empty contents when joining
            groups[-1][1].append(scrub_surrogates(m.content))
    turns = [(role, _JOIN.join(parts)) for role, parts in groups]
    if pad and turns[0][0] is Role.ASSISTANT:  # the normalizer starts with an empty user turn
        turns.insert(0, (Role.USER, ""))
    return turns


def continues_reply(messages: Sequence[Message]) -> bool:
    """Whether a prompt for ``messages`` continues the last reply rather than starting one:
    the last message that reaches the prompt (see ``prompt_messages``) is the assistant's.
    Its text ends the prompt, with no end-of-turn marker after it."""
    msgs = prompt_messages(messages)
    return bool(msgs) and msgs[-1].role is Role.ASSISTANT


def build_mistral_v1_prompt(
    tokenizer: TextTokenizer, messages: Sequence[Message], system_prompt: str | None
) -> PromptTokens:
    """Mistral v1 instruct prompt, identical to mistral-common's ``MistralTokenizer.v1()``:
    ``<s> [INST] user [/INST] answer</s> [INST] user [/INST]``.

    The system prompt (ignored when empty) is prepended to the first user message with a
    blank line. When the last message is the assistant's, the prompt ends with its text and
    no ``</s>`` (``... [/INST] partial``), as the reference encodes a final
    ``AssistantMessage(prefix=True)``: the model continues that reply. Message text is
    always plain text: ``</s>`` written in a message is never the control token.
    Raises PromptError when there is no user message.
    """
    system = scrub_surrogates(system_prompt) if system_prompt else ""
    ids = [tokenizer.bos_id]
    parts = ["<s>"]
    first_user = True
    turns = _turns(messages)
    for index, (role, content) in enumerate(turns):
        if role is Role.USER:
            if first_user and system:
                content = system + _JOIN + content
            first_user = False
            segment = f"[INST] {content} [/INST]"
            ids += tokenizer.encode(segment)
            parts.append(" " + segment)
        elif index == len(turns) - 1:  # the reply being continued: no end of turn
            ids += tokenizer.encode(content)
            parts.append(" " + content)
        else:
            ids += tokenizer.encode(content)
            ids.append(tokenizer.eos_id)
            parts.append(" " + content + "</s>")
    return PromptTokens(ids=ids, text="".join(parts))


def build_chat_template_prompt(
    hf_tokenizer: Any, messages: Sequence[Message], system_prompt: str | None
) -> PromptTokens:
    """Prompt from a transformers tokenizer's chat template (for non-Mistral-v1 models).

    Same filtering and merging as the v1 builder. A system prompt goes in as a "system"
    message; if the template rejects that, it is prepended to the first user message.
    When the last message is the assistant's, the template renders it open-ended
    (``continue_final_message``) and the model continues it.

    Only the template's own markers become special tokens: special-token text inside a
    message, the system prompt or an earlier reply (``<|im_end|>``, ``<|eot_id|>``, ``</s>``)
    is encoded as plain text, so no message can forge a turn. A conversation without such
    text gets exactly the ids of its rendered text.
    """
    if not getattr(hf_tokenizer, "chat_template", None):
        raise PromptError("the model's tokenizer has no chat template")
    turns = _turns(messages, pad=False)
    continuing = turns[-1][0] is Role.ASSISTANT
    chat = [{"role": role.value, "content": text} for role, text in turns]
    system = scrub_surrogates(system_prompt) if system_prompt else ""
    attempts = [chat]
    if system:
        folded = [dict(m) for m in chat]
        first = next(m for m in folded if m["role"] == Role.USER.value)
        first["content"] = system + _JOIN + first["content"]
        attempts = [[{"role": "system", "content": system}, *chat], folded]
    options = {"add_generation_prompt": not continuing, "continue_final_message": continuing}
    error: Exception | None = None
    for attempt in attempts:
        try:
            text = hf_tokenizer.apply_chat_template(attempt, tokenize=False, **options)
            # transformers marks control-token text in the messages before rendering and
            # encodes it as plain text; the template's own markers stay special tokens.
            ids = hf_tokenizer.apply_chat_template(
                attempt, tokenize=True, return_dict=False, sanitize_control_tokens=True, **options
            )
            break
        except Exception as exc:  # jinja2 raises TemplateError for unsupported roles
            error = exc
    else:
        raise PromptError(f"the model's chat template failed: {_one_line(error)}") from error
    return PromptTokens(ids=[int(i) for i in ids], text=str(text))


def _one_line(error: Exception | None) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def fit_to_context(
    build: Callable[[Sequence[Message]], PromptTokens],
    messages: Sequence[Message],
    context_size: int,
    max_new_tokens: int,
) -> PromptTokens:
    """Build a prompt that leaves room for ``max_new_tokens`` in ``context_size``.

    Drops the oldest whole turns (a user message and the replies after it) as needed; the
    system prompt and newest user message always stay. Binary search: O(log turns) builds.
    Raises ContextOverflowError when even the newest user message alone does not fit.
    """

    def fits(p: PromptTokens) -> bool:
        return len(p.ids) + max_new_tokens <= context_size

    full = build(messages)  # also validates the conversation
    if fits(full):
        return full
    # Cut points: indices of user messages that reach the prompt (each starts a turn).
    kept = {id(m) for m in prompt_messages(messages)}
    cuts = [i for i, m in enumerate(messages) if i > 0 and m.role is Role.USER and id(m) in kept]
    if not cuts:
        raise ContextOverflowError(len(full.ids), max_new_tokens, context_size)
    best = build(messages[cuts[-1] :])
    if not fits(best):
        raise ContextOverflowError(len(best.ids), max_new_tokens, context_size)
    # Invariant: cutting at cuts[hi] fits; cutting at cuts[lo] (lo == -1: no cut) does not.
    lo, hi = -1, len(cuts) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        candidate = build(messages[cuts[mid] :])
        if fits(candidate):
            hi, best = mid, candidate
        else:
            lo = mid
    return replace(best, dropped_messages=cuts[hi])


class IncrementalDecoder:
    """Streams text from generated ids: the concatenation of what ``push`` and ``flush`` return
    equals ``decoder.decode(all_ids)``; a partial UTF-8 character is held back until complete.

    Uses text-generation-inference's prefix/read offsets: each step decodes only the window
    from the previous chunk's start, so the leading-space handling of SentencePiece (which
    drops the dummy-prefix space of the first piece) cancels out and each step is O(window).
    """

    def __init__(self, decoder: _Decoder, context: Sequence[int] = ()) -> None:
        """``context``: ids just before the first pushed one (the end of a reply being
        continued), decoded but not emitted, so that the continuation's first piece keeps
        its leading space (SentencePiece drops it at the start of a decode)."""
        self._decoder = decoder
        self._ids: list[int] = [int(i) for i in context]
        self._prefix = 0  # start of the window: the last emitted chunk's first id
        self._read = len(self._ids)  # ids before this have been emitted
        self._prefix_text = decoder.decode(self._ids) if self._ids else ""  # ids[prefix:read]

    def push(self, ids: int | Iterable[int]) -> str:
        """Add generated ids; return the text they complete (maybe "")."""
        chunks = []
        for i in [ids] if isinstance(ids, int) else ids:  # one at a time: emit as early as possible
            self._ids.append(i)
            chunks.append(self._step(final=False))
        return "".join(chunks)

    def flush(self) -> str:
        """Return whatever is still held back (an incomplete character decodes as U+FFFD)."""
        return self._step(final=True)

    def _step(self, final: bool) -> str:
        if self._read == len(self._ids):
            return ""
        new_text = self._decoder.decode(self._ids[self._prefix :])
        if len(new_text) <= len(self._prefix_text) and not final:
            return ""  # e.g. the ids so far are control tokens or an unfinished byte sequence
        if new_text.endswith(_REPLACEMENT) and not final:
            return ""  # maybe an unfinished UTF-8 sequence: wait for the next id
        chunk = new_text[len(self._prefix_text) :]
        self._prefix, self._read = self._read, len(self._ids)
        self._prefix_text = self._decoder.decode(self._ids[self._prefix : self._read])
        return chunk
