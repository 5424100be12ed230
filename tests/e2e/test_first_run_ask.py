"""``mixchat ask`` on a first run, the model coming from a local stand-in for the hub:
refused in one line (exit 2) before a byte is downloaded when it cannot fit, downloaded and
answered when it can, and a Ctrl-C mid-download that keeps the finished files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixchat.commands.ask import CUT_NOTE
from mixchat.engine.base import LoadProgress
from mixchat.engine.local import hardware
from mixchat.engine.local.sizes import GIB
from tests.cli_harness import Cli
from tests.e2e.helpers import mixchat_exe
from tests.hub_standin import (
    Repo,
    StandInHub,
    hub_env,
    mixtral_repo,
    repo_from_dir,
    sharded_copy,
    use_hub,
)

pytestmark = pytest.mark.e2e

MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
SHARD_1 = "model-00001-of-00002.safetensors"
SHARD_2 = "model-00002-of-00002.safetensors"


@pytest.fixture(scope="module")
def sharded(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sharded_copy(tiny_model, tmp_path_factory.mktemp("sharded"))


@pytest.fixture
def hub(
    tiny_model: Path, sharded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StandInHub]:
    server = StandInHub(
        {
            MIXTRAL: mixtral_repo(),
            "test/tiny-ask": repo_from_dir(tiny_model),
            "test/tiny-sigint": repo_from_dir(sharded),
        }
    ).start()
    use_hub(monkeypatch, server, tmp_path)
    yield server
    server.stop()


def blobs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "hf" / "hub").glob("models--*/blobs/*"))


def test_ask_refuses_a_model_that_cannot_fit_before_downloading(
    hub: StandInHub, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine = hardware.assumed([80 * GIB], 128 * GIB)  # one 80 GB card
    monkeypatch.setattr(hardware, "probe", lambda measure=False: machine)
    result = cli("ask", "--model", MIXTRAL, "hi")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mixchat: error: "), lines
    assert "with --4bit it fits" in lines[0] and "add --4bit." in lines[0]
    assert lines[0].endswith("Nothing was downloaded.")
    assert not blobs(tmp_path)
    assert json.loads(cli("list", "--json").stdout) == []  # the question was not kept


def test_ask_downloads_the_model_and_answers(hub: StandInHub, cli: Cli, tiny_model: Path) -> None:
    result = cli("ask", "--model", "test/tiny-ask", "--max-tokens", "4", "--temperature", "0", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout
    # Progress goes to a terminal only; the one line is the cut of 4 random tokens.
    assert result.stderr == f"mixchat: {CUT_NOTE}\n"
    assert hub.sent["model.safetensors"] == (tiny_model / "model.safetensors").stat().st_size


def test_the_download_line_says_bytes_speed_and_time_left() -> None:
    from mixchat.commands.ask import progress_line

    event = LoadProgress("download", 3_100_000_000, 93_400_000_000, "85.0 MB/s, 14 min left")
    assert progress_line(event) == "downloading 3.1/93.4 GB (3%) · 85.0 MB/s, 14 min left"


def read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float = 60) -> bytes:
    """stderr of ``proc`` until ``needle`` appears (bounded)."""
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    return seen


def test_ctrl_c_mid_download_keeps_finished_files_and_the_next_run_continues(
    hub: StandInHub, cli: Cli, sharded: Path, tmp_path: Path
) -> None:
    hub.hold_after[SHARD_2] = 1 << 20
    proc = subprocess.Popen(
        [mixchat_exe(), "ask", "--model", "test/tiny-sigint", "--max-tokens", "4", "hi"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=hub_env(hub, tmp_path),
    )
    try:
        snapshot = tmp_path / "hf" / "hub" / "models--test--tiny-sigint" / "snapshots"
        shard_1 = snapshot / Repo({}).sha / SHARD_1
        assert hub.wait_reached(SHARD_2)
        deadline = time.monotonic() + 60
        while not shard_1.is_file() and time.monotonic() < deadline:  # wait for a file
            time.sleep(0.02)
        assert shard_1.is_file()
        proc.send_signal(signal.SIGINT)
        said = read_until(proc, b"next run downloads the rest")
        hub.release()  # the held file goes on; the stopped download drops it
        _, rest = proc.communicate(timeout=60)
    finally:
        hub.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = (said + rest).decode()
    assert proc.returncode == 130, err
    assert (
        "mixchat: stopped during the download: the files it finished are kept in the "
        "Hugging Face cache and the next run downloads the rest (a file cut off part-way "
        "starts again from its beginning); the question is saved, without an answer"
    ) in err
    assert not list((tmp_path / "hf" / "hub").rglob("*.incomplete"))
    names = {p.name for p in (snapshot / Repo({}).sha).iterdir()}
    assert SHARD_1 in names and SHARD_2 not in names

    hub.requests.clear()
    again = cli("ask", "--model", "test/tiny-sigint", "--max-tokens", "4", "hi again")
    assert again.returncode == 0, again.stderr
    assert not hub.downloads(SHARD_1)  # finished before: not fetched again
    assert [r.range for r in hub.downloads(SHARD_2)] == [None]  # cut off: from byte 0
