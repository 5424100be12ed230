"""The remote engine: stream Chat Completions from an OpenAI-compatible server.

vLLM, TGI, llama.cpp's server and ``transformers serve`` all speak the same
``/v1/chat/completions`` streaming API; the ``openai`` client parses it (SSE
framing, ``[DONE]``, error events, status codes), so no protocol code lives here.

The HTTP request runs on a reader thread that hands chunks to the caller through a
queue, so a cancel is seen within ``_POLL_S`` even while the server is silent
(loading a model, prefilling a long prompt). The reader closes the response as soon
as it sees the cancel, which tells the server to stop generating. Every failure
becomes a ``Failed`` event with a one-line message; text already yielded stays.

``openai`` is imported on first use, not at import time, like torch in the local
engine. The API key is read from an environment variable named by the caller and is
never stored, logged or put in a message.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mixchat.config import Settings
from mixchat.conversation import Message, Role
from mixchat.engine.base import (
    ContextTrimmed,
    EngineError,
    Event,
    Failed,
    Finished,
    GenerationParams,
    LoadProgress,
    ModelInfo,
    Notice,
    TextDelta,
    Usage,
)
from mixchat.prompt import PromptError, context_messages, prompt_messages
from mixchat.textsafe import scrub_surrogates

DEFAULT_CONTEXT_SIZE = 32768
DEFAULT_API_KEY_ENV = "MIXCHAT_API_KEY"
_POLL_S = 0.05  # how often a waiting stream looks at its cancel event
_JOIN = "\n\n"  # as mixchat.prompt joins same-role runs and the system prompt
_END = object()  # the reader thread's "stream ended" marker


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
    url = endpoint.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EngineError(f"--endpoint must be an http(s) URL, got {endpoint!r}")
    return url if parts.path else url + "/v1"


def chat_messages(messages: Sequence[Message], system_prompt: str | None) -> list[dict[str, str]]:
    """Conversation -> Chat Completions ``messages``, shaped as the local engine's prompt.

    Error replies and empty partials are left out, same-role runs are joined with a blank
    line, and the system prompt is prepended to the first user message: Mixtral's chat
    template rejects a ``system`` role, and this way a conversation means the same thing
    locally and remotely. Raises ``PromptError`` when there is no user message to answer.
    """
    msgs = prompt_messages(messages)
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


def _one_line(text: str, limit: int = 200) -> str:
    """Collapse whitespace (server messages may hold tracebacks) and cap the length."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class RemoteEngine:
    """An OpenAI-compatible Chat Completions server behind the ``Engine`` protocol."""

    def __init__(
        self,
        settings: Settings,
        endpoint: str,
        *,
        api_key_env: str = DEFAULT_API_KEY_ENV,
        context_size: int = DEFAULT_CONTEXT_SIZE,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 300.0,
    ) -> None:
        """``endpoint`` is the server's URL; the key, if any, is read from ``$api_key_env``.

        ``read_timeout_s`` bounds the silence between two chunks (a cold server may
        load the model before its first byte, so it is generous by default).
        """
        self.settings = settings
        self.endpoint = endpoint
        self.api_key_env = api_key_env
        self.context_size = context_size
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._client: Any = None
        self._info: ModelInfo | None = None
        self._served: list[str] | None = None  # model ids from /v1/models, if it answered
        self._counter: Any = None  # SentencePiece token counter for context fitting

    # -- loading ----------------------------------------------------------

    def _make_client(self) -> Any:
        import openai

        url = base_url(self.endpoint)
        # "EMPTY" is what servers started without a key expect (and ignore).
        key = os.environ.get(self.api_key_env) or "EMPTY"
        timeout = openai.Timeout(self.read_timeout_s, connect=self.connect_timeout_s)
        # No automatic retries: a 429 or a refused connection is reported at once, and a
        # retried stream could repeat text that was already shown.
        return openai.OpenAI(base_url=url, api_key=key, timeout=timeout, max_retries=0)

    def load(self) -> Iterator[LoadProgress | Notice]:
        """Check that the server answers (``GET /v1/models``); raises ``EngineError``."""
        if self._info is not None:
            return
        try:
            import openai
        except ImportError:
            raise EngineError("--endpoint needs the openai package: pip install openai") from None

        yield LoadProgress("connect", 0, 1, self.endpoint)
        client = self._client or self._make_client()
        try:
            page = client.models.list()
            listed = list(getattr(page, "data", None) or [])
            self._served = [str(m.id) for m in listed]
            self._adopt_context_length(listed)
        except (
            openai.AuthenticationError,
            openai.PermissionDeniedError,
            openai.APIConnectionError,
        ) as exc:
            client.close()
            raise EngineError(self.describe(exc)) from None
        except openai.APIStatusError:
            # It answered but cannot list models (no /v1/models, or a broken listing):
            # the server is up, and the chat request will say whether the model is there.
            self._served = None
        except (openai.APIError, ValueError):  # an unparseable listing
            self._served = None
        self._client = client
        yield LoadProgress("connect", 1, 1, self.endpoint)
        if self._served and self.settings.model not in self._served:
            yield Notice(
                f"{self.endpoint} lists {', '.join(self._served[:5])}, not "
                f"{self.settings.model}; pass the served name with --model"
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

    def _adopt_context_length(self, listed: list[Any]) -> None:
        """Use the context length the server reports for our model (vLLM: max_model_len)."""
        for entry in listed:
            if str(getattr(entry, "id", "")) != self.settings.model:
                continue
            extra = getattr(entry, "model_extra", None) or {}
            length = extra.get("max_model_len") or getattr(entry, "max_model_len", None)
            if isinstance(length, int) and length > 0:
                self.context_size = length

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
        """The keyword arguments of ``chat.completions.create`` for one reply."""
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
        extra: dict[str, Any] = {}
        if params.top_k > 0:
            extra["top_k"] = params.top_k
        if params.repetition_penalty != 1.0:
            extra["repetition_penalty"] = params.repetition_penalty
        if extra:
            body["extra_body"] = extra
        return body

    def stream(
        self,
        messages: Sequence[Message],
        system_prompt: str | None,
        params: GenerationParams,
        cancel: threading.Event,
    ) -> Iterator[Event]:
        """Stream a reply from the server, yielding events as chunks arrive."""
        started = time.perf_counter()
        if self._info is None:
            try:
                yield from self.load()
            except EngineError as exc:
                yield Failed(str(exc), kind="engine")
                return
        try:
            kept = self.fit(messages, system_prompt, params.max_new_tokens)
            body = self.request(kept.messages, system_prompt, params)
        except PromptError as exc:
            yield Failed(str(exc), kind="prompt")
            return
        if kept.dropped:
            yield ContextTrimmed(kept.dropped, kept.prompt_tokens, self.context_size)
        if cancel.is_set():
            yield Finished("cancelled")
            return

        items: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()
        reader = threading.Thread(
            target=_read,
            args=(self._client, body, items, stop),
            name="mixchat-remote",
            daemon=True,
        )
        reader.start()
        chunks = 0
        ttft: float | None = None
        server_usage: Any = None
        finish: str | None = None
        received = False  # any chunk arrived: a broken connection now breaks a reply
        try:
            while True:
                if cancel.is_set():
                    yield self._usage(server_usage, chunks, ttft, started)
                    yield Finished("cancelled")
                    return
                try:
                    item = items.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    message = self.describe(item, mid_reply=received)
                    yield Failed(message, kind=type(item).__name__)
                    return
                received = True
                # Chunks are built without validation: read fields defensively so a
                # malformed chunk is skipped rather than crashing the stream.
                server_usage = getattr(item, "usage", None) or server_usage
                for choice in (getattr(item, "choices", None) or [])[:1]:
                    text = getattr(getattr(choice, "delta", None), "content", None)
                    if isinstance(text, str) and text:
                        if ttft is None:
                            ttft = time.perf_counter() - started
                        chunks += 1
                        yield TextDelta(text)
                    finish = getattr(choice, "finish_reason", None) or finish
        finally:
            stop.set()  # also when the caller abandons the generator (Ctrl-C)
        if finish is None:
            yield Failed(f"{self.endpoint} ended the stream before the reply finished")
            return
        yield self._usage(server_usage, chunks, ttft, started)
        yield Finished("length" if finish == "length" else "stop")

    def _usage(self, raw: Any, chunks: int, ttft: float | None, started: float) -> Usage:
        """The server's token counts when it sent them (include_usage), else chunk counts."""
        duration = time.perf_counter() - started
        prompt = int(getattr(raw, "prompt_tokens", 0) or 0)
        completion = int(getattr(raw, "completion_tokens", 0) or 0) if raw else chunks
        details = getattr(raw, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0)
        decode_s = duration - (ttft or 0.0)
        rate = (completion - 1) / decode_s if completion > 1 and decode_s > 0 else None
        return Usage(prompt, completion, ttft, duration, rate, cached_tokens=cached)

    # -- errors -----------------------------------------------------------

    def describe(self, exc: BaseException, *, mid_reply: bool = False) -> str:
        """One line for the user about a failed request; never includes the API key.

        ``mid_reply``: the stream had started, so a transport error broke the reply
        (openai 3.x wraps those in ``APIConnectionError``, 1.x passes them raw).
        """
        import openai

        timeout_error, http_error = _transport_errors()
        where = self.endpoint
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = _server_message(exc)
            if status == 401:
                return f"{where} refused the API key (401); put the key in ${self.api_key_env}"
            if status == 403:
                return f"{where} denied access (403): {detail}"
            if status == 404:
                served = f"; it serves {', '.join(self._served[:5])}" if self._served else ""
                return f"model {self.settings.model!r} not found at {where} (404){served}"
            if status == 429:
                return f"{where} is busy (429 too many requests); try again shortly"
            if status >= 500:
                return f"server error {status} from {where}: {detail}"
            return f"{where} rejected the request ({status}): {detail}"
        if isinstance(exc, (openai.APITimeoutError, timeout_error)):
            return f"{where} sent nothing for {self.read_timeout_s:g}s (timed out)"
        if isinstance(exc, openai.APIConnectionError | http_error):
            cause = exc.__cause__ or exc
            reason = _one_line(str(cause)) or type(cause).__name__
            if mid_reply:
                return f"the connection to {where} broke mid-reply: {reason}"
            return f"cannot reach {where}: {reason}"
        if isinstance(exc, openai.APIError):  # an error event inside the stream
            body = exc.body if isinstance(exc.body, str) else exc.message
            return f"{where} reported an error mid-reply: {_one_line(body)}"
        if isinstance(exc, json.JSONDecodeError):
            return f"{where} sent a malformed event: {_one_line(exc.doc, 80)}"
        return _one_line(f"{type(exc).__name__}: {exc}".rstrip(": "))

    def close(self) -> None:
        """Close the HTTP client (its connection pool); the engine can load again."""
        if self._client is not None:
            self._client.close()
        self._client = None
        self._info = None


def _read(
    client: Any, body: dict[str, Any], items: queue.Queue[Any], stop: threading.Event
) -> None:
    """Reader thread: send the request, pass chunks on, close the response on ``stop``.

    Exceptions travel to the caller through ``items``; after ``stop`` nobody listens.
    """
    try:
        with client.chat.completions.create(**body) as chunks:
            for chunk in chunks:
                if stop.is_set():
                    return  # leaving the with-block closes the response: the server stops
                items.put(chunk)
        items.put(_END)
    except Exception as exc:
        items.put(exc)


def _transport_errors() -> tuple[type[BaseException], type[BaseException]]:
    """(TimeoutException, HTTPError) of the HTTP library under ``openai``: errors while
    reading a stream reach us unwrapped. openai 3.x uses ``httpx2``, 1.x ``httpx``."""
    import importlib

    try:
        module = importlib.import_module("httpx2")
    except ImportError:
        module = importlib.import_module("httpx")
    return module.TimeoutException, module.HTTPError


def _server_message(exc: Any) -> str:
    """The server's own words from an error response: OpenAI ``{"error": {"message"}}``
    (the client unwraps ``error``), FastAPI ``{"detail"}``, or the plain-text body."""
    body = exc.body
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            if body.get(key):
                return _one_line(str(body[key]))
    if isinstance(body, str) and body:
        return _one_line(body)
    try:
        text = exc.response.text
    except Exception:  # a streamed body that cannot be read again
        text = ""
    return _one_line(text) or "no details"
