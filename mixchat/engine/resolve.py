"""Find a model on disk: a local directory, or a hub id in (or downloaded to) the HF cache.

Imports huggingface_hub only when a hub id needs resolving.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mixchat.engine.base import EngineError, LoadProgress
from mixchat.engine.local.progress import ProgressCallback

# What a chat needs from a model repo; pickle weights are never fetched.
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

    A path must exist; a hub id is taken from the local cache, or downloaded when the
    hub can be reached. Raises ``EngineError`` with a one-line hint otherwise.
    """
    candidate = Path(model).expanduser()
    if candidate.is_dir():
        return candidate.resolve()
    if candidate.exists():
        raise EngineError(f"--model {model}: not a directory")
    if _looks_like_path(model):
        raise EngineError(f"--model {model}: no such directory")
    return _from_hub(model, progress)


def _from_hub(repo_id: str, progress: ProgressCallback | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError as exc:  # pragma: no cover - a dependency of transformers
        raise EngineError(f"huggingface_hub is not installed: {exc}") from None

    hint = (
        f"model {repo_id!r} is not in the local Hugging Face cache and the hub cannot be "
        f"reached; download it on a connected machine with `hf download {repo_id}` "
        "or pass --model /path/to/a/local/model/directory"
    )
    kwargs: dict[str, Any] = {"repo_id": repo_id, "allow_patterns": ALLOW_PATTERNS}
    if progress is not None:
        kwargs["tqdm_class"] = _download_progress_class(progress)
    try:
        path = snapshot_download(**kwargs)
    except HFValidationError:
        raise EngineError(f"--model {repo_id}: not a directory and not a valid hub id") from None
    except Exception as exc:  # offline, not cached, gated, 404...
        name = type(exc).__name__
        if "Gated" in name or "401" in str(exc) or "403" in str(exc):
            raise EngineError(
                f"model {repo_id!r} is gated: accept its licence on the hub and log in with "
                "`hf auth login`, or pass --model /path/to/a/local/directory"
            ) from None
        if "RepositoryNotFound" in name or "404" in str(exc):
            if _hub_is_offline():
                raise EngineError(hint) from None
            raise EngineError(f"model {repo_id!r} does not exist on the hub") from None
        raise EngineError(hint) from None
    return Path(path)


def _hub_is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _download_progress_class(progress: ProgressCallback) -> type:
    from tqdm.auto import tqdm

    class DownloadProgress(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._done = 0

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            progress(LoadProgress("download", self._done, int(self.total or 0)))
            return None

    return DownloadProgress


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
