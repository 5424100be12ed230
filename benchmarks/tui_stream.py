"""How fast the chat view absorbs a streamed reply, and how quickly keys land meanwhile.

Two workloads, tokenised once and fed identically to every variant:

- ``prose``: realistic Markdown (paragraphs with emphasis and inline code, bullet lists,
  headings), about 6,000 tokens;
- ``code``: a short intro, then one growing ~10 KB Python fence, then a closing sentence.

Two variants run headless (``run_test(size=(120, 40))``) in the same process:

- ``mixchat``: the real ``MixchatApp`` with a paced engine behind the reply worker, so the
  whole path runs (worker thread, coalescing ``ReplyText`` messages, ``AssistantBlock``);
- ``baseline``: a bare app with one ``Markdown`` widget fed through Textual's own
  ``Markdown.get_stream``, with the same thread + coalescing message delivery.

Each workload is streamed at its target rate (prose 2,000 tok/s, code 500 tok/s), at four
times that rate, and unthrottled. A paced feeder keeps a schedule (token ``i`` is due at
``start + i / rate``) and catches up when late, so GIL scheduling does not lower the rate.

Figures per run: ``absorbed_tok_s`` = tokens / (time from the first token to the moment the
reply is fully on screen: the finished stream has written everything into the widgets);
``lag_ms`` = that moment minus the time the last token was produced; for runs at the target
rate, key latency: a thread standing in for the terminal's input thread sends a key event
every 40 ms the way ``pilot.press`` does (``driver.send_message``) and the time until the
input's text has changed (its ``TextArea.Changed`` is dispatched) is recorded; median and
p95 in ms.

Prints one JSON object. Not part of the tests. Run: ``python benchmarks/tui_stream.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import textual
from textual import events, on
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message as TMessage
from textual.widgets import Markdown, TextArea

from mixchat.config import Settings
from mixchat.conversation import Message
from mixchat.engine.base import Event, Finished, GenerationParams, TextDelta, Usage
from mixchat.engine.scripted import ScriptedEngine
from mixchat.store import ConversationStore
from mixchat.textsafe import neutralize
from mixchat.tui.app import CSS_FILE, MixchatApp
from mixchat.tui.widgets.chat_view import AssistantBlock
from mixchat.tui.widgets.prompt_input import PromptInput

SIZE = (120, 40)
TARGETS = {"prose": 2000.0, "code": 500.0}
KEY_TARGET_MS = 50.0
KEY_INTERVAL_S = 0.04
TOKEN = re.compile(r"\s*\S{1,4}|\s+")

WORDS = re.findall(
    r"\w+",
    "the model streams tokens into a terminal view while the user keeps typing and the "
    "renderer must keep pace without blocking input handling or dropping any text at all "
    "mixture experts routing attention cache context window quantised weights throughput "
    "latency layout widget paragraph list heading fence highlight parser scroll anchor",
)


# -- workloads ----------------------------------------------------------------


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 16))]
    i = rng.randrange(len(words))
    words[i] = rng.choice(["**{}**", "*{}*", "`{}()`", "{}"]).format(words[i])
    return " ".join(words).capitalize() + rng.choice([".", ".", ",", ";", "!"])


def prose_text(tokens: int, seed: int = 1) -> str:
    """Markdown prose of about ``tokens`` tokens: paragraphs, lists and headings."""
    rng = random.Random(seed)
    parts: list[str] = []
    while len(TOKEN.findall("".join(parts))) < tokens:
        kind = rng.random()
        if kind < 0.12:
            parts.append(f"## {_sentence(rng).rstrip('.,;!')}\n\n")
        elif kind < 0.35:
            items = [f"- {_sentence(rng)}\n" for _ in range(rng.randint(3, 5))]
            parts.append("".join(items) + "\n")
        else:
            parts.append(" ".join(_sentence(rng) for _ in range(rng.randint(3, 6))) + "\n\n")
    return "".join(parts)


def code_text(code_chars: int, seed: int = 2) -> str:
    """An intro sentence, one ```python fence of about ``code_chars`` characters, an outro."""
    rng = random.Random(seed)
    body: list[str] = []
    n = 0
    while sum(map(len, body)) < code_chars:
        name = f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{n}"
        body.append(
            f"def {name}(items: list[int], limit: int = {rng.randint(1, 99)}) -> dict[str, int]:\n"
            f'    """Count how often each {rng.choice(WORDS)} exceeds the limit."""\n'
            f"    counts: dict[str, int] = {{}}\n"
            f"    for index, value in enumerate(items):  # {_sentence(rng)[:40]}\n"
            f"        if value > limit and index % {rng.randint(2, 9)}:\n"
            f'            key = f"{{value:04d}}-{rng.choice(WORDS)}"\n'
            f"            counts[key] = counts.get(key, 0) + 1\n"
            f"    return counts\n\n\n"
        )
        n += 1
    code = "".join(body).rstrip() + "\n"
    return f"Here is the module you asked for:\n\n```python\n{code}```\n\nIt has {n} functions.\n"


def tokenize(text: str) -> list[str]:
    """Split into ~4-character pieces (leading whitespace rides along); joins back exactly."""
    pieces = TOKEN.findall(text)
    assert "".join(pieces) == text
    return pieces


# -- paced delivery -----------------------------------------------------------


@dataclass
class Timeline:
    """When the first and the last token left the feeder."""

    first: float = 0.0
    last: float = 0.0


def paced(tokens: Sequence[str], rate: float, timeline: Timeline) -> Iterator[str]:
    """Yield ``tokens`` on a fixed schedule (``rate`` tok/s; 0 = as fast as possible)."""
    start = time.perf_counter()
    timeline.first = start
    for index, token in enumerate(tokens):
        if rate:
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        yield token
    timeline.last = time.perf_counter()


class PacedEngine(ScriptedEngine):
    """Streams one fixed token list at a fixed rate through the engine protocol."""

    def __init__(self, tokens: Sequence[str], rate: float) -> None:
        super().__init__()
        self.tokens = tokens
        self.rate = rate
        self.timeline = Timeline()

    def stream(
        self,
        messages: Sequence[Message],
        system_prompt: str | None,
        params: GenerationParams,
        cancel: threading.Event,
    ) -> Iterator[Event]:
        for token in paced(self.tokens, self.rate, self.timeline):
            if cancel.is_set():
                yield Finished("cancelled")
                return
            yield TextDelta(token)
        yield Usage(1, len(self.tokens), 0.0, 1.0, None)
        yield Finished("stop")


# -- key latency --------------------------------------------------------------


@dataclass
class Typist:
    """Sends a key every ``interval`` seconds from its own thread, like a terminal driver."""

    app: App[Any]
    interval: float = KEY_INTERVAL_S
    sent: list[float] = field(default_factory=list)
    changed: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def hook(self, message: TMessage) -> None:
        """Message hook: note when the input's text changed, and its length."""
        if isinstance(message, TextArea.Changed) and isinstance(message.text_area, PromptInput):
            self.changed.append((time.perf_counter(), len(message.text_area.text)))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        driver = self.app._driver
        assert driver is not None
        while not self._stop.wait(self.interval):
            char = "abcdefghijklmnopqrstuvwxyz"[len(self.sent) % 26]
            event = events.Key(char, char)
            event.set_sender(self.app)
            self.sent.append(time.perf_counter())
            driver.send_message(event)

    async def stop(self) -> None:
        """Stop typing and wait (briefly) until every key sent has been handled."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        deadline = time.perf_counter() + 5
        while self.sent and time.perf_counter() < deadline:
            if self.changed and self.changed[-1][1] >= len(self.sent):
                break
            await asyncio.sleep(0.01)

    def latencies_ms(self, base_len: int) -> list[float]:
        """Per key: send time to the first change that shows it."""
        out = []
        for index, sent in enumerate(self.sent):
            want = base_len + index + 1
            seen = next((t for t, n in self.changed if n >= want), None)
            if seen is not None:
                out.append(1000 * (seen - sent))
        return out


def _summary(
    tokens: Sequence[str], timeline: Timeline, done: float, cpu_s: float, keys: list[float] | None
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "absorbed_tok_s": round(len(tokens) / (done - timeline.first)),
        "fed_tok_s": round(len(tokens) / max(timeline.last - timeline.first, 1e-9)),
        "lag_ms": round(1000 * (done - timeline.last), 1),
        "ui_cpu_ms_per_1k_tok": round(1000 * cpu_s / len(tokens) * 1000, 1),
    }
    if keys is not None:
        ordered = sorted(keys)
        result["keys"] = len(keys)
        result["key_ms_median"] = round(statistics.median(ordered), 1) if keys else None
        result["key_ms_p95"] = round(ordered[int(0.95 * (len(ordered) - 1))], 1) if keys else None
    return result


async def _wait_until(condition: Callable[[], bool], timeout: float = 120.0) -> float:
    """Poll ``condition`` on the app's loop; the time it first held."""
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("the stream did not finish")
        await asyncio.sleep(0.002)
    return time.perf_counter()


# -- variant: the real app ----------------------------------------------------


async def run_mixchat(tokens: Sequence[str], rate: float, keys: bool) -> dict[str, Any]:
    """Stream ``tokens`` through MixchatApp; figures for one run."""
    engine = PacedEngine(tokens, rate)
    store = ConversationStore.open()
    app = MixchatApp(Settings(model="bench"), lambda _s: engine, store)
    typist = Typist(app)
    full = "".join(tokens)
    try:
        async with app.run_test(size=SIZE, message_hook=typist.hook) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            screen = app.chat_screen
            cpu = time.thread_time()
            await screen.send("go")
            prompt = app.query_one(PromptInput)
            prompt.focus()
            await pilot.pause()
            if keys:
                typist.start()
            done = await _wait_until(lambda: engine.timeline.last > 0 and not screen.generating)
            cpu = time.thread_time() - cpu
            await typist.stop()
            block = screen.query(AssistantBlock).last()
            assert block.source == full, "the reply was not shown in full"
            segments = getattr(block, "segments", None) or [block.markdown]
            assert neutralize(full).endswith(segments[-1].source)
            keys_ms = typist.latencies_ms(0) if keys else None
            return _summary(tokens, engine.timeline, done, cpu, keys_ms)
    finally:
        store.close()


# -- variant: Textual's plain MarkdownStream ----------------------------------


@dataclass
class _Chunk(TMessage):
    """New text waits in the buffer."""


@dataclass
class _End(TMessage):
    """The feeder is done."""


class BaselineApp(App[None]):
    """One Markdown widget fed through ``Markdown.get_stream``, plus the same input widget."""

    CSS_PATH = CSS_FILE

    def __init__(self, tokens: Sequence[str], rate: float) -> None:
        super().__init__()
        self.tokens = tokens
        self.rate = rate
        self.timeline = Timeline()
        self.finished = False
        self._buffer: list[str] = []
        self._lock = threading.Lock()
        self._posted = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="chat"):
            yield Markdown(open_links=False)
        yield PromptInput(id="input")

    def on_mount(self) -> None:
        self.query_one("#chat", VerticalScroll).anchor()
        self.stream = Markdown.get_stream(self.query_one(Markdown))

    def start(self) -> None:
        threading.Thread(target=self._feed, daemon=True).start()

    def _feed(self) -> None:
        for token in paced(self.tokens, self.rate, self.timeline):
            with self._lock:
                self._buffer.append(token)
                if self._posted:
                    continue
                self._posted = True
            self.post_message(_Chunk())
        self.post_message(_End())

    def _drain(self) -> str:
        with self._lock:
            text = "".join(self._buffer)
            self._buffer.clear()
            self._posted = False
        return neutralize(text)

    @on(_Chunk)
    async def on_chunk(self) -> None:
        await self.stream.write(self._drain())

    @on(_End)
    async def on_end(self) -> None:
        await self.stream.write(self._drain())
        await self.stream.stop()
        self.finished = True


async def run_baseline(tokens: Sequence[str], rate: float, keys: bool) -> dict[str, Any]:
    """Stream ``tokens`` into a bare Markdown widget; figures for one run."""
    app = BaselineApp(tokens, rate)
    typist = Typist(app)
    async with app.run_test(size=SIZE, message_hook=typist.hook) as pilot:
        app.query_one(PromptInput).focus()
        await pilot.pause()
        cpu = time.thread_time()
        app.start()
        if keys:
            typist.start()
        done = await _wait_until(lambda: app.finished)
        cpu = time.thread_time() - cpu
        await typist.stop()
        assert app.query_one(Markdown).source == neutralize("".join(tokens))
        keys_ms = typist.latencies_ms(0) if keys else None
        return _summary(tokens, app.timeline, done, cpu, keys_ms)


# -- main ---------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prose-tokens", type=int, default=6000)
    parser.add_argument("--code-chars", type=int, default=10_000)
    parser.add_argument("--variants", default="baseline,mixchat")
    args = parser.parse_args()

    os.environ["MIXCHAT_HOME"] = tempfile.mkdtemp(prefix="mixchat-bench-")
    workloads = {
        "prose": tokenize(prose_text(args.prose_tokens)),
        "code": tokenize(code_text(args.code_chars)),
    }
    runners = {"baseline": run_baseline, "mixchat": run_mixchat}
    variants = [v for v in args.variants.split(",") if v]
    results: dict[str, dict[str, Any]] = {v: {} for v in variants}
    for variant in variants:
        for name, tokens in workloads.items():
            target = TARGETS[name]
            for label, rate in (("target", target), ("4x", 4 * target), ("max", 0.0)):
                run = runners[variant](tokens, rate, keys=label == "target")
                results[variant][f"{name}@{label}"] = asyncio.run(run)
                print(variant, name, label, results[variant][f"{name}@{label}"], file=sys.stderr)

    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "textual": textual.__version__,
        },
        "workloads": {
            name: {"tokens": len(toks), "chars": sum(map(len, toks))}
            for name, toks in workloads.items()
        },
        "targets": {"prose_tok_s": TARGETS["prose"], "code_tok_s": TARGETS["code"]}
        | {"key_ms_median": KEY_TARGET_MS},
        "results": results,
    }
    if "baseline" in results and "mixchat" in results:
        base, mix = results["baseline"], results["mixchat"]
        report["ratio_vs_baseline"] = {
            "absorbed_tok_s": {
                case: round(mix[case]["absorbed_tok_s"] / base[case]["absorbed_tok_s"], 2)
                for case in mix
            },
            "key_ms_median": {
                case: round(mix[case]["key_ms_median"] / base[case]["key_ms_median"], 2)
                for case in mix
                if mix[case].get("key_ms_median") and base[case].get("key_ms_median")
            },
        }
    if "mixchat" in results:
        mix = results["mixchat"]
        report["meets_targets"] = (
            {
                # Fed faster than the target, the UI still absorbed at least the target rate...
                f"{name}_capacity": mix[f"{name}@4x"]["absorbed_tok_s"] >= TARGETS[name]
                for name in workloads
            }
            | {
                # ...and fed at the target rate it kept up (the tail lag costs under 5%).
                f"{name}_keeps_up": mix[f"{name}@target"]["absorbed_tok_s"] >= 0.95 * TARGETS[name]
                for name in workloads
            }
            | {
                "keys_median": all(
                    (mix[f"{name}@target"].get("key_ms_median") or 1e9) <= KEY_TARGET_MS
                    for name in workloads
                )
            }
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
