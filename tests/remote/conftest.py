"""Servers for the remote engine tests.

``served``: a real ``transformers serve`` process on 127.0.0.1 serving the tiny Mixtral
(started once per session, stopped at the end). ``stub``: a small in-process
OpenAI-compatible server for the failures a real server will not produce on demand
(401, 404 in vLLM's format, 429, errors and drops mid-stream, malformed events, silence).
``hostile``: a scripted server for attacks and breakage (huge lines and bodies, endless
and dripping streams, malformed fields, echoed keys, resets, retries), bounded in bytes
and time; see ``hostile.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mixchat.config import Settings
from mixchat.engine.remote import RemoteEngine
from tests.remote.hostile import HostileServer, running

READY_TIMEOUT_S = 120.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    """A running server: its URL and the model name to ask it for."""

    url: str
    model: str

    def engine(self, **kwargs: object) -> RemoteEngine:
        return RemoteEngine(Settings(model=self.model), self.url, **kwargs)  # type: ignore[arg-type]


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited with {proc.returncode}:\n{log.read_text()}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/health", timeout=1) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"transformers serve not ready in {READY_TIMEOUT_S:g}s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def served(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``transformers serve`` on a free port; requests name the tiny model by its path."""
    exe = Path(sys.executable).parent / "transformers"
    if not exe.exists() and shutil.which("transformers") is None:
        pytest.skip("transformers CLI not installed")
    work = tmp_path_factory.mktemp("serve")
    cache = work / "hf-cache"  # /v1/models scans the hub cache and fails if it is missing
    cache.mkdir()
    log = work / "serve.log"
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "OMP_NUM_THREADS": "1",  # CI has 2 cores; keep one for the test process
    }
    cmd = [str(exe) if exe.exists() else "transformers", "serve"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log)
        yield Served(url, str(tiny_model))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _chunk(content: str | None = None, finish: str | None = None, usage: dict | None = None) -> str:
    """One SSE event; with ``usage`` it is the final usage-only chunk (empty choices)."""
    delta = {"content": content} if content is not None else {}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body: dict[str, object] = {
        "id": "stub",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "ok",
        "choices": [] if usage is not None else [choice],
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"


class StubHandler(BaseHTTPRequestHandler):
    """Behaviour is picked by the requested model name (see ``do_POST``)."""

    server: StubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def _json(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        self.server.auth_headers.append(self.headers.get("Authorization", ""))
        if (
            self.server.key is None
            or self.headers.get("Authorization") == f"Bearer {self.server.key}"
        ):
            return True
        self._json(401, {"error": {"message": "Unauthorized", "type": "auth", "code": 401}})
        return False

    def do_GET(self) -> None:
        if not self._authorized():
            return
        # vLLM reports each model's context length as max_model_len.
        models = [
            {"id": "ok", "object": "model"},
            {"id": "short", "object": "model", "max_model_len": 256},
        ]
        self._json(200, {"object": "list", "data": models})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        if not self._authorized():
            return
        model = body["model"]
        if model == "busy":
            self._json(429, {"error": {"message": "rate limited", "code": 429}})
            return
        if model not in ("ok", "short") and not model.startswith("stream-"):
            message = f"The model `{model}` does not exist."
            self._json(404, {"error": {"message": message, "type": "NotFoundError", "code": 404}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        # A declared length the stream never reaches: closing early is a broken body.
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        for piece in ("Hello", " there"):
            self.wfile.write(_chunk(piece).encode())
            self.wfile.flush()
        if model == "stream-error":  # vLLM reports an engine failure as an error event
            self.wfile.write(b'data: {"error": {"message": "engine\\ncrashed", "code": 500}}\n\n')
        elif model == "stream-garbage":
            self.wfile.write(b"data: {this is not json\n\n")
        elif model == "stream-silent":
            self.server.release.wait(10)
        elif model == "stream-drop":
            pass  # close the connection mid-reply
        else:
            usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
            self.wfile.write(_chunk(finish="stop").encode())
            self.wfile.write(_chunk(usage=usage).encode())
            self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


class StubServer(ThreadingHTTPServer):
    """Records requests and Authorization headers; ``release`` ends a silent stream."""

    daemon_threads = True

    def __init__(self, key: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), StubHandler)
        self.key = key
        self.requests: list[dict] = []
        self.auth_headers: list[str] = []
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def stub() -> Iterator[StubServer]:
    """An in-process OpenAI-compatible stub, stopped after the test."""
    server = StubServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    """A hostile OpenAI-compatible server (tests/remote/hostile.py), stopped after the test."""
    with running() as server:
        yield server
