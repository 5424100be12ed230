"""Find a model on disk: a local directory, or a hub id in (or downloaded to) the HF cache.

A hub id not yet in the cache is checked before anything is downloaded: the hub's API
lists the files and their sizes, and the download is refused (``DownloadRefused``, one
line saying what would work) when the model would not fit this machine in the mode chosen
or the files would not fit the disk. Only the files a load uses are fetched: config,
tokenizer and the safetensors shards the index names (never pickle ``*.pt`` or a second
``consolidated*`` copy). Imports huggingface_hub only when a hub id needs resolving.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mixchat.config import DEFAULTS, Settings
from mixchat.engine.base import EngineError
from mixchat.engine.local.progress import ProgressCallback

# What a chat needs from a model repo when the hub cannot be asked which files exist.
ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "tokenizer.model",
    "*.jinja",
    "*.txt",
]


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or os.sep * 2 in model or model.count("/") > 1


def resolve_model_dir(model: str, progress: ProgressCallback | None = None) -> Path:
    """Return a local directory holding ``model``'s config, tokenizer and weights.

    A path must exist; a hub id is taken from the local cache, or checked and downloaded
    when the hub can be reached. Raises ``EngineError`` with a one-line hint otherwise.
    """
    return ModelLocator(replace(DEFAULTS, model=model)).directory(progress=progress)


def _local_dir(model: str) -> Path | None:
    candidate = Path(model).expanduser()
    if candidate.is_dir():
        return candidate.resolve()
    if candidate.exists():
        raise EngineError(f"--model {model}: not a directory")
    if _looks_like_path(model):
        raise EngineError(f"--model {model}: no such directory")
    return None


@dataclass
class _HubPlan:
    listing: Any  # hub.Listing
    small: list[str]
    weights: list[str]


class ModelLocator:
    """Finds one model's directory for an engine: a local directory as it is; a hub id
    from the cache when complete there, else checked (fit, disk) and downloaded.
    ``cancel`` stops a download in progress (the engine sets it when it closes)."""

    def __init__(self, settings: Settings, cancel: threading.Event | None = None) -> None:
        self.settings = settings
        self.cancel = cancel or threading.Event()
        self._plan: _HubPlan | None = None

    def directory(self, *, weights: bool = True, progress: ProgressCallback | None = None) -> Path:
        """The model's directory; ``weights=False`` fetches config and tokenizer only (the
        checks still cover the weights, so a refusal comes before any byte)."""
        local = _local_dir(self.settings.model)
        if local is not None:
            return local
        return self._from_hub(self.settings.model, weights, progress)

    def _from_hub(self, repo_id: str, weights: bool, progress: ProgressCallback | None) -> Path:
        from mixchat.engine import hub

        try:
            plan = self._hub_plan(repo_id)
        except _Unreachable:
            return _from_cache(repo_id, weights)
        cache = hub.cache_dir()
        names = plan.small + (plan.weights if weights else [])
        state = hub.cache_state(plan.listing, names, cache)
        missing = [name for name in names if name not in state.complete]
        if missing:
            with _hub_errors(repo_id, downloading=True):
                hub.download(plan.listing, missing, cache, progress, self.cancel)
        hub.record_branch(plan.listing, cache)
        return hub.snapshot_dir(plan.listing, cache)

    def _hub_plan(self, repo_id: str) -> _HubPlan:
        """The repository's listing, the files a load uses, and the checks (once)."""
        if self._plan is not None:
            return self._plan
        from mixchat.engine import firstrun, hub
        from mixchat.engine.local import hardware

        if hub.offline():
            raise _Unreachable
        with _hub_errors(repo_id):
            listing = hub.fetch_listing(repo_id)
            cache = hub.cache_dir()
            small = hub.small_files(listing)
            weights = hub.weight_files(listing, _index(listing, cache))
            state = hub.cache_state(listing, small + weights, cache)
            missing = [n for n in small + weights if n not in state.complete]
            if missing:
                if "config.json" not in listing.files:
                    raise EngineError(f"{repo_id}: no config.json on the hub; is it a model?")
                sizes = {name: listing.files[name].size for name in small + weights}
                need = sum(sizes[name] for name in missing)
                config = _json_file(listing, cache, "config.json")
                weight_bytes = sum(sizes[name] for name in weights)
                facts = firstrun.model_facts(config, listing.parameters, weight_bytes)
                firstrun.check_fit(self.settings, facts, hardware.probe(), weight_bytes)
                firstrun.check_disk(
                    repo_id,
                    cache,
                    need,
                    sum(sizes.values()) - need,
                    state.partial_files,
                    state.partial_bytes,
                )
        self._plan = _HubPlan(listing, small, weights)
        return self._plan


def _index(listing: Any, cache: Path) -> dict[str, Any] | None:
    """The shard index, if the repository has one."""
    from mixchat.engine import hub

    return _json_file(listing, cache, hub.INDEX) if hub.INDEX in listing.files else None


def _json_file(listing: Any, cache: Path, name: str) -> dict[str, Any]:
    """A small JSON file of the repository: the cache's copy when it is there, else read
    from the hub (into memory)."""
    from mixchat.engine import hub

    if name in hub.cache_state(listing, [name], cache).complete:
        try:
            data = json.loads((hub.snapshot_dir(listing, cache) / name).read_text())
            if isinstance(data, dict):
                return data
        except (OSError, ValueError):
            pass  # read it from the hub instead
    return hub.read_remote_json(listing, name)


class _Unreachable(Exception):
    """The hub cannot be asked (offline mode, no connection): use the cache."""


@contextmanager
def _hub_errors(repo: str, downloading: bool = False) -> Iterator[None]:
    """Turn huggingface_hub's errors into one-line ``EngineError`` messages. Before a
    download, the hub out of reach becomes ``_Unreachable`` (the cache may still have the
    model); during one, an error that says the finished files are kept."""
    from mixchat.engine.hub import DownloadCancelled

    try:
        yield
    except (EngineError, _Unreachable):
        raise
    except DownloadCancelled:
        raise EngineError(f"the download of {repo} was stopped; {KEPT}") from None
    except Exception as exc:
        name = type(exc).__name__
        if name == "HFValidationError":
            raise EngineError(f"--model {repo}: not a directory and not a valid hub id") from None
        if "Gated" in name or _status(exc) in (401, 403):
            raise EngineError(
                f"model {repo!r} is gated: accept its licence on the hub and log in with "
                "`hf auth login`, or pass --model /path/to/a/local/directory"
            ) from None
        if "RepositoryNotFound" in name or _status(exc) == 404:
            raise EngineError(f"model {repo!r} does not exist on the hub") from None
        network = _is_network(exc)
        if downloading or not network:
            reason = " ".join(str(exc).split()) or name
            kept = f"; {KEPT}" if downloading else ""
            raise EngineError(f"downloading {repo} failed: {reason[:300]}{kept}") from None
        raise _Unreachable from exc


KEPT = (
    "the files it finished are kept in the Hugging Face cache and the next run downloads "
    "the rest (a file cut off part-way starts again from its beginning)"
)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return int(status) if isinstance(status, int) else None


def _is_network(exc: BaseException) -> bool:
    """A connection problem or a hub error (huggingface_hub's and its HTTP client's own
    types), as opposed to a local one such as a full disk."""
    return type(exc).__module__.startswith(("httpx", "httpcore", "huggingface_hub"))


def _from_cache(repo_id: str, weights: bool) -> Path:
    """The cached snapshot of ``repo_id`` when the hub cannot be asked."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError as exc:  # pragma: no cover - a dependency of transformers
        raise EngineError(f"huggingface_hub is not installed: {exc}") from None
    from mixchat.engine import hub

    hint = (
        f"model {repo_id!r} is not in the local Hugging Face cache and the hub cannot be "
        f"reached; download it on a connected machine with `hf download {repo_id}` "
        "or pass --model /path/to/a/local/model/directory"
    )
    try:
        path = Path(
            snapshot_download(
                repo_id=repo_id,
                allow_patterns=ALLOW_PATTERNS,
                cache_dir=hub.cache_dir(),
                local_files_only=True,
            )
        )
    except HFValidationError:
        raise EngineError(f"--model {repo_id}: not a directory and not a valid hub id") from None
    except Exception:  # not cached, or cached only in part (IncompleteSnapshotError)
        raise EngineError(hint) from None
    if weights:
        lacking = missing_weights(path)
        if lacking:
            raise EngineError(
                f"the download of {repo_id} is incomplete ({lacking}); run mixchat again "
                "where the hub can be reached to finish it, or `hf download "
                f"{repo_id}`"
            )
    return path


def missing_weights(model_dir: Path) -> str:
    """What a directory lacks of its weights ("3 of 19 weight files missing"), "" if none."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return ""  # loading says what is wrong with the index
        absent = [name for name in names if not (model_dir / name).is_file()]
        return f"{len(absent)} of {len(names)} weight files missing" if absent else ""
    return "" if any(model_dir.glob("*.safetensors")) else "no weight files"


def read_config(model_dir: Path) -> dict[str, Any]:
    """The model's ``config.json``; ``EngineError`` when missing or unreadable."""
    path = model_dir / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EngineError(f"{model_dir}: no config.json; is this a model directory?") from None
    except (OSError, ValueError) as exc:
        raise EngineError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise EngineError(f"{path}: not a JSON object")
    return data


def check_weights(model_dir: Path) -> list[Path]:
    """The safetensors shards of a model; refuses pickle-only checkpoints."""
    shards = sorted(model_dir.glob("*.safetensors"))
    if shards:
        return shards
    if any(model_dir.glob("*.bin")) or any(model_dir.glob("*.pt")):
        raise EngineError(
            f"{model_dir}: only pickle weights (.bin/.pt), which can run arbitrary code; "
            "mixchat loads safetensors only (convert them, or use a safetensors release)"
        )
    raise EngineError(f"{model_dir}: no model weights (*.safetensors) found")
