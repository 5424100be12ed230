"""``mixchat ask``: one question, the answer streamed to stdout, the exchange saved."""

from __future__ import annotations

import json
import signal
import sys
import threading
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from mixchat.commands.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, fail
from mixchat.config import Settings, load_settings
from mixchat.conversation import Conversation, Message, Role
from mixchat.engine.base import (
    ContextTrimmed,
    EngineError,
    Event,
    Failed,
    GenerationParams,
    LoadProgress,
    Notice,
    TextDelta,
)
from mixchat.textsafe import neutralize, scrub_surrogates


@dataclass
class AskRequest:
    """What the command line asked for."""

    prompt: str | None
    flags: dict[str, Any]
    continue_last: bool = False
    conversation: str | None = None
    save: bool = True
    as_json: bool = False
    show_prompt: bool = False


def read_stdin(stream: TextIO) -> str | None:
    """Piped stdin as text (invalid UTF-8 replaced, with a warning); None on a terminal."""
    if stream is None or stream.isatty():
        return None
    data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read().encode()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        warn("stdin is not valid UTF-8; undecodable bytes were replaced with U+FFFD")
        return data.decode("utf-8", errors="replace")


def compose_prompt(argument: str | None, piped: str | None) -> str:
    """The user's message: the argument, then piped text after a blank line."""
    parts = [p for p in (argument, piped) if p is not None and p.strip()]
    return scrub_surrogates("\n\n".join(parts))


def params_from(settings: Settings) -> GenerationParams:
    """Generation parameters from settings."""
    return GenerationParams(
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        repetition_penalty=settings.repetition_penalty,
        max_new_tokens=settings.max_new_tokens,
        seed=settings.seed,
    )


def warn(message: str) -> None:
    """A diagnostic line on stderr (never on stdout, which carries only the answer)."""
    print(f"mixchat: {neutralize(message)}", file=sys.stderr, flush=True)


class _Output:
    """Writes answer text to stdout: raw into a pipe, neutralised on a terminal."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self._stream = stream
        self._enabled = enabled
        self._tty = stream.isatty()
        self.ended_with_newline = True

    def write(self, text: str) -> None:
        if not self._enabled or not text:
            return
        self._stream.write(neutralize(text) if self._tty else text)
        self._stream.flush()
        self.ended_with_newline = text.endswith("\n")

    def end_line(self) -> None:
        if self._enabled and self._tty and not self.ended_with_newline:
            self._stream.write("\n")
            self._stream.flush()


class _Progress:
    """Load progress on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._shown = False

    def show(self, event: LoadProgress) -> None:
        if not self._tty:
            return
        pct = f" {100 * event.done // event.total}%" if event.total else ""
        sys.stderr.write(f"\r\x1b[2Kloading {event.stage}{pct}")
        sys.stderr.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()
            self._shown = False


def run_ask(request: AskRequest) -> int:
    """Run ``mixchat ask``; returns the exit code."""
    from mixchat.prompt import prompt_messages
    from mixchat.session import ReplyRecorder, stream_reply

    settings = load_settings(request.flags)
    prompt = compose_prompt(request.prompt, read_stdin(sys.stdin))
    if not prompt.strip():
        return fail("nothing to ask: give a prompt as an argument or pipe text into stdin")
    if request.show_prompt and settings.endpoint:
        return fail("--show-prompt needs a local model; the server at --endpoint builds its own")
    if sys.stdout.isatty():
        sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]

    store, conv = _open_conversation(request, settings)
    system_prompt = request.flags.get("system_prompt") or (
        conv.system_prompt if conv is not None else settings.system_prompt
    )
    history = prompt_messages(conv.messages if conv else [])
    user_message = Message(role=Role.USER, content=prompt)
    params = params_from(settings)

    from mixchat.commands.interactive import make_engine

    engine = make_engine(settings)
    try:
        if request.show_prompt:
            return _show_prompt(engine, [*history, user_message], system_prompt, params, request)
        from mixchat.engine.transformers import TransformersEngine

        if isinstance(engine, TransformersEngine):
            # A question too long for the context is refused before minutes of loading
            # weights, and before it is saved: the tokenizer alone can tell (PromptError).
            engine.load_tokenizer().build(
                [*history, user_message], system_prompt, params.max_new_tokens
            )
        # The question is committed before the model loads, so a crash or a kill at any
        # later moment keeps it (as the app does with a message sent while loading).
        conversation_id: str | None = None
        created = False
        if store is not None:
            if conv is None:
                conv = store.create_conversation(
                    model=settings.model,
                    system_prompt=system_prompt,
                    settings=_saved(settings),
                    first_message=user_message,
                )
                created = True
            else:
                store.append_message(conv.id, user_message)
            conversation_id = conv.id
        progress = _Progress()
        try:
            for load_event in engine.load():
                if isinstance(load_event, LoadProgress):
                    progress.show(load_event)
                else:
                    progress.clear()
                    warn(load_event.message)
        except EngineError:
            # The model cannot load (wrong path, say): take back the unanswerable
            # question rather than leave a stray conversation for every typo.
            progress.clear()
            if store is not None and conversation_id is not None:
                if created:
                    store.delete(conversation_id)
                elif user_message.id is not None:
                    store.truncate_from(user_message.id)
            raise
        progress.clear()
        info = engine.info()

        recorder = ReplyRecorder(store, conversation_id)
        out = _Output(sys.stdout, enabled=not request.as_json)
        cancel = threading.Event()

        def on_event(event: Event) -> None:
            if isinstance(event, TextDelta):
                out.write(event.text)
            elif isinstance(event, Notice):
                warn(event.message)
            elif isinstance(event, ContextTrimmed):
                warn(
                    f"left out the {event.dropped_messages} oldest messages to fit the "
                    f"{event.context_size:,}-token context"
                )

        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            outcome = stream_reply(
                engine, recorder, [*history, user_message], system_prompt, params, cancel, on_event
            )
        except KeyboardInterrupt:
            out.end_line()
            warn("stopped; the partial reply is saved" if store else "stopped")
            return EXIT_INTERRUPTED
        finally:
            signal.signal(signal.SIGTERM, previous)
        out.end_line()
        if outcome.error is not None:
            # A prompt that cannot be built (too long for the context) is bad input.
            bad_input = any(isinstance(e, Failed) and e.kind == "prompt" for e in outcome.events)
            return fail(outcome.error, EXIT_USAGE if bad_input else EXIT_FAILURE)
        if request.as_json:
            payload = {
                "conversation_id": conversation_id,
                "reply": outcome.text,
                "finish_reason": outcome.finish_reason,
                "status": outcome.status.value,
                "usage": asdict(outcome.usage) if outcome.usage else None,
                "dropped_messages": sum(
                    e.dropped_messages for e in outcome.events if isinstance(e, ContextTrimmed)
                ),
                "model": asdict(info),
            }
            # The model id comes from argv/env and may hold undecodable bytes.
            print(scrub_surrogates(json.dumps(payload, ensure_ascii=False)))
        return 0
    finally:
        engine.close()
        if store is not None:
            store.close()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _saved(settings: Settings) -> dict[str, Any]:
    keys = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "seed")
    return {k: getattr(settings, k) for k in keys}


def _open_conversation(request: AskRequest, settings: Settings) -> tuple[Any, Conversation | None]:
    """The store (None with --no-save) and the conversation to continue, if any."""
    from mixchat.store import ConversationStore, NotFoundError

    wants_history = request.continue_last or request.conversation is not None
    writes = request.save and not request.show_prompt  # --show-prompt saves nothing either
    if not writes and not wants_history:
        return None, None
    store = ConversationStore.open(create=writes)  # --no-save creates nothing
    try:
        conv: Conversation | None = None
        if request.conversation is not None:
            conv = store.get_conversation(request.conversation)
        elif request.continue_last:
            last = store.last_conversation_id()
            if last is None:
                raise NotFoundError(
                    "no saved conversation to continue: none was used on this machine yet"
                    " (continue an imported one with --conversation ID)"
                )
            conv = store.get_conversation(last)
    except BaseException:
        store.close()
        raise
    if not writes:
        store.close()
        return None, conv
    return store, conv


def _show_prompt(
    engine: Any,
    messages: list[Message],
    system_prompt: str | None,
    params: GenerationParams,
    request: AskRequest,
) -> int:
    tokenizer = engine.load_tokenizer()
    built = tokenizer.build(messages, system_prompt, params.max_new_tokens)
    if request.as_json:
        payload = {
            "format": tokenizer.format,
            "text": built.text,
            "ids": built.ids,
            "tokens": len(built.ids),
            "dropped_messages": built.dropped_messages,
            "context_size": tokenizer.context_size,
        }
        print(json.dumps(payload, ensure_ascii=False))
    else:
        text = built.text if not sys.stdout.isatty() else neutralize(built.text)
        print(text)
        print(json.dumps(built.ids))
    return 0
