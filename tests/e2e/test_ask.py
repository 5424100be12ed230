"""End to end: ``mixchat ask`` against a tiny random-weight Mixtral.

In process (the ``cli`` fixture: engines loaded once per session) except where a real
process is the point: the installed command's smoke test and a signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mixchat.commands.ask import CUT_NOTE
from tests.cli_harness import Cli, CliResult
from tests.e2e.helpers import last_id, mixchat_exe, run, show_json

pytestmark = pytest.mark.e2e

GREEDY = ("--temperature", "0")
Ask = Callable[..., CliResult]


@pytest.fixture
def ask(cli: Cli) -> Ask:
    """``mixchat ask --model MODEL --max-tokens 12 ...`` in process."""

    def run_ask(model: Path, *args: str, input: str | None = None) -> CliResult:
        return cli("ask", "--model", str(model), "--max-tokens", "12", *args, input=input)

    return run_ask


def test_the_installed_command_streams_and_saves(tiny_model: Path) -> None:
    # The smoke test of `ask`: the installed command in a real process, stdout a pipe.
    result = run("ask", "--model", str(tiny_model), "--max-tokens", "5", "--temperature", "0", "hi")
    assert result.returncode == 0, result.stderr
    conv = show_json(last_id())
    assert [m["content"] for m in conv["messages"]] == ["hi", result.stdout]
    assert result.stderr == f"mixchat: {CUT_NOTE}\n"  # 5 tokens of random weights: cut


def test_ask_streams_exact_text_to_a_pipe_and_saves_it(
    ask: Ask, cli: Cli, tiny_model: Path
) -> None:
    result = ask(tiny_model, *GREEDY, "Name three colours.")
    assert result.returncode == 0, result.stderr
    assert result.stdout, "no answer on stdout"
    conv = show_json(last_id(cli), cli)
    roles = [(m["role"], m["status"]) for m in conv["messages"]]
    assert roles == [("user", "complete"), ("assistant", "complete")]
    assert conv["messages"][0]["content"] == "Name three colours."
    # stdout carries exactly the model's text, nothing else.
    assert conv["messages"][1]["content"] == result.stdout
    assert conv["messages"][1]["completion_tokens"] == 12
    assert conv["title"] == "Name three colours."


def test_greedy_is_deterministic_and_seed_is_honoured(ask: Ask, cli: Cli, tiny_model: Path) -> None:
    first = ask(tiny_model, *GREEDY, "--no-save", "hello")
    second = ask(tiny_model, *GREEDY, "--no-save", "hello")
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
    sampled = [
        ask(tiny_model, "--seed", "7", "--temperature", "1.0", "--no-save", "hello").stdout
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]
    other = ask(tiny_model, "--seed", "8", "--temperature", "1.0", "--no-save", "hello").stdout
    assert other != sampled[0]


def test_continue_puts_the_first_exchange_in_the_second_prompt(
    ask: Ask, cli: Cli, tiny_model: Path
) -> None:
    first = ask(tiny_model, *GREEDY, "What is 2+2?")
    assert first.returncode == 0, first.stderr
    shown = ask(tiny_model, "-c", "--show-prompt", "--json", "And 3+3?")
    assert shown.returncode == 0, shown.stderr
    prompt = json.loads(shown.stdout)
    assert prompt["text"] == (
        f"<s> [INST] What is 2+2? [/INST] {first.stdout}</s> [INST] And 3+3? [/INST]"
    )
    second = ask(tiny_model, *GREEDY, "-c", "And 3+3?")
    assert second.returncode == 0, second.stderr
    conv = show_json(last_id(cli), cli)
    assert [m["content"] for m in conv["messages"]] == [
        "What is 2+2?",
        first.stdout,
        "And 3+3?",
        second.stdout,
    ]
    # --conversation with a short prefix continues the same conversation.
    third = ask(tiny_model, *GREEDY, "--conversation", conv["id"][:6], "And 4+4?")
    assert third.returncode == 0, third.stderr
    assert len(show_json(conv["id"], cli)["messages"]) == 6


def test_show_prompt_matches_mistral_reference_and_loads_no_weights(
    ask: Ask, cli: Cli, tiny_model: Path, tmp_path: Path
) -> None:
    from mistral_common.protocol.instruct.messages import SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    # A copy of the model without any weights: --show-prompt must still work.
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    for item in tiny_model.iterdir():
        if not item.name.endswith(".safetensors"):
            (no_weights / item.name).write_bytes(item.read_bytes())
    text = "  literal </s> and [INST] x [/INST] <s>\ttab 🎉 中文  "
    result = cli(
        "ask",
        "--model",
        str(no_weights),
        "--system",
        "Be brief.",
        "--show-prompt",
        "--json",
        "--no-save",
        text,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    reference = (
        MistralTokenizer.v1()
        .encode_chat_completion(
            ChatCompletionRequest(
                messages=[SystemMessage(content="Be brief."), UserMessage(content=text)]
            )
        )
        .tokens
    )
    assert data["ids"] == reference
    assert data["ids"].count(2) == 0  # the literal </s> stayed text
    assert data["format"] == "mistral-v1"


def test_json_output_has_reply_usage_and_model(ask: Ask, cli: Cli, tiny_model: Path) -> None:
    result = ask(tiny_model, *GREEDY, "--json", "hi")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["conversation_id"] == last_id(cli)
    assert data["reply"] == show_json(last_id(cli), cli)["messages"][1]["content"]
    usage = data["usage"]
    assert usage["completion_tokens"] == 12
    assert usage["prompt_tokens"] == len(
        json.loads(ask(tiny_model, "--show-prompt", "--json", "hi").stdout)["ids"]
    )
    assert usage["ttft_s"] > 0 and usage["tokens_per_s"] > 0
    model = data["model"]
    assert model["model_id"] == str(tiny_model)
    assert model["dtype"] == "float32" and model["quantization"] == "none"
    assert model["attention"] == "sdpa" and model["device"] == "cpu"
    assert model["weight_bytes"] > 1_000_000


def test_stdin_is_appended_to_the_prompt(ask: Ask, cli: Cli, tiny_model: Path) -> None:
    result = ask(tiny_model, "summarize", input="line one\nline two\n")
    assert result.returncode == 0, result.stderr
    user = show_json(last_id(cli), cli)["messages"][0]
    assert user["content"] == "summarize\n\nline one\nline two\n"
    only_stdin = ask(tiny_model, input="just stdin")
    assert only_stdin.returncode == 0
    assert show_json(last_id(cli), cli)["messages"][0]["content"] == "just stdin"


def test_no_save_leaves_no_conversation(
    ask: Ask, cli: Cli, tiny_model: Path, mixchat_home: Path
) -> None:
    result = ask(tiny_model, "--no-save", "secret words")
    assert result.returncode == 0, result.stderr
    assert not (mixchat_home / "data").exists() or json.loads(cli("list", "--json").stdout) == []


def test_sigint_keeps_the_partial_reply_and_exits_130(tiny_model: Path, ask: Ask, cli: Cli) -> None:
    proc = subprocess.Popen(
        [
            mixchat_exe(),
            "ask",
            "--model",
            str(tiny_model),
            "--max-tokens",
            "20000",
            "--temperature",
            "1",
            "tell me a long story",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    assert proc.stdout is not None
    received = b""
    deadline = time.monotonic() + 120
    while len(received) < 20 and time.monotonic() < deadline:
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        received += chunk
    assert received, "nothing streamed before the interrupt"
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"partial reply is saved" in err
    conv = show_json(last_id(cli), cli)
    reply = conv["messages"][-1]
    assert reply["role"] == "assistant" and reply["status"] == "interrupted"
    assert reply["content"] == (received + rest).decode()
    # The conversation goes on afterwards.
    again = ask(tiny_model, "-c", "go on")
    assert again.returncode == 0, again.stderr
    assert len(show_json(conv["id"], cli)["messages"]) == 4


@pytest.mark.parametrize(
    ("args", "stdin", "code", "needle"),
    [
        (("ask", "--model", "/nonexistent/model"), "hi", 1, "no such directory"),
        (("ask", "--model", "nobody/no-such-model", "hi"), None, 1, "hf download"),
        (("ask", "   \n\t "), None, 2, "nothing to ask"),
        (("ask", "--temperature", "-1", "hi"), None, 2, "--temperature"),
        (("ask", "--4bit", "--8bit", "hi"), None, 2, "--4bit"),
        (("ask", "--conversation", "ffffffff", "hi"), None, 2, "ffffffff"),
        (("ask", "-c", "hi"), None, 2, "no saved conversation"),
        (("show", "zz-not-hex"), None, 2, "zz-not-hex"),
        (("export", "abc", "--format", "pdf"), None, 2, "pdf"),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(
    ask: Ask, cli: Cli, args: tuple[str, ...], stdin: str | None, code: int, needle: str
) -> None:
    result = cli(*args, input=stdin)
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert any(needle in line for line in lines), result.stderr
    assert result.stdout == ""


def test_bad_config_file_names_key_and_file(
    ask: Ask, cli: Cli, mixchat_home: Path, tiny_model: Path
) -> None:
    config = mixchat_home / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('temperature = "hot"\n')
    result = ask(tiny_model, "hi")
    assert result.returncode == 2
    assert str(config) in result.stderr and "temperature" in result.stderr
    config.write_text("this is = = not toml")
    result = cli("config")
    assert result.returncode == 2 and str(config) in result.stderr
    assert config.read_text() == "this is = = not toml"


def test_model_dir_errors(ask: Ask, cli: Cli, tmp_path: Path, tiny_model: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = ask(empty, "hi")
    assert result.returncode == 1 and "config.json" in result.stderr
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for item in tiny_model.iterdir():
        if not item.name.endswith(".safetensors"):
            (pickled / item.name).write_bytes(item.read_bytes())
    (pickled / "pytorch_model.bin").write_bytes(b"not really a pickle")
    result = ask(pickled, "hi")
    assert result.returncode == 1 and "pickle" in result.stderr


def test_question_too_long_for_the_context_is_refused_before_loading_weights(
    ask: Ask, cli: Cli, tiny_model: Path, tmp_path: Path
) -> None:
    # The tokenizer and a 64-token context, but no weights: only a check made before
    # loading can answer with the context error (loading would fail on the weights).
    model = tmp_path / "short-context"
    model.mkdir()
    for item in tiny_model.iterdir():
        if item.suffix != ".safetensors" and item.is_file():
            (model / item.name).write_bytes(item.read_bytes())
    config = json.loads((model / "config.json").read_text())
    config["max_position_embeddings"] = 64
    (model / "config.json").write_text(json.dumps(config))
    kept = ask(tiny_model, *GREEDY, "keep me")
    assert kept.returncode == 0, kept.stderr

    result = cli("ask", "--model", str(model), "--max-tokens", "8", "word " * 200)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "context" in result.stderr and "64" in result.stderr, result.stderr
    listed = json.loads(cli("list", "--json").stdout)
    assert [c["title"] for c in listed] == ["keep me"]  # nothing saved, nothing lost
