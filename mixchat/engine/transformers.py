"""The local engine: one background thread owns a transformers model.

Callers submit jobs (load, generate) and read events from a per-job queue, so
the UI thread never blocks on the model and the model is only ever touched by
its own thread. torch and transformers are imported inside that thread.

The KV cache of the last conversation is kept between turns (``PrefixCache``), so a
new turn prefills only the tokens that differ from what the cache already covers.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mixchat.config import Settings
from mixchat.conversation import Message
from mixchat.engine.base import (
    ContextTrimmed,
    DownloadRefused,
    EngineError,
    Event,
    Failed,
    FailureKind,
    Finished,
    GenerationParams,
    LoadProgress,
    ModelInfo,
    Notice,
    TextDelta,
    Usage,
)
from mixchat.engine.kvcache import PrefixCache
from mixchat.engine.tokenizer import ChatTokenizer
from mixchat.prompt import PromptError, context_messages, continues_reply

_DONE = object()


@dataclass
class _Job:
    run: Callable[[Callable[[Any], None]], None]
    events: queue.Queue[Any]
    cancel: threading.Event


class TransformersEngine:
    """A Hugging Face transformers model behind the ``Engine`` protocol."""

    def __init__(self, settings: Settings, *, reuse_cache: bool = True) -> None:
        """``reuse_cache=False`` prefills every prompt in full (for comparisons)."""
        self.settings = settings
        self.reuse_cache = reuse_cache
        self._kv = PrefixCache()  # touched only by the model thread
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="mixchat-model", daemon=True)
        self._thread.start()
        self._model_dir: Any = None
        self._tokenizer: ChatTokenizer | None = None
        self._model: Any = None
        self._info: ModelInfo | None = None
        self._loading = False  # the model thread is reading weights (cannot be stopped)
        self._counter: ChatTokenizer | None = None  # count_tokens' own tokenizer
        self._counter_lock = threading.Lock()
        self._stop_download = threading.Event()  # set by close(): a download stops
        self._locator: Any = None  # resolve.ModelLocator, made on first use
        self._refused: DownloadRefused | None = None  # why the last load refused to download

    # -- the model thread -------------------------------------------------

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job.run(job.events.put)
            except EngineError as exc:
                job.events.put(Failed(str(exc)))
            except Exception as exc:  # keep the thread alive for the next job
                job.events.put(Failed(_one_line(exc)))
            finally:
                job.events.put(_DONE)

    def _submit(
        self,
        run: Callable[[Callable[[Any], None]], None],
        cancel: threading.Event,
        *,
        wait_on_abandon: bool = True,
    ) -> Iterator[Any]:
        """Run ``run`` on the model thread and yield what it emits. If the caller stops
        listening, the job is cancelled and (``wait_on_abandon``) waited for; a load cannot
        be cancelled half-way, so a caller stopped during one (Ctrl-C, SIGTERM) does not
        wait for the weights it no longer wants."""
        job = _Job(run, queue.Queue(), cancel)
        self._jobs.put(job)
        finished = False
        try:
            while True:
                try:
                    item = job.events.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _DONE:
                    finished = True
                    return
                yield item
        finally:
            if not finished and wait_on_abandon:
                self._abandon(job)

    @staticmethod
    def _abandon(job: _Job) -> None:
        """The caller stopped listening (Ctrl-C, closed generator): stop the job
        and wait for the model thread to let go of it."""
        job.cancel.set()
        while True:
            try:
                item = job.events.get(timeout=5)
            except queue.Empty:
                return
            if item is _DONE:
                return

    # -- loading ----------------------------------------------------------

    def load_tokenizer(self) -> ChatTokenizer:
        """Resolve the model and load only its tokenizer (no weights)."""
        if self._tokenizer is None:
            self._model_dir = self._model_locator().directory(weights=False)
            self._tokenizer = ChatTokenizer(
                self._model_dir, trust_remote_code=self.settings.trust_remote_code
            )
        return self._tokenizer

    def check_fits(
        self, messages: Sequence[Message], system_prompt: str | None, max_new_tokens: int
    ) -> None:
        """Raise ``PromptError`` if the prompt of ``messages`` cannot fit the context even with
        old turns left out; needs only the tokenizer, not the weights."""
        self.load_tokenizer().build(messages, system_prompt, max_new_tokens)

    def _model_locator(self) -> Any:
        """Finds (and, from the hub, checks and downloads) the model; one per engine."""
        if self._locator is None:
            from mixchat.engine.resolve import ModelLocator

            self._locator = ModelLocator(self.settings, self._stop_download)
        return self._locator

    def load(self) -> Iterator[LoadProgress | Notice]:
        """Load tokenizer and weights on the model thread, yielding progress. A download
        the checks refuse raises ``DownloadRefused`` (with what would fit)."""
        for event in self._submit(self._load_job, threading.Event(), wait_on_abandon=False):
            if isinstance(event, Failed):
                refused, self._refused = self._refused, None
                if refused is not None and str(refused) == event.message:
                    raise refused
                raise EngineError(event.message)
            yield event

    def _load_job(self, emit: Callable[[Any], None]) -> None:
        if self._model is not None:
            return
        self._loading = True
        try:
            self._load(emit)
        except DownloadRefused as exc:
            self._refused = exc  # load() raises it, offer and all, on the caller's side
            raise
        finally:
            self._loading = False

    def _load(self, emit: Callable[[Any], None]) -> None:
        progress = emit  # loaders report LoadProgress events themselves
        emit(LoadProgress("resolve", 0, 1, self.settings.model))
        self._model_dir = self._model_locator().directory(progress=progress)
        # torch is imported only once the model is known to be there: a missing model
        # is reported at once, not after seconds of importing.
        from mixchat.engine.local.loader import load_model

        emit(LoadProgress("tokenizer", 0, 1))
        self._tokenizer = ChatTokenizer(
            self._model_dir, trust_remote_code=self.settings.trust_remote_code
        )
        emit(LoadProgress("tokenizer", 1, 1))
        loaded = load_model(
            self._model_dir, self.settings, progress, emit_notice=lambda m: emit(Notice(m))
        )
        self._model = loaded.model
        self._info = ModelInfo(
            model_id=self.settings.model,
            dtype=loaded.dtype,
            quantization=loaded.quantization,
            attention=loaded.attention,
            device=loaded.device,
            weight_bytes=loaded.weight_bytes,
            context_size=self._tokenizer.context_size,
        )

    def count_tokens(self, messages: Sequence[Message], system_prompt: str | None) -> int | None:
        """Tokens the prompt of ``messages`` fills (``context_messages``); None before the
        model is loaded or when it cannot be built. Safe beside a reply: it uses a
        tokenizer of its own, as the model thread's is not shared between threads."""
        if self._info is None or self._model_dir is None:
            return None
        with self._counter_lock:
            if self._counter is None:
                self._counter = ChatTokenizer(
                    self._model_dir, trust_remote_code=self.settings.trust_remote_code
                )
            try:
                return len(self._counter.build(context_messages(messages), system_prompt, 0).ids)
            except PromptError:
                return None

    def info(self) -> ModelInfo:
        """What is loaded; valid after ``load``."""
        if self._info is None:
            raise EngineError("the model is not loaded")
        return self._info

    # -- generation -------------------------------------------------------

    def reset_cache(self) -> None:
        """Drop the kept KV cache (frees its memory); the next reply prefills in full.

        Not needed for correctness (reuse is matched on token ids), only to free memory.
        Returns at once: the model thread does it after the job it is running, if any.
        """
        job = _Job(lambda emit: self._kv.discard(), queue.Queue(), threading.Event())
        self._jobs.put(job)

    def stream(
        self,
        messages: Sequence[Message],
        system_prompt: str | None,
        params: GenerationParams,
        cancel: threading.Event,
    ) -> Iterator[Event]:
        """Generate a reply on the model thread, yielding events as they happen."""
        started = time.perf_counter()
        need_load = self._model is None
        if need_load:
            yield from self._submit(self._load_job, threading.Event(), wait_on_abandon=False)
            if self._model is None:
                return

        def run(emit: Callable[[Any], None]) -> None:
            self._generate(emit, messages, system_prompt, params, cancel, started)

        yield from self._submit(run, cancel)

    def _generate(
        self,
        emit: Callable[[Any], None],
        messages: Sequence[Message],
        system_prompt: str | None,
        params: GenerationParams,
        cancel: threading.Event,
        started: float,
    ) -> None:
        import torch

        from mixchat.engine.generation import run_generate

        assert self._tokenizer is not None
        try:
            prompt = self._tokenizer.build(messages, system_prompt, params.max_new_tokens)
        except PromptError as exc:
            emit(Failed(str(exc), kind=FailureKind.PROMPT))
            return
        if prompt.dropped_messages:
            emit(
                ContextTrimmed(
                    prompt.dropped_messages, len(prompt.ids), self._tokenizer.context_size
                )
            )
        if cancel.is_set():
            emit(Finished("cancelled"))
            return
        try:
            result = run_generate(
                self._model,
                self._tokenizer,
                prompt.ids,
                params,
                cancel,
                started,
                lambda text: emit(TextDelta(text)),
                self._kv if self.reuse_cache else None,
                continuing=continues_reply(messages),
            )
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            emit(
                Failed(
                    "out of GPU memory: try --4bit, a shorter conversation or fewer --max-tokens",
                    kind=FailureKind.OUT_OF_MEMORY,
                )
            )
            return
        emit(
            Usage(
                prompt_tokens=len(prompt.ids),
                completion_tokens=result.completion_tokens,
                ttft_s=result.ttft_s,
                duration_s=result.duration_s,
                tokens_per_s=result.tokens_per_s,
                cached_tokens=result.cached_tokens,
            )
        )
        emit(Finished(result.reason))

    def close(self) -> None:
        """Stop the model thread and drop the model (without waiting for a load in
        progress: the process is about to drop it anyway). A download stops at its next
        chunk, keeping the files it finished."""
        self._stop_download.set()
        self._jobs.put(None)
        if not self._loading:
            self._thread.join(timeout=10)
        self._kv.discard()
        self._model = None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
