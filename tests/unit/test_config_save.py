"""config.save_setting writes config.toml through safefile: atomically, keeping its mode,
through a dotfiles link, and never into something that is not a regular file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mixchat.config import ConfigError, read_toml, save_setting


def test_saving_keeps_the_rest_of_the_file_and_its_mode(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("# mine\ntemperature = 0.2\n\n[table]\nx = 1\n")
    config.chmod(0o600)
    save_setting("theme", "mixchat-light", path=config)
    assert read_toml(config) == {"theme": "mixchat-light", "temperature": 0.2, "table": {"x": 1}}
    assert "# mine" in config.read_text() and stat.S_IMODE(config.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]
    fresh = tmp_path / "new" / "dir" / "config.toml"
    save_setting("theme", "x", path=fresh)
    assert read_toml(fresh) == {"theme": "x"}


def test_a_linked_config_is_updated_where_it_lives(tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "mixchat.toml"
    real.write_text("top_k = 5\n")
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    (tmp_path / "config.toml.tmp").symlink_to(tmp_path / "victim")  # the old temp name
    save_setting("theme", "t", path=link)
    assert link.is_symlink() and read_toml(real) == {"theme": "t", "top_k": 5}
    assert not (tmp_path / "victim").exists()


def test_what_cannot_be_saved_is_one_line_and_left_alone(tmp_path: Path) -> None:
    dangling = tmp_path / "dangling.toml"
    dangling.symlink_to(tmp_path / "elsewhere" / "made.toml")
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    directory = tmp_path / "dir.toml"
    directory.mkdir()
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = {
        dangling: "missing file",
        fifo: "not a regular file",
        directory: "not a regular file",
        afile / "config.toml": "cannot",
    }
    for path, needle in cases.items():
        with pytest.raises(ConfigError) as err:
            save_setting("theme", "t", path=path)
        assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not (tmp_path / "elsewhere").exists() and stat.S_ISFIFO(fifo.stat().st_mode)
