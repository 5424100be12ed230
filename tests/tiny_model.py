"""Build a tiny random-weight Mixtral with the real Mixtral v1 tokenizer.

Real code on real data: ``MixtralForCausalLM`` from a small ``MixtralConfig``
saved with ``save_pretrained`` (safetensors), plus the SentencePiece model that
``mistral-common`` ships, saved as a transformers tokenizer with Mixtral's chat
template. Used by the tests and the benchmarks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
