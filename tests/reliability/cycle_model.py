"""A real ``MixtralForCausalLM`` whose weights make it repeat a chosen text forever.

The tiny random model says random things; some reliability tests need to know what the
model says (hostile escape sequences, words to look for on a screen). This builds a
Mixtral with the real v1 tokenizer whose attention and expert outputs are zero, so the
hidden state is the embedding of the current token alone: an order-1 Markov chain.
Each token of a *cycle* of distinct tokens gets its own embedding axis, and ``lm_head``
maps it to the next token of the cycle; every other token (the whole prompt) maps to
the first. Greedy or sampled (the winning logit is ~80 above the rest), the reply is
``decode(cycle * n)``, through the real transformers generation path.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

# The Mistral v1 prompt always ends with "]" of "[/INST]": if the cycle holds that token,
# the reply starts just after it in the cycle.
PROMPT_LAST_TOKEN = 28793
SPECIAL_IDS = {0, 1, 2}  # <unk>, <s>, </s>


def _sp() -> object:
    import sentencepiece

    from mixchat.testing.models import v1_tokenizer_path

    return sentencepiece.SentencePieceProcessor(model_file=str(v1_tokenizer_path()))


def plan_cycle(text: str) -> list[int]:
    """Distinct token ids (none special) that decode to ``text``.

    Depth-first search preferring long pieces; a character can also come from its UTF-8
    byte tokens (``<0x1B>``), so repeated characters can use different tokens.
    """
    sp = _sp()
    pieces: dict[str, int] = {}
    for i in range(sp.get_piece_size()):  # type: ignore[attr-defined]
        if i in SPECIAL_IDS or sp.is_byte(i):  # type: ignore[attr-defined]
            continue
        piece = sp.id_to_piece(i).replace("\u2581", " ")  # type: ignore[attr-defined]
        pieces.setdefault(piece, i)
    longest = max(len(p) for p in pieces)
    byte_id = {b: sp.piece_to_id(f"<0x{b:02X}>") for b in range(256)}  # type: ignore[attr-defined]

    def candidates(pos: int) -> list[tuple[int, list[int]]]:
        found = []
        for size in range(min(longest, len(text) - pos), 0, -1):
            piece_id = pieces.get(text[pos : pos + size])
            if piece_id is not None:
                found.append((size, [piece_id]))
        found.append((1, [byte_id[b] for b in text[pos].encode("utf-8")]))
        return found

    budget = [100_000]  # search nodes: an impossible text fails fast

    def search(pos: int, used: list[int]) -> list[int] | None:
        if pos == len(text):
            return used
        budget[0] -= 1
        if budget[0] < 0:
            return None
        for size, ids in candidates(pos):
            if any(i in used for i in ids) or len(set(ids)) != len(ids):
                continue
            done = search(pos + size, [*used, *ids])
            if done is not None:
                return done
        return None

    ids = search(0, [])
    if ids is None:
        raise ValueError(f"no cycle of distinct tokens spells {text!r}")
    assert decode(ids) == text, (decode(ids), text)
    return ids


def decode(ids: Sequence[int]) -> str:
    """What the model's reply text is for these generated ids (as the engine decodes)."""
    return str(_sp().decode(list(ids)))  # type: ignore[attr-defined]


def reply_ids(cycle: Sequence[int], tokens: int) -> list[int]:
    """The first ``tokens`` ids of the reply: the cycle, entered after the prompt's last token."""
    first = cycle.index(PROMPT_LAST_TOKEN) + 1 if PROMPT_LAST_TOKEN in cycle else 0
    return [cycle[(first + i) % len(cycle)] for i in range(tokens)]


def expected_reply(cycle: Sequence[int], tokens: int) -> str:
    """The text of a reply of ``tokens`` tokens."""
    return decode(reply_ids(cycle, tokens))


def build_cycle_model(out_dir: Path, tokenizer_dir: Path, cycle: Sequence[int]) -> Path:
    """Save the model that repeats ``cycle``, with the tokenizer files of ``tokenizer_dir``."""
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

    hidden = 128
    assert len(cycle) < hidden and len(set(cycle)) == len(cycle)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = MixtralConfig(
        vocab_size=32000,
        hidden_size=hidden,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=2,
        num_experts_per_tok=1,
        max_position_embeddings=32768,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = MixtralForCausalLM(config).eval()
    start = hidden - 1  # the axis of every token outside the cycle
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "o_proj" in name or "down_proj" in name:
                param.zero_()  # attention and experts add nothing to the residual
            if "norm" in name:
                param.fill_(1.0)
        embed = model.model.embed_tokens.weight
        head = model.lm_head.weight
        embed.zero_()
        embed[:, start] = 1.0
        head.zero_()
        for k, token in enumerate(cycle):
            embed[token].zero_()
            embed[token, k] = 1.0
            head[cycle[(k + 1) % len(cycle)], k] = 10.0
        head[cycle[0], start] = 10.0
    model.save_pretrained(out_dir, safe_serialization=True)
    for item in tokenizer_dir.iterdir():
        if item.is_file() and not item.name.endswith(".safetensors") and item.name != "config.json":
            shutil.copy(item, out_dir / item.name)
    return out_dir
