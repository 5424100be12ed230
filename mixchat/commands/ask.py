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
from mixchat.config import load_sources
from mixchat.conversation import Conversation, Message, Role
from mixchat.engine.base import (
    ContextTrimmed,
    EngineError,
    Event,
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
    continue_reply: bool = False
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


#: The one line on stderr after an answer cut by the token limit (the answer is complete
#: on stdout as far as it went; scripts may ignore stderr or read ``--json``'s "ending").
CUT_NOTE = "the answer reached --max-tokens; `mixchat ask -c --continue-reply` goes on"


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
    if event.stage == "download":  # bytes: "downloading 3.1/93.4 GB (3%) · 85.0 MB/s, ..."
        from mixchat.engine.local.progress import amount

        pct = f" ({100 * event.done // event.total}%)" if event.total else ""
        detail = f" · {for_terminal(event.detail)}" if event.detail else ""
        return f"downloading {amount(event.done, event.total)}{pct}{detail}"
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
    downloading: bool = False  # the last load event was a download's
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
        if progress.downloading:
            from mixchat.engine.resolve import KEPT

            return f"{what} during the download: {KEPT}{kept}"
        return f"{what} while the model was loading{kept}"
    return f"{what}; the question is saved" if progress.question_saved else f"{what}; nothing saved"


def _run_ask(request: AskRequest, progress: _Progress) -> int:
    from mixchat import attachments, presets
    from mixchat.commands import ask_input
    from mixchat.turn import Ending, FailureKind, ReplyNotSaved, Turn

    sources = load_sources(request.flags)
    if request.preset is not None:
        sources = sources.with_preset(presets.find_preset(request.preset))
    if request.extract is not None and (request.as_json or request.show_prompt):
        return fail("--extract prints a code block: it does not go with --json or --show-prompt")
    prompt = compose_prompt(request.prompt, read_stdin(sys.stdin))
    if request.continue_reply and prompt.strip():
        return fail("--continue-reply goes on with the last answer: give no question with it")
    if request.continue_reply and not (request.continue_last or request.conversation):
        return fail("--continue-reply needs -c or --conversation ID: which answer to go on with")
    files, refused = attachments.read_files(request.files, sources.effective().max_file_bytes)
    if refused:
        return ask_input.refuse(refused)
    if request.continue_reply and files:
        return fail("--continue-reply goes on with the last answer: give no file with it")
    if not prompt.strip() and not files and not request.continue_reply:
        return fail("nothing to ask: give a prompt as an argument or pipe text into stdin")
    if request.show_prompt and sources.effective().endpoint:
        return fail("--show-prompt needs a local model; the server at --endpoint builds its own")
    if sys.stdout.isatty():
        sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]

    store, conv = _open_conversation(request)
    if conv is not None and sources.preset is not None:
        conv = presets.apply_preset(store, conv, sources.preset)
    turn = Turn(store, sources, conv)
    question = None
    if not request.continue_reply:
        content = attachments.compose_message(prompt, files)
        question = Message(Role.USER, content, attachments=[f.record() for f in files])

    from mixchat.engine import factory

    engine = factory.make_engine(turn.settings)
    try:
        if request.continue_reply:
            assert conv is not None
            last = conv.messages[-1] if conv.messages else None
            if last is None or last.role is not Role.ASSISTANT:
                return fail("the conversation does not end with an answer to continue")
            turn.continue_reply(last)
        if request.show_prompt:
            return _show_prompt(engine, turn.prompt_history(question), turn, request)
        if files:
            ask_input.report_files(
                engine,
                files,
                turn.prompt_history(question),
                turn.system_prompt,
                turn.params.max_new_tokens,
            )
        # A question too long for the context is refused before minutes of loading
        # weights, and before it is saved, where the engine can tell (PromptError).
        turn.check_fits(engine, question)
        # The question is committed before the model loads, so a crash or a kill at any
        # later moment keeps it (as the app does with a message sent while loading).
        if question is not None:
            turn.ask(question, title=attachments.title_for(prompt, files))
            progress.question_saved = store is not None
        bar = _LoadBar()
        progress.loading = True
        try:
            for load_event in engine.load():
                if isinstance(load_event, LoadProgress):
                    progress.downloading = load_event.stage == "download"
                    bar.show(load_event)
                else:
                    bar.clear()
                    warn(load_event.message)
        except EngineError:
            # The model cannot load (wrong path, say): take back the unanswerable
            # question rather than leave a stray conversation for every typo.
            bar.clear()
            turn.undo()
            raise
        finally:
            bar.clear()
        progress.loading = False
        info = engine.info()

        progress.recorder = turn.start()
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
            outcome = turn.run(engine, cancel, on_event)
        except ReplyNotSaved as exc:
            # The whole answer was shown; only saving it failed (e.g. `mixchat rm` of this
            # conversation meanwhile, or a database locked by another program too long).
            out.end_line()
            return fail(str(exc), EXIT_FAILURE)
        except KeyboardInterrupt:
            out.end_line()
            raise
        out.end_line()
        if outcome.unsent:
            # Nothing reached the model (a server that cannot be reached, a question too
            # long for its context): no question was asked, so none is kept.
            turn.undo()
        if outcome.ending is Ending.FAILED:
            # A prompt that cannot be built (too long for the context) is bad input.
            bad_input = outcome.failure is FailureKind.PROMPT
            return fail(
                outcome.error or "the model failed", EXIT_USAGE if bad_input else EXIT_FAILURE
            )
        if outcome.ending is Ending.LENGTH and not request.as_json:
            warn(CUT_NOTE)
        if request.extract is not None:
            conv_id = turn.conversation.id if turn.conversation and store else None
            return ask_input.print_code_block(outcome.text, request.extract, conv_id)
        if request.as_json:
            conv_id = turn.conversation.id if turn.conversation and store else None
            payload = {
                "conversation_id": conv_id,
                "reply": outcome.text,
                "finish_reason": outcome.finish_reason,
                "ending": outcome.ending.value,
                "status": outcome.status.value,
                "usage": asdict(outcome.usage) if outcome.usage else None,
                "dropped_messages": outcome.dropped_messages,
                "model": asdict(info),
            }
            # The model id comes from argv/env and may hold undecodable bytes.
            print(safe_json(payload))
        return 0
    finally:
        engine.close()
        if store is not None:
            store.close()


def _open_conversation(request: AskRequest) -> tuple[Any, Conversation | None]:
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


def _show_prompt(engine: Any, messages: list[Message], turn: Any, request: AskRequest) -> int:
    tokenizer = engine.load_tokenizer()
    built = tokenizer.build(messages, turn.system_prompt, turn.params.max_new_tokens)
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
