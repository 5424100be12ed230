"""Tests for mixchat.prompt against mistral-common's reference v1 tokenizer."""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mistral_common
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from mixchat.conversation import Message, Role, Status
from mixchat.prompt import (
    ContextOverflowError,
    IncrementalDecoder,
    PromptError,
    PromptTokens,
    SentencePieceTokenizer,
    build_chat_template_prompt,
    build_mistral_v1_prompt,
    fit_to_context,
    prompt_messages,
    scrub_surrogates,
)
from tests.examples import examples

V1_MODEL = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
BOS, EOS = 1, 2


@functools.cache
def reference() -> MistralTokenizer:
    return MistralTokenizer.v1()


@functools.cache
def sp() -> SentencePieceTokenizer:
    return SentencePieceTokenizer(V1_MODEL)


def ref_ids(messages: Sequence[Message], system: str | None = None) -> list[int]:
    """mistral-common's tokens for a conversation of (already filtered) messages; a last
    assistant message is a prefix to continue (``AssistantMessage(prefix=True)``)."""
    chat: list[Any] = [SystemMessage(content=system)] if system is not None else []
    for i, m in enumerate(messages):
        if m.role is Role.USER:
            chat.append(UserMessage(content=m.content))
        else:
            chat.append(AssistantMessage(content=m.content, prefix=i == len(messages) - 1))
    return list(reference().encode_chat_completion(ChatCompletionRequest(messages=chat)).tokens)


def user(text: str, status: Status = Status.COMPLETE) -> Message:
    return Message(Role.USER, text, status)


def bot(text: str, status: Status = Status.COMPLETE) -> Message:
    return Message(Role.ASSISTANT, text, status)


def v1(messages: Sequence[Message], system: str | None = None) -> PromptTokens:
    return build_mistral_v1_prompt(sp(), messages, system)


# -- strategies ------------------------------------------------------------------------------

TRICKY = [
    "<s>", "</s>", "[INST]", "[/INST]", "<unk>", " ", "  ", "\n", "\n\n", "\t", "\r\n",
    " \n ", "😀", "👍🏽", "👨‍👩‍👧", "中文", "日本語のテキスト", "한국어", "é", "e\u0301", "ñ",
    "\u00a0", "\u200b", "\x00", "▁", "\ufeff", "[INST] x [/INST]", "</s><s>",
]  # fmt: skip
fragments = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12),
    st.sampled_from(TRICKY),
    st.text(alphabet="ab \n\t", max_size=4),
)
texts = st.lists(fragments, max_size=5).map("".join)
nonempty_texts = texts.filter(bool)
systems = st.one_of(st.none(), st.just(""), texts)


@st.composite
def alternating(draw: st.DrawFn) -> list[Message]:
    """1..8 user turns, each but the last answered; ends with a user message."""
    turns = draw(st.integers(1, 8))
    messages: list[Message] = []
    for i in range(turns):
        messages.append(user(draw(texts)))
        if i < turns - 1:
            status = draw(st.sampled_from([Status.COMPLETE, Status.INTERRUPTED]))
            messages.append(bot(draw(nonempty_texts), status))
    return messages


@st.composite
def free_form(draw: st.DrawFn) -> list[Message]:
    """Any role order (runs, assistant first), ERROR and empty messages mixed in."""
    messages = []
    for _ in range(draw(st.integers(0, 8))):
        role = draw(st.sampled_from([Role.USER, Role.ASSISTANT]))
        messages.append(Message(role, draw(texts), draw(st.sampled_from(Status))))
    messages.append(user(draw(texts)))
    return messages


def reference_view(messages: Sequence[Message]) -> list[Message]:
    """What the reference is given: no ERROR messages, no empty assistant messages."""
    return [
        m
        for m in messages
        if m.status is not Status.ERROR and not (m.role is Role.ASSISTANT and m.content == "")
    ]


# -- equality with mistral-common ------------------------------------------------------------


@pytest.mark.slow
@settings(max_examples=examples(2000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=alternating(), system=systems)
def test_matches_mistral_common(messages: list[Message], system: str | None) -> None:
    assert v1(messages, system).ids == ref_ids(messages, system)


@settings(max_examples=examples(300), deadline=None)
@given(messages=free_form(), system=systems)
def test_matches_mistral_common_free_form(messages: list[Message], system: str | None) -> None:
    # An ERROR last user message leaves an assistant message last: that reply is continued.
    view = reference_view(messages)
    assert v1(messages, system).ids == ref_ids(view, system)


@st.composite
def continuations(draw: st.DrawFn) -> list[Message]:
    """A conversation ending with a partial (or complete) reply to continue."""
    messages = draw(alternating())
    return [
        *messages,
        bot(draw(nonempty_texts), draw(st.sampled_from([Status.COMPLETE, Status.INTERRUPTED]))),
    ]


@settings(max_examples=examples(500), deadline=None)
@given(messages=continuations(), system=systems)
def test_continuation_matches_mistral_common_prefix(
    messages: list[Message], system: str | None
) -> None:
    prompt = v1(messages, system)
    assert prompt.ids == ref_ids(messages, system)
    # The prompt is the one for the question, then the partial reply without </s>.
    question = v1(messages[:-1], system)
    assert prompt.ids[: len(question.ids)] == question.ids
    assert prompt.ids[len(question.ids) :] == sp().encode(scrub_surrogates(messages[-1].content))


# -- rendering and special text --------------------------------------------------------------


def test_two_turn_rendering() -> None:
    messages = [user("Instruction"), bot("Model answer"), user("Follow-up instruction")]
    prompt = v1(messages)
    assert prompt.text == (
        "<s> [INST] Instruction [/INST] Model answer</s> [INST] Follow-up instruction [/INST]"
    )
    assert prompt.ids == ref_ids(messages)
    assert prompt.dropped_messages == 0


def test_literal_special_text_is_not_special() -> None:
    messages = [user("say </s> and <s>"), bot("ok </s><s> [INST]"), user("</s></s>")]
    prompt = v1(messages)
    eos_at = [i for i, t in enumerate(prompt.ids) if t == EOS]
    answer = sp().encode("ok </s><s> [INST]")
    start = prompt.ids.index(answer[0], 1)
    assert eos_at == [start + len(answer)]  # only the end of the assistant turn
    assert [i for i, t in enumerate(prompt.ids) if t == BOS] == [0]
    assert prompt.ids == ref_ids(messages)


def test_system_prompt_goes_into_first_user_message_only() -> None:
    messages = [user("first"), bot("answer"), user("second")]
    prompt = v1(messages, "Be brief.")
    assert prompt.text.startswith("<s> [INST] Be brief.\n\nfirst [/INST] answer</s>")
    assert prompt.text.count("Be brief.") == 1
    first = sp().encode("[INST] Be brief.\n\nfirst [/INST]")
    assert prompt.ids[1 : 1 + len(first)] == first
    assert prompt.ids == ref_ids(messages, "Be brief.")
    assert v1(messages, "").ids == v1(messages, None).ids == ref_ids(messages)


def test_error_and_empty_messages_are_skipped() -> None:
    expected = v1([user("a"), user("b")])
    assert expected.text == "<s> [INST] a\n\nb [/INST]"  # runs merge like mistral-common
    assert expected.ids == ref_ids([user("a"), user("b")])
    assert v1([user("a"), bot("", Status.INTERRUPTED), user("b")]) == expected
    assert v1([user("a"), bot("", Status.COMPLETE), user("b")]) == expected
    assert v1([user("a"), bot("boom", Status.ERROR), user("b")]) == expected
    assert v1([user("a"), Message(Role.SYSTEM, "sys"), user("b")]) == expected
    partial = v1([user("a"), bot("half an ans", Status.INTERRUPTED), user("b")])
    assert partial.text == "<s> [INST] a [/INST] half an ans</s> [INST] b [/INST]"


def test_empty_user_message_matches_reference() -> None:
    assert v1([user("")]).ids == ref_ids([user("")])
    assert v1([user(""), user("x")]).ids == ref_ids([user("x")])


def test_conversation_starting_with_assistant_gets_empty_user_turn() -> None:
    messages = [bot("hello"), user("hi")]
    assert v1(messages, "sys").ids == ref_ids(messages, "sys")
    assert v1(messages).text == "<s> [INST]  [/INST] hello</s> [INST] hi [/INST]"


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [bot("hi")],
        [bot("hi", Status.INTERRUPTED), bot("there")],
        [user("q", Status.ERROR)],
        [user("q", Status.ERROR), bot("a")],
        [Message(Role.SYSTEM, "only a system message")],
    ],
)
def test_prompt_error(messages: list[Message]) -> None:
    with pytest.raises(PromptError):
        v1(messages)


def test_lone_surrogates_become_replacement_characters() -> None:
    # The reference crashes inside sentencepiece on lone surrogates; we substitute U+FFFD and
    # join valid surrogate pairs (as produced by some JSON decoders) into their character.
    assert scrub_surrogates("a\ud800b") == "a\ufffdb"
    assert scrub_surrogates("\ud83d\ude00") == "😀"
    assert scrub_surrogates("plain") == "plain"
    assert v1([user("a\ud800b")]).ids == ref_ids([user("a\ufffdb")])
    assert v1([user("x")], "\udfff").ids == ref_ids([user("x")], "\ufffd")
    assert v1([user("\ud83d\ude00"), bot("\udc00"), user("y")]).ids == ref_ids(
        [user("😀"), bot("\ufffd"), user("y")]
    )


def test_prompt_messages_filter() -> None:
    kept = [user("a"), bot("b", Status.INTERRUPTED)]
    dropped = [bot(""), bot("x", Status.ERROR), Message(Role.SYSTEM, "s")]
    assert prompt_messages([*dropped, *kept]) == kept


def test_import_is_light() -> None:
    code = (
        "import sys, mixchat.prompt; "
        "bad = [m for m in ('torch', 'transformers', 'mistral_common', 'sentencepiece', "
        "'textual', 'rich', 'typer') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- context fitting -------------------------------------------------------------------------


class CountingBuild:
    def __init__(self, system: str | None) -> None:
        self.system = system
        self.calls = 0

    def __call__(self, messages: Sequence[Message]) -> PromptTokens:
        self.calls += 1
        return v1(messages, self.system)


def long_chat(turns: int) -> list[Message]:
    messages = []
    for i in range(turns):
        messages += [user(f"question {i} " + "word " * 20), bot(f"answer {i} " + "text " * 30)]
    return [*messages, user("the newest question")]


def test_fit_returns_prompt_unchanged_when_it_fits() -> None:
    messages = long_chat(3)
    prompt = fit_to_context(CountingBuild("sys"), messages, 4096, 512)
    assert prompt == v1(messages, "sys")
    assert prompt.dropped_messages == 0


def test_fit_drops_oldest_turns_and_keeps_system_and_newest() -> None:
    messages = long_chat(40)
    full = len(v1(messages, "SYSTEM").ids)
    context, new = full // 2, 100
    build = CountingBuild("SYSTEM")
    prompt = fit_to_context(build, messages, context, new)
    dropped = prompt.dropped_messages
    assert dropped > 0 and dropped % 2 == 0  # whole turns
    assert len(prompt.ids) + new <= context
    assert prompt.ids == ref_ids(messages[dropped:], "SYSTEM")
    assert prompt.text.startswith(f"<s> [INST] SYSTEM\n\nquestion {dropped // 2} ")
    assert prompt.text.endswith("[INST] the newest question [/INST]")
    # Minimal: keeping one more turn would not fit.
    assert len(v1(messages[dropped - 2 :], "SYSTEM").ids) + new > context
    assert build.calls <= 2 + math.ceil(math.log2(40)) + 1


def test_fit_counts_skipped_messages_in_the_dropped_prefix() -> None:
    messages = [user("old " * 50), bot("failed", Status.ERROR), user("older " * 50), bot("x")]
    messages += [user("new")]
    size = len(v1(messages[2:]).ids) + 10
    prompt = fit_to_context(CountingBuild(None), messages, size, 10)
    assert prompt.dropped_messages == 2
    assert prompt.ids == v1(messages[2:]).ids


def test_fit_can_drop_down_to_the_newest_message() -> None:
    messages = long_chat(5)
    alone = v1(messages[-1:], "S")
    prompt = fit_to_context(CountingBuild("S"), messages, len(alone.ids) + 7, 7)
    assert prompt.ids == alone.ids
    assert prompt.dropped_messages == len(messages) - 1


def test_fit_raises_when_newest_message_alone_does_not_fit() -> None:
    messages = [*long_chat(2)[:-1], user("big " * 3000)]
    alone = len(v1(messages[-1:], "S").ids)
    with pytest.raises(ContextOverflowError) as info:
        fit_to_context(CountingBuild("S"), messages, alone + 511, 512)
    err = info.value
    assert isinstance(err, PromptError)
    assert (err.prompt_tokens, err.max_new_tokens, err.context_size) == (alone, 512, alone + 511)
    assert f"{alone:,} tokens" in str(err) and "\n" not in str(err)
    with pytest.raises(ContextOverflowError):  # single-turn conversation
        fit_to_context(CountingBuild(None), [user("big " * 3000)], 1000, 10)


def test_fit_propagates_prompt_errors() -> None:
    with pytest.raises(PromptError):
        fit_to_context(CountingBuild(None), [bot("a")], 10, 1)


def test_fit_keeps_the_reply_being_continued() -> None:
    messages = [*long_chat(40), bot("the partial answer")]
    full = len(v1(messages, "S").ids)
    prompt = fit_to_context(CountingBuild("S"), messages, full // 2, 50)
    assert 0 < prompt.dropped_messages < len(messages) - 2
    assert prompt.text.endswith("[INST] the newest question [/INST] the partial answer")
    assert prompt.ids == ref_ids(messages[prompt.dropped_messages :], "S")


# -- incremental decoding --------------------------------------------------------------------


def stream(ids: Sequence[int], sizes: Sequence[int]) -> list[str]:
    decoder = IncrementalDecoder(sp())
    chunks, i, k = [], 0, 0
    while i < len(ids):
        step = sizes[k % len(sizes)] if sizes else 1
        chunks.append(decoder.push(ids[i : i + step]))
        i, k = i + step, k + 1
    chunks.append(decoder.flush())
    return chunks


decoder_texts = st.lists(
    st.one_of(
        st.sampled_from(
            ["😀", "👍🏽", "中文", "日本語", "é", "e\u0301", "Ünïcödé", " ", "\n", "𝔘"]
        ),
        st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=8),
    ),
    max_size=8,
).map("".join)
chunk_sizes = st.lists(st.integers(1, 4), max_size=5)


@settings(max_examples=examples(400), deadline=None)
@given(text=decoder_texts, sizes=chunk_sizes)
def test_incremental_decoder_text(text: str, sizes: list[int]) -> None:
    ids = sp().encode(text)
    full = sp().decode(ids)
    for chunks in (stream(ids, []), stream(ids, sizes)):
        assert "".join(chunks) == full
        if "\ufffd" not in full:
            assert not any("\ufffd" in c for c in chunks)
            assert chunks[-1] == ""  # valid text is emitted as soon as it is complete


@settings(max_examples=examples(400), deadline=None)
@given(
    ids=st.lists(st.one_of(st.integers(0, 31999), st.integers(0, 300)), max_size=40),
    sizes=chunk_sizes,
)
def test_incremental_decoder_raw_ids(ids: list[int], sizes: list[int]) -> None:
    full = sp().decode(ids)
    assert "".join(stream(ids, sizes)) == full
    assert "".join(stream(ids, [])) == full


def test_incremental_decoder_holds_partial_characters() -> None:
    ids = sp().encode("ok 🦜")  # the parrot is byte-fallback: four byte tokens
    decoder = IncrementalDecoder(sp())
    out = [decoder.push(i) for i in ids]
    assert "".join(out) == "ok 🦜"
    assert not any("\ufffd" in c for c in out)
    assert out[-1].endswith("🦜") and decoder.flush() == ""
    cut = IncrementalDecoder(sp())
    assert cut.push(ids[:-1]) == "ok "  # the unfinished parrot is held back
    assert cut.flush() == sp().decode(ids[:-1])[3:] == "\ufffd" * 3  # flush gives up


# -- chat templates (transformers) -----------------------------------------------------------

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
    "{% elif m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}"
)


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("v1-tokenizer")
    shutil.copy(V1_MODEL, folder / "tokenizer.model")
    return transformers.AutoTokenizer.from_pretrained(folder)


def test_chat_template_prompt(hf_tokenizer: Any) -> None:
    hf_tokenizer.chat_template = TEMPLATE
    messages = [user("hi"), bot("", Status.INTERRUPTED), bot("yo"), user("x")]
    prompt = build_chat_template_prompt(hf_tokenizer, messages, None)
    assert prompt.text == "<s>[INST] hi [/INST]yo</s>[INST] x [/INST]"
    assert prompt.ids == hf_tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
    assert prompt.ids[0] == BOS and prompt.ids.count(BOS) == 1
    # The template rejects the system role: the system prompt joins the first user message.
    with_system = build_chat_template_prompt(hf_tokenizer, messages, "S")
    assert with_system.text.startswith("<s>[INST] S\n\nhi [/INST]")
    with pytest.raises(PromptError):
        build_chat_template_prompt(hf_tokenizer, [bot("a")], None)


def test_chat_template_continues_a_final_assistant_message(hf_tokenizer: Any) -> None:
    hf_tokenizer.chat_template = TEMPLATE
    prompt = build_chat_template_prompt(hf_tokenizer, [user("q"), bot("Once upon")], None)
    assert prompt.text == "<s>[INST] q [/INST]Once upon"  # no </s>: the reply goes on
    assert prompt.ids == hf_tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
    assert EOS not in prompt.ids


def test_chat_template_missing(hf_tokenizer: Any) -> None:
    hf_tokenizer.chat_template = None
    with pytest.raises(PromptError, match="no chat template"):
        build_chat_template_prompt(hf_tokenizer, [user("hi")], None)


def test_chat_template_that_always_fails(hf_tokenizer: Any) -> None:
    hf_tokenizer.chat_template = "{{ raise_exception('nope') }}"
    with pytest.raises(PromptError, match="nope"):
        build_chat_template_prompt(hf_tokenizer, [user("hi")], "S")
