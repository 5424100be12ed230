"""Model directories that cannot be chatted with: one line, an exit code, no traceback,
and no conversation left behind. (Missing, empty and pickle-only directories are in
tests/e2e/test_ask.py.)"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.reliability.helpers import Result, assert_one_line_error, cli, database

pytestmark = pytest.mark.e2e

EVIL_CODE = """
import os, pathlib
pathlib.Path(os.environ["MIXCHAT_TEST_MARKER"]).write_text("remote code ran")
from transformers import MixtralForCausalLM


class EvilModel(MixtralForCausalLM):
    pass
"""


def _copy(tiny: Path, to: Path, skip: Callable[[str], bool] = lambda name: False) -> Path:
    to.mkdir(parents=True)
    for item in tiny.iterdir():
        if not skip(item.name):
            shutil.copy(item, to / item.name)
    return to


def _tokenizer_files(tiny: Path, to: Path, template: bool) -> None:
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny / name, to / name)
    if template:
        shutil.copy(tiny / "chat_template.jinja", to / "chat_template.jinja")
    else:
        config = json.loads((to / "tokenizer_config.json").read_text())
        config.pop("chat_template", None)
        (to / "tokenizer_config.json").write_text(json.dumps(config))


def _bert(tiny: Path, to: Path) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=32000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64,
    )  # fmt: skip
    BertForMaskedLM(config).save_pretrained(to, safe_serialization=True)
    _tokenizer_files(tiny, to, template=True)
    return to


def _t5(tiny: Path, to: Path) -> Path:
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=32000, d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16)
    T5ForConditionalGeneration(config).save_pretrained(to, safe_serialization=True)
    _tokenizer_files(tiny, to, template=True)
    return to


def _llama_without_template(tiny: Path, to: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(to, safe_serialization=True)
    _tokenizer_files(tiny, to, template=False)
    return to


def _remote_code(tiny: Path, to: Path) -> Path:
    _copy(tiny, to)
    config = json.loads((to / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (to / "config.json").write_text(json.dumps(config))
    (to / "modeling_evil.py").write_text(EVIL_CODE)
    return to


def _truncated_weights(tiny: Path, to: Path) -> Path:
    _copy(tiny, to)
    weights = to / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    return to


def _bad_config(tiny: Path, to: Path) -> Path:
    _copy(tiny, to, skip=lambda name: name == "config.json")
    (to / "config.json").write_text("{not json")
    return to


def _no_tokenizer(tiny: Path, to: Path) -> Path:
    return _copy(tiny, to, skip=lambda n: n.startswith("tokenizer") or n.endswith(".jinja"))


CASES: dict[str, tuple[Callable[[Path, Path], Path], int, list[str]]] = {
    # name: (make the directory, exit code, words the error line must contain)
    "not-causal-t5": (_t5, 1, ["not a causal language model"]),
    "no-chat-template": (_llama_without_template, 2, ["chat template"]),
    "remote-code": (_remote_code, 1, ["--trust-remote-code"]),
    "truncated-weights": (_truncated_weights, 1, []),
    "config-not-json": (_bad_config, 1, ["config.json"]),
    "no-tokenizer": (_no_tokenizer, 1, ["tokenizer"]),
}


def test_unusable_model_directories(tmp_path: Path, tiny_model: Path, mixchat_home: Path) -> None:
    dirs = {name: make(tiny_model, tmp_path / name) for name, (make, _, _) in CASES.items()}
    untrusted, trusted = tmp_path / "ran-untrusted", tmp_path / "ran-trusted"
    runs = {name: ["--model", str(path)] for name, path in dirs.items()}
    # With --trust-remote-code the shipped code does run (and here it is a Mixtral).
    runs["trusted"] = ["--model", str(dirs["remote-code"]), "--trust-remote-code"]

    def ask(name: str) -> Result:
        marker = trusted if name == "trusted" else untrusted
        env = {"MIXCHAT_TEST_MARKER": str(marker), "HF_MODULES_CACHE": str(tmp_path / name)}
        return cli("ask", *runs[name], "--max-tokens", "3", "hi", env=env)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(runs, pool.map(ask, runs), strict=True))
    for name, (_, code, needles) in CASES.items():
        assert_one_line_error(results[name], code, *needles)
    assert not untrusted.exists(), "code shipped with a model ran without --trust-remote-code"
    assert results["trusted"].code == 0, results["trusted"].err
    assert trusted.read_text() == "remote code ran"
    # A model that cannot load takes its question back, and one whose tokenizer cannot
    # build the prompt (no chat template) is refused before the question is saved: only
    # the trusted run's exchange is listed.
    listed = json.loads(cli("list", "--json").out)
    assert [(row["model"], row["message_count"]) for row in listed] == [
        (str(dirs["remote-code"]), 2)
    ]
    assert database(mixchat_home).exists()


def test_encoder_only_model_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    bert = _bert(tiny_model, tmp_path / "bert")
    result = cli("ask", "--model", str(bert), "--max-tokens", "3", "hi")
    assert_one_line_error(result, 1, "not a causal language model")
