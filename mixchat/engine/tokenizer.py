"""The model's tokenizer as a chat needs it: exact prompts in, streamed text out.

Mixtral/Mistral models with the v1 SentencePiece vocabulary are encoded with
SentencePiece itself, which matches Mistral's reference (mistral-common)
token for token; everything else uses the tokenizer's own chat template.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mixchat.conversation import Message
from mixchat.engine.base import EngineError
from mixchat.engine.resolve import read_config
from mixchat.prompt import (
    IncrementalDecoder,
    PromptTokens,
    SentencePieceTokenizer,
    build_chat_template_prompt,
    build_mistral_v1_prompt,
    fit_to_context,
)

MISTRAL_V1_VOCAB = 32000
MISTRAL_MODEL_TYPES = {"mistral", "mixtral"}
DEFAULT_CONTEXT = 4096


class _HFDecoder:
    """Adapts a transformers tokenizer to ``decode(ids) -> str`` without special tokens."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=True))


class ChatTokenizer:
    """Builds prompt ids for a conversation and decodes generated ids."""

    def __init__(self, model_dir: Path, *, trust_remote_code: bool = False) -> None:
        config = read_config(model_dir)
        self.model_type = str(config.get("model_type", ""))
        self.context_size = int(config.get("max_position_embeddings") or DEFAULT_CONTEXT)
        sp_model = model_dir / "tokenizer.model"
        self._sp: SentencePieceTokenizer | None = None
        self._hf: Any = None
        if (
            self.model_type in MISTRAL_MODEL_TYPES
            and sp_model.is_file()
            and int(config.get("vocab_size", 0)) == MISTRAL_V1_VOCAB
        ):
            self._sp = SentencePieceTokenizer(sp_model)
            self.format = "mistral-v1"
            self.eos_ids = {self._sp.eos_id}
        else:
            self._hf = _load_hf_tokenizer(model_dir, trust_remote_code)
            self.format = "chat-template"
            eos = self._hf.eos_token_id
            self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}

    def build(
        self, messages: Sequence[Message], system_prompt: str | None, max_new_tokens: int
    ) -> PromptTokens:
        """Exact prompt ids for ``messages``, oldest turns dropped to fit the context."""
        if self._sp is not None:
            sp = self._sp

            def render(msgs: Sequence[Message]) -> PromptTokens:
                return build_mistral_v1_prompt(sp, msgs, system_prompt)
        else:
            hf = self._hf

            def render(msgs: Sequence[Message]) -> PromptTokens:
                return build_chat_template_prompt(hf, msgs, system_prompt)

        return fit_to_context(render, messages, self.context_size, max_new_tokens)

    def decoder(self, context: Sequence[int] = ()) -> IncrementalDecoder:
        """A fresh streaming decoder for one reply; ``context`` is the end of the prompt when
        the reply continues one (see ``IncrementalDecoder``)."""
        source = self._sp if self._sp is not None else _HFDecoder(self._hf)
        return IncrementalDecoder(source, context)

    def decode(self, ids: Sequence[int]) -> str:
        """Decode ids to text, without special tokens."""
        if self._sp is not None:
            return self._sp.decode(ids)
        return _HFDecoder(self._hf).decode(ids)


def _load_hf_tokenizer(model_dir: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise EngineError(
                f"{model_dir}: the tokenizer needs code shipped with the model; "
                "rerun with --trust-remote-code if you trust it"
            ) from None
        raise EngineError(f"{model_dir}: cannot load the tokenizer: {exc}") from None
    except (OSError, TypeError) as exc:
        raise EngineError(f"{model_dir}: cannot load the tokenizer: {exc}") from None
