"""A first run that checks before it downloads (issue 14, section 2), against a local HTTP
server standing in for the hub: only the files a load uses, progress in bytes, refusals
(disk, fit) before a byte is downloaded, and what a stopped or dropped download keeps."""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mixchat.config import DEFAULTS
from mixchat.engine.base import DownloadRefused, EngineError, LoadProgress
from mixchat.engine.local import hardware
from mixchat.engine.local.sizes import GIB
from mixchat.engine.resolve import ModelLocator
from tests.hub_standin import (
    RemoteFile,
    Repo,
    StandInHub,
    mixtral_repo,
    repo_from_dir,
    sharded_copy,
    use_hub,
)

SHARD_1 = "model-00001-of-00002.safetensors"
SHARD_2 = "model-00002-of-00002.safetensors"
DECOYS = ("consolidated.00.pt", "consolidated.safetensors", "pytorch_model.bin", "README.md")


@pytest.fixture(scope="module")
def sharded(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sharded_copy(tiny_model, tmp_path_factory.mktemp("sharded"))


def decoyed(directory: Path) -> Repo:
    """The model's files, plus what a load must never fetch: pickle weights, Mistral's
    ``consolidated`` copy, a README (served with no bytes: fetching one fails the test)."""
    return repo_from_dir(directory, {name: RemoteFile(4096) for name in DECOYS})


@pytest.fixture
def hub(
    sharded: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StandInHub]:
    server = StandInHub(
        {
            "test/sharded": decoyed(sharded),
            "test/single": repo_from_dir(tiny_model),
            "mistralai/Mixtral-8x7B-Instruct-v0.1": mixtral_repo(),
        }
    ).start()
    use_hub(monkeypatch, server, tmp_path)
    yield server
    server.stop()


def cache(tmp_path: Path) -> Path:
    return tmp_path / "hf" / "hub"


def locator(model: str, **settings: object) -> ModelLocator:
    return ModelLocator(replace(DEFAULTS, model=model, **settings))  # type: ignore[arg-type]


def fetched(hub: StandInHub) -> set[str]:
    """Files whose bytes were asked for (resolve GETs)."""
    return {
        r.path.rsplit("/", 1)[1]
        for r in hub.requests
        if r.method == "GET" and "/resolve/" in r.path
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def downloads(events: list[LoadProgress]) -> list[LoadProgress]:
    return [e for e in events if e.stage == "download"]


def assert_progress_monotonic_to(events: list[LoadProgress], total: int) -> None:
    done = [e.done for e in downloads(events)]
    assert done and done[0] == 0 and done[-1] == total, done
    assert all(b > a for a, b in itertools.pairwise(done)), done
    assert {e.total for e in downloads(events)} == {total}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Wait for a file another thread writes (bounded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def test_only_the_files_a_load_uses_with_progress_to_the_total(
    hub: StandInHub, sharded: Path, tmp_path: Path
) -> None:
    events: list[LoadProgress] = []
    model_dir = locator("test/sharded").directory(progress=events.append)
    wanted = {p.name for p in sharded.iterdir()}
    assert {p.name for p in model_dir.iterdir()} == wanted
    for name in wanted:
        assert sha256(model_dir / name) == sha256(sharded / name), name
    # No pickle, no second copy, no README: the hub's API said which files exist.
    assert fetched(hub) == wanted
    assert not fetched(hub) & set(DECOYS)
    total = sum((sharded / name).stat().st_size for name in wanted)
    assert_progress_monotonic_to(events, total)
    # All there: the next start asks the API once and downloads nothing.
    hub.requests.clear()
    again: list[LoadProgress] = []
    assert locator("test/sharded").directory(progress=again.append) == model_dir
    assert not downloads(again) and not fetched(hub)


def test_the_tokenizer_comes_first_and_the_weights_when_the_model_loads(
    hub: StandInHub, sharded: Path
) -> None:
    finder = locator("test/sharded")
    model_dir = finder.directory(weights=False)
    assert (model_dir / "tokenizer.model").is_file() and (model_dir / "config.json").is_file()
    assert not {SHARD_1, SHARD_2} & fetched(hub)
    finder.directory()
    assert {SHARD_1, SHARD_2} <= fetched(hub)
    assert len([r for r in hub.requests if r.path.startswith("/api/models/")]) == 1


def test_a_full_disk_refuses_before_a_byte_is_downloaded(
    hub: StandInHub, sharded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[Path] = []

    def free_disk(path: Path) -> int:
        asked.append(path)
        return 5 * 10**6  # 5 MB free; the model is ~21 MB

    monkeypatch.setattr(hardware, "free_disk", free_disk)
    # An earlier run killed mid-file left a partial blob behind: it is named, not counted.
    blobs = cache(tmp_path) / "models--test--sharded" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "abc.1234abcd.incomplete").write_bytes(b"x" * 3_000_000)
    with pytest.raises(DownloadRefused) as refused:
        locator("test/sharded").directory(weights=False)
    message = str(refused.value)
    assert "\n" not in message
    assert "downloading test/sharded needs 2" in message and "only 5.0 MB is free" in message
    assert "3.0 MB of that disk is held by 1 partial download" in message
    assert "HF_HUB_CACHE" in message and message.endswith("Nothing was downloaded.")
    assert asked == [cache(tmp_path)]
    # Only config.json and the shard index were read (into memory, to plan); nothing
    # was written to the cache.
    assert fetched(hub) == {"config.json", "model.safetensors.index.json"}
    assert [p.name for p in blobs.iterdir()] == ["abc.1234abcd.incomplete"]
    assert not (cache(tmp_path) / "models--test--sharded" / "snapshots").exists()


def test_files_already_in_the_cache_do_not_count_against_the_free_space(
    hub: StandInHub, sharded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locator("test/sharded").directory(weights=False)  # config and tokenizer: ~4 MB
    weights = sum((sharded / n).stat().st_size for n in (SHARD_1, SHARD_2))
    free = {"bytes": weights + 1 * GIB + 1000}  # room for the weights, not for all again
    monkeypatch.setattr(hardware, "free_disk", lambda path: free["bytes"])
    locator("test/sharded").directory()
    assert {SHARD_1, SHARD_2} <= fetched(hub)


MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"


@pytest.mark.parametrize(
    ("gpus", "ram", "settings", "offer", "says"),
    [
        # One 80 GB card: bf16 (~98 GB with the KV cache) does not fit, NF4 does.
        ([80 * GIB], 128 * GIB, {}, {"quantization": "4bit"}, "add --4bit."),
        # One 24 GB card: NF4 alone does not fit either; with experts in RAM it does.
        ([24 * GIB], 64 * GIB, {}, {"quantization": "4bit", "cpu_experts": "auto"},
         "add --4bit --cpu-experts auto."),
        ([24 * GIB], 64 * GIB, {"quantization": "4bit"}, {"cpu_experts": "auto"},
         "add --cpu-experts auto."),
        # No GPU: full precision (fp32 on a CPU) is far too big; the CPU kernels' int4 fits.
        ([], 64 * GIB, {}, {"quantization": "4bit"}, "add --4bit."),
        # Nothing fits: a server is the way.
        ([], 16 * GIB, {}, {}, "--endpoint URL"),
        ([8 * GIB], 16 * GIB, {}, {}, "even with --4bit or --4bit --cpu-experts auto"),
    ],
)  # fmt: skip
def test_a_model_too_big_for_this_machine_is_refused_with_what_would_fit(
    hub: StandInHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    gpus: list[int],
    ram: int,
    settings: dict[str, str],
    offer: dict[str, str],
    says: str,
) -> None:
    monkeypatch.setattr(hardware, "probe", lambda measure=False: hardware.assumed(gpus, ram))
    with pytest.raises(DownloadRefused) as refused:
        locator(MIXTRAL, **settings).directory(weights=False)
    message = str(refused.value)
    assert refused.value.offer == offer
    assert says in message and message.endswith("Nothing was downloaded."), message
    assert f"{MIXTRAL} (93.4 GB to download)" in message  # safetensors only, not the .pt
    assert fetched(hub) == {"config.json", "model.safetensors.index.json"}
    assert not cache(tmp_path).exists() or not any(cache(tmp_path).rglob("blobs/*"))


def test_the_offered_settings_are_the_ones_doctor_says_fit(
    hub: StandInHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One answer: what the refusal offers is what `mixchat doctor` plans for that mode.
    from mixchat.engine.local.report import diagnose

    machine = hardware.assumed([80 * GIB], 128 * GIB)
    monkeypatch.setattr(hardware, "probe", lambda measure=False: machine)
    with pytest.raises(DownloadRefused) as refused:
        locator(MIXTRAL).directory(weights=False)
    doctor = diagnose(replace(DEFAULTS, model=MIXTRAL, **refused.value.offer), machine)
    assert doctor.fits is True
    assert diagnose(replace(DEFAULTS, model=MIXTRAL), machine).fits is False


def test_a_dropped_connection_resumes_with_a_range_request(
    hub: StandInHub, tiny_model: Path
) -> None:
    size = (tiny_model / "model.safetensors").stat().st_size
    hub.cut_after["model.safetensors"] = 12 << 20  # huggingface_hub writes 10 MiB chunks
    events: list[LoadProgress] = []
    model_dir = locator("test/single").directory(progress=events.append)
    assert sha256(model_dir / "model.safetensors") == sha256(tiny_model / "model.safetensors")
    gets = hub.downloads("model.safetensors")
    assert [g.range for g in gets] == [None, f"bytes={10 << 20}-"]
    # Only what followed the last whole chunk on disk came again.
    assert hub.sent["model.safetensors"] == (12 << 20) + size - (10 << 20)
    total = sum(p.stat().st_size for p in tiny_model.iterdir() if p.is_file())
    assert_progress_monotonic_to(events, total)


def test_a_server_ignoring_range_restarts_the_file_and_progress_never_goes_back(
    hub: StandInHub, tiny_model: Path
) -> None:
    size = (tiny_model / "model.safetensors").stat().st_size
    hub.cut_after["model.safetensors"] = 12 << 20
    hub.ignore_range = True
    events: list[LoadProgress] = []
    model_dir = locator("test/single").directory(progress=events.append)
    assert sha256(model_dir / "model.safetensors") == sha256(tiny_model / "model.safetensors")
    assert hub.sent["model.safetensors"] == (12 << 20) + size
    total = sum(p.stat().st_size for p in tiny_model.iterdir() if p.is_file())
    assert_progress_monotonic_to(events, total)


def test_a_stopped_download_keeps_finished_files_and_the_next_run_fetches_the_rest(
    hub: StandInHub, sharded: Path, tmp_path: Path
) -> None:
    # What huggingface_hub 2.x does, asserted so that a change shows: finished files stay;
    # the file cut off is deleted and downloaded again from byte 0 (no Range) next time.
    hub.hold_after[SHARD_2] = 1 << 20
    cancel = threading.Event()
    finder = ModelLocator(replace(DEFAULTS, model="test/sharded"), cancel)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            finder.directory()
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    storage = cache(tmp_path) / "models--test--sharded"
    snapshot = storage / "snapshots" / Repo({}).sha
    assert hub.wait_reached(SHARD_2)
    wait_for(lambda: (snapshot / SHARD_1).is_file(), "the first shard finished")
    cancel.set()
    hub.release()
    worker.join(60)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], EngineError)
    assert "the files it finished are kept" in str(errors[0])
    assert not (snapshot / SHARD_2).exists()
    assert not list(storage.glob("blobs/*.incomplete"))  # the cut-off file was removed
    # Which small files finished before the stop depends on the download pool's timing
    # (two workers; a file still queued is never started): what matters is that none of
    # the finished ones is fetched again, and everything else is.
    finished = {p.name for p in snapshot.iterdir()}
    assert SHARD_1 in finished and SHARD_2 not in finished
    sent_before = dict(hub.sent)
    hub.requests.clear()
    hub.hold_after.clear()

    model_dir = locator("test/sharded").directory()
    assert sha256(model_dir / SHARD_2) == sha256(sharded / SHARD_2)
    wanted = {p.name for p in sharded.iterdir()}
    assert fetched(hub) == wanted - finished  # nothing finished before is fetched again
    assert SHARD_2 in fetched(hub)
    assert [g.range for g in hub.downloads(SHARD_2)] == [None]  # restarted from byte 0
    assert hub.sent[SHARD_2] - sent_before[SHARD_2] == (sharded / SHARD_2).stat().st_size


def test_without_the_hub_a_complete_download_is_used_and_a_partial_one_is_named(
    hub: StandInHub, sharded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    model_dir = locator("test/sharded").directory()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.requests.clear()
    assert locator("test/sharded").directory() == model_dir
    assert not hub.requests
    (model_dir / SHARD_2).unlink()  # as if the second shard never finished
    with pytest.raises(EngineError, match=r"incomplete \(1 of 2 weight files missing\)"):
        locator("test/sharded").directory()
