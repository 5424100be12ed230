"""The remote engine: stream Chat Completions from an OpenAI-compatible server.

vLLM, TGI, llama.cpp's server and ``transformers serve`` all speak the same
``/v1/chat/completions`` streaming API. A server is untrusted input, so mixchat reads
the raw HTTP stream itself rather than through a client library that buffers whole
lines and bodies: ``remote_http`` bounds every byte read, ``remote_sse`` decodes
events under a size cap, ``remote_fields`` checks every field used, ``remote_reply``
enforces the timeouts and ``--max-tokens``, and ``redact`` keeps the API key out of
everything shown or saved. Transient failures before the first token are retried
(``server_retries``); after it, never, since the text is already shown.

Every failure becomes a ``Failed`` event with a one-line message; text already yielded
stays. The HTTP library is imported on first use, not at import time, like torch in
the local engine. The API key is read from an environment variable named by the caller
and is never stored, logged or put in a message.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixchat.config import Settings, check_endpoint
from mixchat.conversation import Message, Role
from mixchat.engine.base import (
    ContextTrimmed,
    EngineError,
    Event,
    Failed,
    FailureKind,
    GenerationParams,
    LoadProgress,
    ModelInfo,
    Notice,
)
from mixchat.engine.redact import Redactor
from mixchat.engine.remote_errors import Context, describe, one_line, retryable, unsent
from mixchat.engine.remote_fields import read_listing
from mixchat.engine.remote_http import (
    MAX_LISTING_BYTES,
    Limits,
    ReplyTooLarge,
    StatusFailure,
    get_json,
    http_module,
    stream_events,
)
from mixchat.engine.remote_reply import ReplyReader, ReplyState
from mixchat.prompt import PromptError, context_messages, continues_reply, prompt_messages
from mixchat.textsafe import scrub_surrogates

DEFAULT_CONTEXT_SIZE = 32768
DEFAULT_API_KEY_ENV = "MIXCHAT_API_KEY"
_JOIN = "\n\n"  # as mixchat.prompt joins same-role runs and the system prompt
_BACKOFF_S = 0.5  # the first retry's wait; it doubles with each retry
_MODEL_ID_SHOWN = 60  # characters of a served model's id in a notice


@dataclass(frozen=True)
class FittedHistory:
    """The messages that fit the context, how many were dropped, the prompt's token count."""

    messages: list[Message]
    dropped: int
    prompt_tokens: int


def _mistral_v1_model() -> str:
    import mistral_common

    return str(Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1")


def base_url(endpoint: str) -> str:
    """The client's base URL: ``http://host:8000`` and ``http://host:8000/`` mean ``.../v1``;
    any other path is used as given (for servers mounted under a prefix)."""
    try:
        url = check_endpoint(endpoint).rstrip("/")
    except ValueError as exc:
        raise EngineError(f"--endpoint {one_line(endpoint, 80)!r} {exc}") from None
    path = url.split("://", 1)[1].partition("/")[2]
    return url if path else url + "/v1"


def chat_messages(messages: Sequence[Message], system_prompt: str | None) -> list[dict[str, str]]:
    """Conversation -> Chat Completions ``messages``, shaped as the local engine's prompt.

    Error replies and empty partials are left out, same-role runs are joined with a blank
    line, and the system prompt is prepended to the first user message: Mixtral's chat
    template rejects a ``system`` role, and this way a conversation means the same thing
    locally and remotely. Raises ``PromptError`` when there is no user message to answer.
    """
    msgs = prompt_messages(messages)
    if msgs and msgs[-1].role is Role.ASSISTANT:
        raise PromptError("continuing a reply needs a local model")
    if not msgs or msgs[-1].role is not Role.USER:
        raise PromptError("the conversation must end with a user message")
    turns: list[dict[str, str]] = []
    for m in msgs:
        text = scrub_surrogates(m.content)
        if turns and turns[-1]["role"] == m.role.value:
            if text:
                turns[-1]["content"] = _JOIN.join(p for p in (turns[-1]["content"], text) if p)
        else:
            turns.append({"role": m.role.value, "content": text})
    if turns[0]["role"] == Role.ASSISTANT.value:  # templates expect a user turn first
        turns.insert(0, {"role": Role.USER.value, "content": ""})
    if system_prompt:
        first = turns[0]
        first["content"] = _JOIN.join(
            p for p in (scrub_surrogates(system_prompt), first["content"]) if p
        )
    return turns


class RemoteEngine:
    """An OpenAI-compatible Chat Completions server behind the ``Engine`` protocol."""

    def __init__(
        self,
        settings: Settings,
        endpoint: str,
        *,
        api_key_env: str | None = None,
        context_size: int = DEFAULT_CONTEXT_SIZE,
        connect_timeout_s: float = 10.0,
    ) -> None:
        """``endpoint`` is the server's URL; the key, if any, is read from ``$api_key_env``
        (default: the variable that ``settings.api_key_env`` names).

        Timeouts, size caps and retries come from ``settings`` (``server_*``).
        """
        self.settings = settings
        self.endpoint = endpoint
        self.api_key_env = api_key_env or settings.api_key_env
        self.context_size = context_size
        self.connect_timeout_s = connect_timeout_s
        self._client: Any = None
        self._base = ""
        self._info: ModelInfo | None = None
        self._served: list[str] | None = None  # model ids from /v1/models, if it answered
        self._counter: Any = None  # SentencePiece token counter for context fitting
        self._redactor = Redactor([])
        # How a retry waits; True means cancelled. Tests swap it to see the waits.
        self.wait: Callable[[float, threading.Event], bool] = lambda s, cancel: cancel.wait(s)

    # -- shared -----------------------------------------------------------

    def _context(self) -> Context:
        return Context(
            self.endpoint, self.settings, self.api_key_env, self.connect_timeout_s, self._served
        )

    def _limits(self) -> Limits:
        s = self.settings
        return Limits(
            self.connect_timeout_s,
            s.server_idle_timeout_s,
            s.server_max_event_bytes,
            s.server_max_reply_bytes,
        )

    def _say(self, text: str) -> str:
        """A line for the user: one line, control characters shown, secrets redacted."""
        return self._redactor.line(one_line(text))

    def _api_key(self) -> str | None:
        key = (os.environ.get(self.api_key_env) or "").strip()
        if key and not all(" " < c < "\x7f" for c in key):
            # The HTTP library would refuse it with the value in its message.
            raise EngineError(
                f"${self.api_key_env} holds characters an HTTP header cannot carry "
                "(spaces, control or non-ASCII characters); check its value"
            )
        return key or None

    def _make_client(self) -> Any:
        try:
            http = http_module()
        except ImportError:
            raise EngineError("--endpoint needs the httpx2 package: pip install httpx2") from None
        self._base = base_url(self.endpoint)
        key = self._api_key()
        self._redactor = Redactor([key])
        headers = {
            # "EMPTY" is what servers started without a key expect (and ignore).
            "Authorization": f"Bearer {key or 'EMPTY'}",
            "Accept-Encoding": "identity",  # a compressed body could not be bounded
            "User-Agent": "mixchat",
        }
        # No connection is kept for the next request: a server closes idle keep-alive
        # connections when it likes (after a 429, or a few seconds idle), and a request
        # sent on one it has just closed fails with "disconnected without a response",
        # a race no client can see coming. A fresh connection per reply costs a handshake
        # against seconds of generation.
        limits = http.Limits(max_keepalive_connections=0)
        return http.Client(headers=headers, follow_redirects=False, limits=limits)

    # -- loading ----------------------------------------------------------

    def load(self) -> Iterator[LoadProgress | Notice]:
        """Check that the server answers (``GET /v1/models``); raises ``EngineError``."""
        if self._info is not None:
            return
        yield LoadProgress("connect", 0, 1, self.endpoint)
        if self._client is None:
            self._client = self._make_client()
        try:
            listing = yield from self._list_models()
        except EngineError:
            self.close()
            raise
        yield from self._adopt_listing(listing)
        yield LoadProgress("connect", 1, 1, self.endpoint)
        if self._served and self.settings.model not in self._served:
            names = ", ".join(one_line(m, _MODEL_ID_SHOWN) for m in self._served[:5])
            yield Notice(
                self._say(
                    f"{self.endpoint} lists {names}, not {self.settings.model}; "
                    "pass the served name with --model"
                )
            )
        self._info = ModelInfo(
            model_id=self.settings.model,
            dtype="remote",
            quantization="remote",
            attention="remote",
            device=self.endpoint,
            weight_bytes=0,
            context_size=self.context_size,
        )

    def _list_models(self) -> Generator[Notice, None, Any]:
        """The parsed model listing, None when the server cannot give one; raises
        ``EngineError`` when the server is unreachable or refuses the key."""
        http = http_module()
        retries = 0
        while True:
            try:
                url = f"{self._base}/models"
                return get_json(self._client, url, self._limits(), MAX_LISTING_BYTES)
            except StatusFailure as exc:
                if exc.status in (401, 403):
                    raise EngineError(self._say(describe(exc, self._context()))) from None
                return None  # it answers but cannot list: the chat request will tell more
            except ReplyTooLarge as exc:
                where = self.endpoint
                yield Notice(
                    self._say(f"ignored {where}'s model listing: over {exc.limit:,} bytes")
                )
                return None
            except ValueError:  # not JSON
                return None
            except Exception as exc:
                message = describe(exc, self._context())
                if isinstance(exc, http.ConnectError) and retries < self.settings.server_retries:
                    delay = min(_BACKOFF_S * 2**retries, self.settings.server_retry_max_wait_s)
                    retries += 1
                    yield Notice(self._say(f"{message}; {_retrying(delay, retries, self)}"))
                    self.wait(delay, threading.Event())
                    continue
                gave_up = f" (gave up after {retries} retries)" if retries else ""
                raise EngineError(self._say(message + gave_up)) from None

    def _adopt_listing(self, listing: Any) -> Iterator[Notice]:
        """Note the served model ids and our model's context length (vLLM: max_model_len)."""
        self._served, length, notes = read_listing(listing, self.settings.model)
        if length is not None:
            self.context_size = length
        for line in notes:
            yield Notice(self._say(line))

    def info(self) -> ModelInfo:
        """What is being talked to; valid after ``load``."""
        if self._info is None:
            raise EngineError("the server has not been contacted yet")
        return self._info

    # -- generation -------------------------------------------------------

    def fit(
        self, messages: Sequence[Message], system_prompt: str | None, max_new_tokens: int
    ) -> FittedHistory:
        """Drop the oldest turns so prompt + ``max_new_tokens`` fits the server's context.

        Tokens are counted with Mixtral's v1 SentencePiece vocabulary (shipped with
        mistral-common): exact for a served Mixtral, an estimate for other models.
        Raises ``ContextOverflowError`` when the newest message alone does not fit.
        """
        from mixchat.prompt import SentencePieceTokenizer, build_mistral_v1_prompt, fit_to_context

        if self._counter is None:
            self._counter = SentencePieceTokenizer(_mistral_v1_model())
        counter = self._counter
        usable = prompt_messages(messages)
        fitted = fit_to_context(
            lambda msgs: build_mistral_v1_prompt(counter, msgs, system_prompt),
            usable,
            self.context_size,
            max_new_tokens,
        )
        return FittedHistory(
            list(usable[fitted.dropped_messages :]), fitted.dropped_messages, len(fitted.ids)
        )

    def count_tokens(self, messages: Sequence[Message], system_prompt: str | None) -> int | None:
        """Tokens the prompt of ``messages`` fills, counted as ``fit`` counts them (Mixtral's
        v1 vocabulary); None when there is nothing to count or it does not fit."""
        try:
            return self.fit(context_messages(messages), system_prompt, 0).prompt_tokens
        except PromptError:
            return None

    def request(
        self, messages: Sequence[Message], system_prompt: str | None, params: GenerationParams
    ) -> dict[str, Any]:
        """The JSON body of ``POST /chat/completions`` for one reply."""
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": chat_messages(messages, system_prompt),
            "stream": True,
            "stream_options": {"include_usage": True},
            # max_tokens rather than max_completion_tokens: every compatible server knows it.
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        # Not in the OpenAI schema; vLLM, TGI and llama.cpp take them. Sent only when
        # set, since strict servers (transformers serve) refuse unknown fields.
        if params.top_k > 0:
            body["top_k"] = params.top_k
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty
        return body

    def stream(
        self,
        messages: Sequence[Message],
        system_prompt: str | None,
        params: GenerationParams,
        cancel: threading.Event,
    ) -> Iterator[Event]:
        """Stream a reply from the server, yielding events as chunks arrive. Continuing a
        reply (a last assistant message) is refused with one ``Failed``: a server's chat
        template would close that message before the model saw it."""
        started = time.perf_counter()
        if continues_reply(messages):
            yield Failed("continuing a reply needs a local model", kind=FailureKind.PROMPT)
            return
        if self._info is None:
            try:
                yield from self.load()
            except EngineError as exc:
                yield Failed(str(exc), unsent=True)
                return
        try:
            kept = self.fit(messages, system_prompt, params.max_new_tokens)
            body = self.request(kept.messages, system_prompt, params)
        except PromptError as exc:
            yield Failed(str(exc), kind=FailureKind.PROMPT, unsent=True)
            return
        if kept.dropped:
            yield ContextTrimmed(kept.dropped, kept.prompt_tokens, self.context_size)
        state = ReplyState(params.max_new_tokens, started, self._redactor.stream())
        deadline = time.monotonic() + self.settings.server_reply_timeout_s
        reader = ReplyReader(self._context(), self._say, state, cancel, deadline)
        client, url, limits = self._client, f"{self._base}/chat/completions", self._limits()
        retries = 0
        while True:
            if cancel.is_set():
                yield from reader.cancelled()
                return
            failure = yield from reader.attempt(
                lambda stop: stream_events(client, url, body, limits, stop)
            )
            if failure is None:
                return
            message = describe(failure, self._context())
            delay, why_not = self._retry_plan(failure, retries, deadline)
            if delay is None:
                yield from reader.fail(message + why_not, unsent=unsent(failure))
                return
            retries += 1
            yield Notice(self._say(f"{message}; {_retrying(delay, retries, self)}"))
            if self.wait(delay, cancel):
                yield from reader.cancelled()
                return

    def _retry_plan(
        self, failure: BaseException, retries: int, deadline: float
    ) -> tuple[float | None, str]:
        """How long to wait before the next try, or None and why not."""
        cap = self.settings.server_retry_max_wait_s
        gave_up = f" (gave up after {retries} retries)" if retries else ""
        if not retryable(failure) or retries >= self.settings.server_retries:
            return None, gave_up
        asked = failure.retry_after if isinstance(failure, StatusFailure) else None
        if asked is not None and asked > cap:
            return None, (
                f"; it asks to wait {asked:g}s, more than server_retry_max_wait_s "
                f"({cap:g}s){gave_up}"
            )
        delay = asked if asked is not None else min(_BACKOFF_S * 2**retries, cap)
        if time.monotonic() + delay >= deadline:
            return None, f"; no time is left to retry within server_reply_timeout_s{gave_up}"
        return delay, ""

    def describe(self, exc: BaseException, *, mid_reply: bool = False) -> str:
        """One line for the user about a failed request; never includes the API key."""
        return self._say(describe(exc, self._context(), mid_reply=mid_reply))

    def close(self) -> None:
        """Close the HTTP client (its connection pool); the engine can load again."""
        if self._client is not None:
            self._client.close()
        self._client = None
        self._info = None


def _retrying(delay: float, retry: int, engine: RemoteEngine) -> str:
    return f"retrying in {delay:g}s (retry {retry} of {engine.settings.server_retries})"
