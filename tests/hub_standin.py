"""A local HTTP server standing in for the Hugging Face hub, for first-run tests.

It answers the calls huggingface_hub makes to download a model: the model-info API with
file sizes (``GET /api/models/<repo>?blobs=True``), and ``HEAD``/``GET`` of
``/<repo>/resolve/<revision>/<file>`` with ``ETag``, ``X-Repo-Commit`` and
``Content-Length`` headers and ``Range`` requests (``206 Partial Content``). It binds to
127.0.0.1 only, serves at most ``max_bytes`` in all, and every wait has a deadline.

Tests steer it: ``cut_after`` drops the connection after N bytes of a file (once),
``hold_after`` stops sending a file after N bytes until ``release()`` (``reached`` is set
when it gets there), ``ignore_range`` answers ranges with the whole file. ``requests``
records what was asked and ``sent`` how many bytes of each file went out.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

CHUNK = 256 * 1024
LFS_FROM = 1 << 20  # files this large are LFS files on the hub (etag: their sha256)
DEADLINE_S = 60.0  # the longest any hold waits


@dataclass
class RemoteFile:
    """A file of a stand-in repository: its bytes, or only a size (a file that must never
    be downloaded, e.g. Mixtral's 93 GB in a test that expects a refusal)."""

    size: int
    content: bytes | None = None
    path: Path | None = None

    def read(self, start: int) -> Iterator[bytes]:
        if self.content is not None:
            data = self.content[start:]
            for i in range(0, len(data), CHUNK):
                yield data[i : i + CHUNK]
        elif self.path is not None:
            with self.path.open("rb") as handle:
                handle.seek(start)
                while block := handle.read(CHUNK):
                    yield block
        else:
            raise AssertionError("this file was not meant to be downloaded")

    def sha256(self, name: str) -> str:
        digest = hashlib.sha256()
        if self.content is not None:
            digest.update(self.content)
        elif self.path is not None:
            digest.update(self.path.read_bytes())
        else:
            digest.update(f"{name}:{self.size}".encode())
        return digest.hexdigest()


@dataclass
class Request:
    method: str
    path: str
    range: str | None


@dataclass
class Repo:
    """A repository at one commit."""

    files: dict[str, RemoteFile]
    sha: str = "0123456789abcdef0123456789abcdef01234567"
    parameters: int | None = None  # the hub's safetensors count, when it reports one
    etags: dict[str, str] = field(default_factory=dict)

    def etag(self, name: str) -> str:
        if name not in self.etags:
            self.etags[name] = self.files[name].sha256(name)
        return self.etags[name]


def repo_from_dir(directory: Path, extra: dict[str, RemoteFile] | None = None) -> Repo:
    """A repository serving the files of ``directory`` (plus ``extra``)."""
    files = {
        p.name: RemoteFile(p.stat().st_size, path=p)
        for p in sorted(directory.iterdir())
        if p.is_file()
    }
    return Repo({**files, **(extra or {})})


class StandInHub:
    """The server; ``url`` is what ``HF_ENDPOINT`` should be."""

    def __init__(self, repos: dict[str, Repo], max_bytes: int = 512 << 20) -> None:
        self.repos = repos
        self.max_bytes = max_bytes
        self.total_sent = 0
        self.sent: dict[str, int] = {}
        self.requests: list[Request] = []
        self.cut_after: dict[str, int] = {}
        self.hold_after: dict[str, int] = {}
        self.reached: dict[str, threading.Event] = {}
        self.ignore_range = False
        self._release = threading.Event()
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30

            def log_message(self, *args: Any) -> None:
                return

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def do_GET(self) -> None:
                hub._serve(self, body=True)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                return  # a connection the test dropped on purpose, or the client gave up

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StandInHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def release(self) -> None:
        """Let held files go on."""
        self._release.set()

    def wait_reached(self, name: str, timeout: float = DEADLINE_S) -> bool:
        """Wait until file ``name`` is held (``hold_after``)."""
        with self._lock:
            event = self.reached.setdefault(name, threading.Event())
        return event.wait(timeout)

    def downloads(self, name: str) -> list[Request]:
        """The GET requests of file ``name``."""
        return [r for r in self.requests if r.method == "GET" and r.path.endswith("/" + name)]

    # -- answering ------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(handler.path).path)
        with self._lock:
            self.requests.append(Request(handler.command, path, handler.headers.get("Range")))
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            self._model_info(handler, match[1], body)
        elif match := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            self._resolve(handler, match[1], match[2], match[3], body)
        else:
            self._reply(handler, 404, b'{"error": "not found"}', body)

    def _reply(
        self, handler: BaseHTTPRequestHandler, status: int, data: bytes, body: bool, **headers: str
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            handler.send_header(key.replace("_", "-"), value)
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    def _model_info(self, handler: BaseHTTPRequestHandler, repo_id: str, body: bool) -> None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._reply(handler, 404, b'{"error": "Repository not found"}', body,
                        X_Error_Code="RepoNotFound")  # fmt: skip
            return
        siblings = []
        for name, remote in repo.files.items():
            entry: dict[str, Any] = {"rfilename": name, "size": remote.size}
            if remote.size >= LFS_FROM:
                entry["lfs"] = {"size": remote.size, "sha256": repo.etag(name), "pointerSize": 134}
                entry["blobId"] = hashlib.sha1(name.encode()).hexdigest()
            else:
                entry["blobId"] = repo.etag(name)
            siblings.append(entry)
        info: dict[str, Any] = {"id": repo_id, "modelId": repo_id, "sha": repo.sha,
                                "private": False, "siblings": siblings}  # fmt: skip
        if repo.parameters is not None:
            info["safetensors"] = {
                "parameters": {"BF16": repo.parameters},
                "total": repo.parameters,
            }
        self._reply(handler, 200, json.dumps(info).encode(), body)

    def _resolve(
        self, handler: BaseHTTPRequestHandler, repo_id: str, revision: str, name: str, body: bool
    ) -> None:
        repo = self.repos.get(repo_id)
        if repo is None or name not in repo.files or revision not in (repo.sha, "main"):
            self._reply(handler, 404, b'{"error": "Entry not found"}', body,
                        X_Error_Code="EntryNotFound")  # fmt: skip
            return
        remote = repo.files[name]
        start = 0
        wanted = handler.headers.get("Range")
        if wanted and not self.ignore_range:
            match = re.fullmatch(r"bytes=(\d+)-", wanted.strip())
            start = int(match[1]) if match else 0
        handler.send_response(206 if start else 200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(remote.size - start))
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("ETag", f'"{repo.etag(name)}"')
        handler.send_header("X-Repo-Commit", repo.sha)
        if remote.size >= LFS_FROM:
            handler.send_header("X-Linked-Etag", f'"{repo.etag(name)}"')
            handler.send_header("X-Linked-Size", str(remote.size))
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{remote.size - 1}/{remote.size}")
        handler.end_headers()
        if body:
            self._send_file(handler, name, remote, start)

    def _count(self, name: str, size: int) -> None:
        with self._lock:
            if self.total_sent + size > self.max_bytes:
                raise AssertionError("the stand-in hub's byte budget is spent")
            self.total_sent += size
            self.sent[name] = self.sent.get(name, 0) + size

    def _send_file(
        self, handler: BaseHTTPRequestHandler, name: str, remote: RemoteFile, start: int
    ) -> None:
        position = start
        cut = self.cut_after.pop(name, None)
        hold = self.hold_after.get(name)
        for block in remote.read(start):
            if cut is not None and position + len(block) > cut:
                block = block[: max(0, cut - position)]
            if hold is not None and position + len(block) >= hold > position:
                block = block[: hold - position]
            self._count(name, len(block))
            handler.wfile.write(block)
            position += len(block)
            if cut is not None and position >= cut:
                handler.wfile.flush()
                handler.close_connection = True
                handler.connection.shutdown(2)  # mid-body: the client sees a dropped connection
                return
            if hold is not None and position == hold:
                handler.wfile.flush()
                with self._lock:
                    self.reached.setdefault(name, threading.Event()).set()
                if not self._release.wait(DEADLINE_S):
                    raise AssertionError("a held download was never released")
                for more in remote.read(position):
                    self._count(name, len(more))
                    handler.wfile.write(more)
                return


# -- fixtures' helpers --------------------------------------------------------------------


def use_hub(monkeypatch: Any, hub: StandInHub, home: Path) -> Path:
    """Point huggingface_hub (already imported or not) at ``hub`` and a cache under
    ``home``, online (the test run is offline by default). Returns the hub cache."""
    from huggingface_hub import constants

    cache = home / "hf" / "hub"
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "hf" / "token"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / "hf" / "agents.json"))
    return cache


def hub_env(hub: StandInHub, home: Path) -> dict[str, str]:
    """The environment of a ``mixchat`` process that downloads from ``hub``."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(home / "hf"),
        HF_HUB_CACHE=str(home / "hf" / "hub"),
        HF_HUB_OFFLINE="0",
        TRANSFORMERS_OFFLINE="0",
    )
    return env


def sharded_copy(model_dir: Path, out: Path, shards: int = 2) -> Path:
    """``model_dir`` with its weights split into ``shards`` safetensors files and an index,
    as the hub's Mixtral is (the config and tokenizer files copied as they are)."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    for path in model_dir.iterdir():
        if path.is_file() and path.suffix != ".safetensors":
            shutil.copy(path, out / path.name)
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    # Biggest first, dealt out in turn, so the shards come out about the same size.
    names = sorted(tensors, key=lambda k: -tensors[k].numel())
    weight_map: dict[str, str] = {}
    total = 0
    for number in range(shards):
        file = f"model-{number + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k] for k in names[number::shards]}
        save_file(part, str(out / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
        total += sum(t.numel() * t.element_size() for t in part.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    return out


def mixtral_repo() -> Repo:
    """Mixtral-8x7B-Instruct-v0.1 as the hub lists it: the real config and file sizes
    (19 safetensors shards, the same weights again as 8 pickle ``consolidated.*.pt``), with
    no bytes behind the weights: a test that expects a refusal must not download them."""
    from mixchat.engine.local.sizes import MIXTRAL_8X7B, MIXTRAL_8X7B_PARAMETERS

    config = {**MIXTRAL_8X7B, "architectures": ["MixtralForCausalLM"], "torch_dtype": "bfloat16"}
    weight_bytes = MIXTRAL_8X7B_PARAMETERS * 2
    shards = [f"model-{i:05d}-of-00019.safetensors" for i in range(1, 20)]
    index = {"metadata": {"total_size": weight_bytes},
             "weight_map": {f"tensor.{i}": name for i, name in enumerate(shards)}}  # fmt: skip
    files = {
        "config.json": RemoteFile(0, content=json.dumps(config).encode()),
        "model.safetensors.index.json": RemoteFile(0, content=json.dumps(index).encode()),
        **{name: RemoteFile(weight_bytes // 19) for name in shards},
        **{f"consolidated.{i:02d}.pt": RemoteFile(weight_bytes // 8) for i in range(8)},
        "tokenizer.json": RemoteFile(1_795_303),
        "tokenizer.model": RemoteFile(493_443),
        "tokenizer_config.json": RemoteFile(1_466),
    }
    for remote in files.values():
        if remote.content is not None:
            remote.size = len(remote.content)
    return Repo(files, parameters=MIXTRAL_8X7B_PARAMETERS)
