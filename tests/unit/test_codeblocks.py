"""The one code-block parser (``ask --extract``, the app's copy-code action)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixchat.codeblocks import CodeBlock, NoSuchBlock, code_blocks, nth_block, ordinal


def test_backtick_and_tilde_fences_with_info_strings() -> None:
    text = (
        "Intro\n\n```python title=a.py\nprint(1)\n```\n\nthen\n\n~~~ sh\necho hi\n~~~\n"
        "and plain\n```\nx\n```\n"
    )
    assert code_blocks(text) == [
        CodeBlock("print(1)\n", "python title=a.py"),
        CodeBlock("echo hi\n", "sh"),
        CodeBlock("x\n", ""),
    ]
    assert code_blocks(text)[0].language == "python"


def test_a_longer_fence_holds_shorter_backtick_runs() -> None:
    inner = "Use:\n```python\nx = 1\n```\nand ``inline``\n"
    text = f"````markdown\n{inner}````\nafter\n```js\ny\n```"
    blocks = code_blocks(text)
    assert blocks[0] == CodeBlock(inner, "markdown")
    assert blocks[1] == CodeBlock("y\n", "js")
    assert len(blocks) == 2


def test_a_tilde_block_holds_backtick_fences_and_the_reverse() -> None:
    assert code_blocks("~~~\n```\nin\n```\n~~~\n") == [CodeBlock("```\nin\n```\n")]
    assert code_blocks("```\n~~~\nin\n~~~\n```\n") == [CodeBlock("~~~\nin\n~~~\n")]


def test_closing_fence_must_be_as_long_and_bare() -> None:
    # "```python" cannot close (it has an info string); "``" is too short.
    text = "````\na\n```python\n``\n`````\nb"
    assert code_blocks(text) == [CodeBlock("a\n```python\n``\n")]
    assert code_blocks("```\na\n```  \n")[0] == CodeBlock("a\n")  # trailing spaces allowed


def test_unterminated_fence_runs_to_the_end() -> None:
    assert code_blocks("text\n```py\nline 1\nline 2") == [CodeBlock("line 1\nline 2", "py", False)]
    assert code_blocks("```py\nline 1\n") == [CodeBlock("line 1\n", "py", False)]
    assert code_blocks("```") == [CodeBlock("", "", False)]


def test_inline_code_on_its_own_line_is_not_a_fence() -> None:
    assert code_blocks("```x``` is inline\n```y```\n") == []
    # A tilde fence's info string may hold backticks.
    assert code_blocks("~~~ `odd`\nz\n~~~") == [CodeBlock("z\n", "`odd`")]


def test_indented_fences_in_list_items_lose_their_indent() -> None:
    text = "1. Step:\n   ```bash\n   make\n     indented more\n   ```\n"
    assert code_blocks(text) == [CodeBlock("make\n  indented more\n", "bash")]


def test_crlf_line_endings() -> None:
    assert code_blocks("```py\r\nx = 1\r\n```\r\n") == [CodeBlock("x = 1\r\n", "py")]


def test_empty_block_and_two_character_runs() -> None:
    assert code_blocks("```\n```\n") == [CodeBlock("")]
    assert code_blocks("``\nnot code\n``") == []


def test_nth_block_counts_from_one_and_from_the_end() -> None:
    text = "```\none\n```\n```\ntwo\n```\n```\nthree\n```"
    assert nth_block(text).code == "three\n"
    assert nth_block(text, 1).code == "one\n"
    assert nth_block(text, 3).code == "three\n"
    assert nth_block(text, -3).code == "one\n"
    with pytest.raises(NoSuchBlock, match="has 3 code blocks, so no 4th one"):
        nth_block(text, 4)
    with pytest.raises(NoSuchBlock, match="no 4th from the end"):
        nth_block(text, -4)
    with pytest.raises(NoSuchBlock, match="has no code block"):
        nth_block("just prose", 1)
    with pytest.raises(NoSuchBlock, match="has 1 code block, so no 2nd"):
        nth_block("```\nx\n```", 2)
    with pytest.raises(ValueError):
        nth_block(text, 0)


def test_ordinals() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th",
    ]  # fmt: skip
    assert ordinal(-1) == "last"


_lines = st.lists(
    st.text(alphabet="ab `~\t", max_size=12).filter(lambda s: "\n" not in s), max_size=8
)


@given(_lines)
def test_any_content_round_trips_through_a_long_enough_fence(lines: list[str]) -> None:
    from mixchat.attachments import fence_for

    content = "".join(line + "\n" for line in lines)
    fence = fence_for(content)
    # A backtick fence's content never holds a bare fence of its length: it comes back whole
    # (leading indentation is only removed as far as the fence line is indented: not at all).
    blocks = code_blocks(f"before\n{fence}txt\n{content}{fence}\nafter ```")
    assert blocks[0] == CodeBlock(content, "txt")
