"""``mixchat ask``: one question, the answer streamed to stdout, the exchange saved."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from mixchat.commands.errors import EXIT_FAILURE, EXIT_USAGE, fail
from mixchat.commands.stops import StopSignals, described, exit_code, say
from mixchat.config import conversation_settings, load_sources
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
from mixchat.textsafe import for_terminal, safe_json, scrub_surrogates


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
    files: list[str] = field(default_factory=list)  # -f: text files put into the message
    preset: str | None = None
    extract: int | None = None  # --extract N: print only the N-th code block (-1: the last)


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


def warn(message: str) -> None:
    """A diagnostic line on stderr (never on stdout, which carries only the answer)."""
    print(f"mixchat: {for_terminal(message)}", file=sys.stderr, flush=True)


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
        self._stream.write(for_terminal(text) if self._tty else text)
        self._stream.flush()
        self.ended_with_newline = text.endswith("\n")

    def end_line(self) -> None:
        if self._enabled and self._tty and not self.ended_with_newline:
            with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
                self._stream.write("\n")
                self._stream.flush()
            self.ended_with_newline = True


def progress_line(event: LoadProgress) -> str:
    """``loading weights 42% (shard 2/19, tensor 410/995, 39.3/93.4 GB)``; the detail may
    name the model, so it is neutralized."""
    if event.stage == "resolve":
        return f"finding {for_terminal(event.detail)}" if event.detail else "finding the model"
    pct = f" {100 * event.done // event.total}%" if event.total else ""
    detail = f" ({for_terminal(event.detail)})" if event.detail else ""
    return f"loading {event.stage}{pct}{detail}"


class _LoadBar:
    """Load progress on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._shown = False

    def show(self, event: LoadProgress) -> None:
        if not self._tty:
            return
        width = shutil.get_terminal_size((80, 24)).columns - 1
        sys.stderr.write(f"\r\x1b[2K{progress_line(event)[:width]}")
        sys.stderr.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
                sys.stderr.write("\r\x1b[2K")
                sys.stderr.flush()
            self._shown = False


@dataclass
class _Progress:
    """How far an ask got, for the line said when a signal stops it."""

    question_saved: bool = False
    loading: bool = False
    recorder: Any = None  # the ReplyRecorder, once the reply streams


def run_ask(request: AskRequest) -> int:
    """Run ``mixchat ask``; returns the exit code.

    Ctrl-C, SIGTERM and SIGHUP stop it at any point with one line saying what was kept,
    and the exit code 128 + the signal's number (130, 143, 129).
    """
    progress = _Progress()
    with StopSignals():
        try:
            return _run_ask(request, progress)
        except KeyboardInterrupt as stop:  # Ctrl-C, or Stopped (SIGTERM, SIGHUP)
            if progress.recorder is not None:
                progress.recorder.settle()  # the whole reply so far, saved as interrupted
            say(_stopped_line(stop, progress))
            return exit_code(stop)


def _stopped_line(stop: KeyboardInterrupt, progress: _Progress) -> str:
    what = described(stop)
    if progress.recorder is not None:
        saved = progress.recorder.saved
        not_saved = progress.recorder.outcome.not_saved
        if not_saved:
            return f"{what}; {not_saved}"
        return f"{what}; the partial reply is saved" if saved else what
    if progress.loading:
        kept = "; the question is saved, without an answer" if progress.question_saved else ""
        return f"{what} while the model was loading{kept}"
    return f"{what}; the question is saved" if progress.question_saved else f"{what}; nothing saved"


def _run_ask(request: AskRequest, progress: _Progress) -> int:
    from mixchat import attachments, presets
    from mixchat.commands import ask_input
    from mixchat.prompt import prompt_messages
    from mixchat.session import ReplyNotSaved, ReplyRecorder, stream_reply

    sources = load_sources(request.flags)
    if request.preset is not None:
        sources = sources.with_preset(presets.find_preset(request.preset))
    if request.extract is not None and (request.as_json or request.show_prompt):
        return fail("--extract prints a code block: it does not go with --json or --show-prompt")
    prompt = compose_prompt(request.prompt, read_stdin(sys.stdin))
    files, refused = attachments.read_files(request.files, sources.effective().max_file_bytes)
    if refused:
        return ask_input.refuse(refused)
    if not prompt.strip() and not files:
        return fail("nothing to ask: give a prompt as an argument or pipe text into stdin")
    if request.show_prompt and sources.effective().endpoint:
        return fail("--show-prompt needs a local model; the server at --endpoint builds its own")
    if sys.stdout.isatty():
        sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]

    store, conv = _open_conversation(request)
    if conv is not None and sources.preset is not None:
        conv = presets.apply_preset(store, conv, sources.preset)
    # The conversation's saved settings rank above config and environment, below flags.
    settings = sources.effective(conv)
    system_prompt = settings.system_prompt
    history = prompt_messages(conv.messages if conv else [])
    content = attachments.compose_message(prompt, files)
    user_message = Message(Role.USER, content, attachments=[f.record() for f in files])
    params = GenerationParams.from_settings(settings)

    from mixchat.engine import factory

    engine = factory.make_engine(settings)
    try:
        if request.show_prompt:
            return _show_prompt(engine, [*history, user_message], system_prompt, params, request)
        if files:
            ask_input.report_files(
                engine, files, [*history, user_message], system_prompt, params.max_new_tokens
            )
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
                    settings=conversation_settings(settings, sources.preset),
                    title=attachments.title_for(prompt, files),
                    first_message=user_message,
                )
                created = True
            else:
                store.append_message(conv.id, user_message)
            conversation_id = conv.id
            progress.question_saved = True
        bar = _LoadBar()
        progress.loading = True
        try:
            for load_event in engine.load():
                if isinstance(load_event, LoadProgress):
                    bar.show(load_event)
                else:
                    bar.clear()
                    warn(load_event.message)
        except EngineError:
            # The model cannot load (wrong path, say): take back the unanswerable
            # question rather than leave a stray conversation for every typo.
            bar.clear()
            _take_back(store, conversation_id, created, user_message)
            raise
        finally:
            bar.clear()
        progress.loading = False
        info = engine.info()

        recorder = ReplyRecorder(store, conversation_id)
        progress.recorder = recorder
        # --extract prints only a code block, once the reply is complete.
        out = _Output(sys.stdout, enabled=not request.as_json and request.extract is None)
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

        try:
            outcome = stream_reply(
                engine, recorder, [*history, user_message], system_prompt, params, cancel, on_event
            )
        except ReplyNotSaved as exc:
            # The whole answer was shown; only saving it failed (e.g. `mixchat rm` of this
            # conversation meanwhile, or a database locked by another program too long).
            out.end_line()
            return fail(str(exc), EXIT_FAILURE)
        except KeyboardInterrupt:
            out.end_line()
            raise
        out.end_line()
        if any(isinstance(e, Failed) and e.unsent for e in outcome.events):
            # Nothing reached the model (a server that cannot be reached, a question too
            # long for its context): no question was asked, so none is kept.
            _take_back(store, conversation_id, created, user_message)
        if outcome.error is not None:
            # A prompt that cannot be built (too long for the context) is bad input.
            bad_input = any(isinstance(e, Failed) and e.kind == "prompt" for e in outcome.events)
            return fail(outcome.error, EXIT_USAGE if bad_input else EXIT_FAILURE)
        if request.extract is not None:
            return ask_input.print_code_block(outcome.text, request.extract, conversation_id)
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
            print(safe_json(payload))
        return 0
    finally:
        engine.close()
        if store is not None:
            store.close()


def _take_back(store: Any, conversation_id: str | None, created: bool, question: Message) -> None:
    """Remove a question that was never put to the model (and its error reply)."""
    if store is None or conversation_id is None:
        return
    if created:
        store.delete(conversation_id)
    elif question.id is not None:
        store.truncate_from(question.id)


def _open_conversation(request: AskRequest) -> tuple[Any, Conversation | None]:
    """The store (None with --no-save) and the conversation to continue, if any."""
    from mixchat.store import ConversationStore, NotFoundError

    wants_history = request.continue_last or request.conversation is not None
    if not request.save and not wants_history:
        return None, None
    store = ConversationStore.open()
    try:
        conv: Conversation | None = None
        if request.conversation is not None:
            conv = store.get_conversation(request.conversation)
        elif request.continue_last:
            last = store.last_conversation_id()
            if last is None:
                raise NotFoundError("no saved conversation to continue")
            conv = store.get_conversation(last)
    except BaseException:
        store.close()
        raise
    if not request.save:
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
        print(safe_json(payload))
    else:
        text = built.text if not sys.stdout.isatty() else for_terminal(built.text)
        print(text)
        print(json.dumps(built.ids))
    return 0
