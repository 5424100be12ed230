"""Local loading lives in ``mixchat.engine.local``; the commands render what it reports and
never import torch themselves (issue 13, section 3)."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_import_hygiene import CLI, HEAVY, run_python

COMMANDS = ["ask", "doctor", "errors", "history", "interactive"]
PURE_LOCAL = ["placement", "sizes", "report", "hardware", "progress", "checkpoint", "policy"]


def test_commands_and_the_pure_local_modules_import_no_torch() -> None:
    code = "\n".join(
        [f"import mixchat.commands.{name}" for name in COMMANDS]
        + [f"import mixchat.engine.local.{name}" for name in PURE_LOCAL]
    )
    imported, _ = run_python(code, HEAVY)
    assert "torch" not in imported and "transformers" not in imported, imported


def test_doctor_what_if_needs_no_torch(mixchat_home: Path) -> None:
    argv = ["mixchat", "doctor", "--4bit", "--assume-gpu", "24GiB", "--assume-ram", "64GiB"]
    imported, out = run_python(CLI.format(argv=argv), HEAVY)
    assert "fits with the experts of" in out
    assert "torch" not in imported and "transformers" not in imported, imported


def test_one_reader_of_max_memory_and_one_progress_callback() -> None:
    # The duplicates issue 13 names: gone from the modules that used to keep them.
    root = Path(__file__).resolve().parents[2] / "mixchat"
    declared = [
        p for p in root.rglob("*.py") if "ProgressCallback = " in p.read_text(encoding="utf-8")
    ]
    assert [p.name for p in declared] == ["progress.py"]
    doctor = (root / "commands" / "doctor.py").read_text(encoding="utf-8")
    for duplicate in ("BYTES_PER_PARAM", "MIXTRAL_CONFIG", "_kv_bytes_per_token", "import torch"):
        assert duplicate not in doctor
    units = [p for p in root.rglob("*.py") if '"gib": ' in p.read_text(encoding="utf-8").lower()]
    assert [p.name for p in units] == ["config.py"]
