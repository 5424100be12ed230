"""The hub side of a first run: what a repository holds (file sizes from the hub's API),
which of its files a load uses, what the Hugging Face cache has already, and downloading
the rest with progress in bytes and a way to stop.

``HF_ENDPOINT`` is read when called (not when huggingface_hub was imported), so a stand-in
hub works in tests. huggingface_hub is imported inside functions; nothing here imports torch.

What huggingface_hub (2.x, HTTP downloads) keeps when a download stops: every finished file
(its blob and snapshot link). A file cut off part-way is written to a temporary
``blobs/<etag>.<random>.incomplete`` that it deletes when the download fails or is stopped
(a kill leaves it behind, and no later run reuses it): the next run downloads that file
again from its first byte. Within one run a dropped connection is retried up to five times,
each retry asking for the rest only (an HTTP ``Range`` request).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from mixchat.engine.base import EngineError, LoadProgress
from mixchat.engine.local.progress import ProgressCallback

# What a chat needs besides the weights (top-level files only); pickle weights never.
SMALL_PATTERNS = ("*.json", "tokenizer.model", "*.jinja", "*.txt")
INDEX = "model.safetensors.index.json"
# Files downloaded at once. Each file cut off by a stop starts again from zero next time,
# so more parallel files lose more on Ctrl-C; two streams fill most home connections.
DOWNLOAD_WORKERS = 2
MAX_JSON_BYTES = 16 << 20  # config.json or the shard index, read into memory
SPEED_WINDOW_S = 10.0  # the speed shown is the average over the last seconds
EMIT_EVERY_S = 0.5


class DownloadCancelled(Exception):
    """The download was stopped (the engine closed: Ctrl-C, quitting the app)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repository."""

    name: str
    size: int
    etag: str | None  # its blob's name in the cache: the LFS sha256, else the git blob id


@dataclass(frozen=True)
class Listing:
    """A repository at one commit, from the hub's model-info API."""

    repo_id: str
    sha: str
    files: dict[str, RemoteFile]
    parameters: int | None = None  # the hub's own count over the safetensors files


def endpoint() -> str | None:
    """The hub's address: ``HF_ENDPOINT`` when set (None: huggingface_hub's default)."""
    value = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return value or None


def cache_dir() -> Path:
    """The Hugging Face hub cache (``HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def offline() -> bool:
    """Whether huggingface_hub is told not to use the network (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def fetch_listing(repo_id: str) -> Listing:
    """The repository's files and sizes at its default branch (one API call). Raises
    huggingface_hub's errors (not found, gated, offline, connection)."""
    from huggingface_hub import HfApi

    info = HfApi(endpoint=endpoint()).model_info(repo_id, files_metadata=True)
    if not info.sha:
        raise EngineError(f"the hub gave no commit for {repo_id!r}")
    files = {}
    for sibling in info.siblings or []:
        lfs = sibling.lfs
        size = sibling.size if sibling.size is not None else (lfs.size if lfs else 0)
        etag = lfs.sha256 if lfs is not None else sibling.blob_id
        files[sibling.rfilename] = RemoteFile(sibling.rfilename, int(size or 0), etag)
    parameters = info.safetensors.total if info.safetensors is not None else None
    return Listing(repo_id, info.sha, files, parameters)


def read_remote_json(listing: Listing, name: str) -> dict[str, Any]:
    """A small JSON file of the repository (``config.json``, the shard index), read into
    memory: nothing is written to the cache before the checks pass."""
    import json

    from huggingface_hub import constants, get_session, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

    if listing.files[name].size > MAX_JSON_BYTES:
        raise EngineError(f"{listing.repo_id}: {name} is too large to be a model's {name}")
    url = hf_hub_url(listing.repo_id, name, revision=listing.sha, endpoint=endpoint())
    response = get_session().get(
        url,
        headers=build_hf_headers(),
        timeout=constants.HF_HUB_ETAG_TIMEOUT,
        follow_redirects=True,
    )
    hf_raise_for_status(response)
    try:
        data = json.loads(response.content[:MAX_JSON_BYTES])
    except ValueError:
        raise EngineError(f"{listing.repo_id}: {name} is not valid JSON") from None
    if not isinstance(data, dict):
        raise EngineError(f"{listing.repo_id}: {name} is not a JSON object")
    return data


def small_files(listing: Listing) -> list[str]:
    """Config, tokenizer and template files at the top of the repository."""
    return sorted(
        name
        for name in listing.files
        if "/" not in name and any(fnmatch(name, pattern) for pattern in SMALL_PATTERNS)
    )


def weight_files(listing: Listing, index: dict[str, Any] | None) -> list[str]:
    """The safetensors files a load reads: those the shard index names, else
    ``model.safetensors``, else the top-level ``*.safetensors`` that are not a second copy
    in another layout (Mistral's ``consolidated*``); pickle files (``*.pt``, ``*.bin``)
    never. Raises ``EngineError`` when there are none."""
    if index is not None:
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise EngineError(f"{listing.repo_id}: {INDEX} has no weight_map")
        names = sorted({str(name) for name in weight_map.values()})
        absent = [name for name in names if name not in listing.files]
        if absent:
            raise EngineError(f"{listing.repo_id}: {INDEX} names {absent[0]}, which it lacks")
        return names
    if "model.safetensors" in listing.files:
        return ["model.safetensors"]
    names = sorted(
        name
        for name in listing.files
        if "/" not in name and name.endswith(".safetensors") and not name.startswith("consolidated")
    )
    if names:
        return names
    if any(name.endswith((".bin", ".pt", ".pth")) for name in listing.files):
        raise EngineError(
            f"{listing.repo_id}: only pickle weights (.bin/.pt), which can run arbitrary code; "
            "mixchat loads safetensors only (use a safetensors release)"
        )
    raise EngineError(f"{listing.repo_id}: no model weights (*.safetensors) on the hub")


def storage_dir(repo_id: str, cache: Path) -> Path:
    """The repository's folder in the cache (``models--org--name``)."""
    return cache / ("models--" + repo_id.replace("/", "--"))


def snapshot_dir(listing: Listing, cache: Path) -> Path:
    """Where the files of ``listing``'s commit appear (links into ``blobs``)."""
    return storage_dir(listing.repo_id, cache) / "snapshots" / listing.sha


@dataclass
class CacheState:
    """What the cache holds of some of a repository's files."""

    complete: set[str] = field(default_factory=set)
    partial_files: int = 0  # temporary *.incomplete files an interrupted run left
    partial_bytes: int = 0


def cache_state(listing: Listing, names: Iterable[str], cache: Path) -> CacheState:
    """Which of ``names`` are complete in the cache (linked in this commit's snapshot, or
    their blob is there with the right size: huggingface_hub then only links it), and what
    partial downloads lie in the repository's ``blobs``."""
    state = CacheState()
    storage = storage_dir(listing.repo_id, cache)
    snapshot = snapshot_dir(listing, cache)
    for name in names:
        remote = listing.files[name]
        blob = storage / "blobs" / remote.etag if remote.etag else None
        if (snapshot / name).is_file() or (
            blob is not None and blob.is_file() and blob.stat().st_size == remote.size
        ):
            state.complete.add(name)
    with contextlib.suppress(OSError):
        for partial in (storage / "blobs").glob("*.incomplete"):
            with contextlib.suppress(OSError):
                state.partial_bytes += partial.stat().st_size
                state.partial_files += 1
    return state


def record_branch(listing: Listing, cache: Path, branch: str = "main") -> None:
    """Point ``refs/<branch>`` at the downloaded commit, as huggingface_hub does, so that a
    later run without the hub finds the snapshot."""
    refs = storage_dir(listing.repo_id, cache) / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    target = refs / branch
    with contextlib.suppress(OSError):
        if target.read_text() == listing.sha:
            return
    temporary = refs / f".{branch}.{os.getpid()}.tmp"
    temporary.write_text(listing.sha)
    os.replace(temporary, target)


def _speed_text(rate: float, left: int) -> str:
    speed = f"{rate / 1e6:.1f} MB/s" if rate < 1e9 else f"{rate / 1e9:.2f} GB/s"
    if rate <= 0:
        return speed
    seconds = left / rate
    if seconds < 60:
        eta = f"{seconds:.0f} s left"
    elif seconds < 3600:
        eta = f"{seconds / 60:.0f} min left"
    else:
        eta = f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min left"
    return f"{speed}, {eta}"


class DownloadMeter:
    """Counts the bytes of several files downloading at once and reports them as one
    ``download`` stage: ``done`` never goes back and ends at ``total``; the detail says
    the speed over the last seconds, the time left and the file being fetched. Checks the
    stop events on every chunk huggingface_hub writes (raising ``DownloadCancelled``)."""

    def __init__(
        self,
        report: ProgressCallback | None,
        total: int,
        stops: tuple[threading.Event, ...],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._report = report
        self.total = total
        self._stops = stops
        self._clock = clock
        self._lock = threading.Lock()
        self._finished = 0  # bytes of files done
        self._current: dict[str, int] = {}  # bytes written of files under way
        self._shown = -1
        self._shown_at = -1e9
        self._samples: deque[tuple[float, int]] = deque()
        self._name = ""

    @property
    def done(self) -> int:
        """Bytes downloaded so far (files done and parts of those under way)."""
        return self._finished + sum(self._current.values())

    def start(self) -> None:
        """Say the stage began (``0/total``)."""
        with self._lock:
            self._emit(force=True)

    def check(self) -> None:
        """Raise ``DownloadCancelled`` if asked to stop."""
        if any(stop.is_set() for stop in self._stops):
            raise DownloadCancelled

    def advance(self, name: str, step: int) -> None:
        """``step`` more bytes of ``name`` were written (negative: huggingface_hub threw
        some away, the server having ignored a ``Range``)."""
        self.check()
        with self._lock:
            self._current[name] = max(0, self._current.get(name, 0) + int(step))
            self._name = name
            self._emit()

    def finished(self, name: str, size: int) -> None:
        """``name`` is complete (``size`` bytes), downloaded now or found in the cache."""
        with self._lock:
            self._current.pop(name, None)
            self._finished += size
            self._emit(force=self._finished >= self.total)

    def _emit(self, force: bool = False) -> None:
        now = self._clock()
        done = min(self.total, self.done)
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > SPEED_WINDOW_S:
            self._samples.popleft()
        if self._report is None or done <= self._shown:
            return  # never backwards, never the same figure twice
        step = done - self._shown >= max(1, self.total // 100)
        if not (force or step or done == self.total or now - self._shown_at >= EMIT_EVERY_S):
            return
        self._shown, self._shown_at = done, now
        first_time, first_done = self._samples[0]
        rate = (done - first_done) / (now - first_time) if now > first_time else 0.0
        parts = [_speed_text(rate, self.total - done)] if done < self.total and rate > 0 else []
        if self._name and done < self.total:
            parts.append(self._name)
        self._report(LoadProgress("download", done, self.total, " · ".join(parts)))

    def bar_class(self, name: str) -> type:
        """A stand-in for tqdm that huggingface_hub's ``hf_hub_download`` feeds (plain
        HTTP and Xet alike): bytes written go to this meter under ``name``."""
        meter = self

        class Bar:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self.total = kwargs.get("total")
                self.n = 0
                initial = int(kwargs.get("initial") or 0)
                if initial:
                    meter.advance(name, initial)

            def update(self, n: float | None = 1) -> None:
                self.n += int(n or 0)
                meter.advance(name, int(n or 0))

            def update_transfer(self, n: float | None = 1) -> None:
                meter.check()  # network bytes; progress counts bytes written

            def __enter__(self) -> Bar:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def __getattr__(self, attribute: str) -> Callable[..., None]:
                return lambda *args, **kwargs: None  # close, refresh, set_postfix_str, ...

        return Bar


def download(
    listing: Listing,
    names: list[str],
    cache: Path,
    progress: ProgressCallback | None,
    cancel: threading.Event,
    workers: int = DOWNLOAD_WORKERS,
) -> None:
    """Download ``names`` of ``listing``'s commit into the cache, ``workers`` files at a
    time, reporting one ``download`` stage in bytes. ``cancel`` (or an error in another
    file) stops every file at its next chunk. Raises huggingface_hub's errors,
    ``DownloadCancelled`` or ``OSError``."""
    from huggingface_hub import hf_hub_download

    stop = threading.Event()
    meter = DownloadMeter(progress, sum(listing.files[n].size for n in names), (cancel, stop))
    meter.start()

    def fetch(name: str) -> None:
        meter.check()
        hf_hub_download(
            listing.repo_id,
            name,
            revision=listing.sha,
            cache_dir=cache,
            endpoint=endpoint(),
            tqdm_class=meter.bar_class(name),
        )
        meter.finished(name, listing.files[name].size)

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mixchat-download")
    try:
        futures = [pool.submit(fetch, name) for name in names]
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            error = future.exception() if future.done() else None
            if error is not None:
                raise error
    except BaseException:
        stop.set()  # the others stop at their next chunk; their partial files are removed
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
