"""LCB prompt formats (both problem types, chat and base) and code extraction (LCB parity + fuzz)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gasp_jax.data import load_problems
from gasp_jax.evaluation import base_prompt, chat_messages, extract_code, load_few_shot, render_prompt
from gasp_jax.data import paths

SAMPLE = paths.data_file(paths.LCB_PUBLIC_V5)
O1 = paths.data_file(paths.LCB_O1_SUBMISSION)
QWEN = paths.data_file(paths.LCB_QWEN_SUBMISSION)

SYSTEM = (
    "You are an expert Python programmer. You will be given a question (problem specification) and will "
    "generate a correct Python program that matches the specification and passes all tests."
)


@pytest.fixture(scope="module")
def problems():
    return {p.id: p for p in load_problems(SAMPLE)}


def test_functional_prompt_exact(problems):
    p = problems["2777"]
    user = chat_messages(p)[1]["content"]
    assert user == (
        "### Question:\n" + p.statement + "\n\n"
        "### Format: You will use the following starter code to write the solution to the problem and "
        "enclose your code within delimiters.\n"
        "```python\n" + p.starter_code + "\n```\n\n"
        "### Answer: (use the provided format with backticks)\n\n"
    )
    assert chat_messages(p)[0] == {"role": "system", "content": SYSTEM}


def test_stdin_prompt_exact(problems):
    p = problems["abc301_a"]
    (turn,) = chat_messages(p, system_role=False)
    assert turn["role"] == "user"
    assert turn["content"] == SYSTEM + "\n\n" + (
        "### Question:\n" + p.statement + "\n\n"
        "### Format: Read the inputs from stdin solve the problem and write the answer to stdout (do not "
        "directly test on the sample inputs). Enclose your code within delimiters as follows. Ensure that "
        "when the python program runs, it reads the inputs, runs the algorithm and writes output to STDOUT.\n"
        "```python\n# YOUR CODE HERE\n```\n\n"
        "### Answer: (use the provided format with backticks)\n\n"
    )


def test_base_model_prompts(problems):
    shots = load_few_shot(paths.few_shot_dir())
    raw = {k: json.loads((paths.few_shot_dir() / f"{k}.json").read_text()) for k in ("func", "stdin")}
    p = problems["2777"]
    ex = raw["func"][0]
    assert base_prompt(p, shots) == (
        f"### Question\n{ex['question']}\n\n### Starter Code\n{ex['sample_code']}\n\n### Answer\n\n{ex['answer']}\n\n"
        f"### Question\n{p.statement}\n\n### Starter Code\n{p.starter_code}\n\n### Answer\n\n"
    )
    q = problems["abc301_a"]
    ex = raw["stdin"][0]
    assert base_prompt(q, shots) == (
        f"### Question\n{ex['question']}\n\n### Answer\n\n{ex['answer']}\n\n### Question\n{q.statement}\n\n### Answer\n\n"
    )
    assert render_prompt(q, "base", few_shot=shots) == base_prompt(q, shots)


class _Templater:
    chat_template = "fake"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


def test_render_chat_and_errors(problems):
    p = problems["abc301_a"]
    text = render_prompt(p, "chat", tokenizer=_Templater())
    assert text.startswith(f"<system>{SYSTEM}</system><user>### Question:\n") and text.endswith("<assistant>")
    with pytest.raises(ValueError, match="few-shot"):
        render_prompt(p, "base")
    with pytest.raises(ValueError, match="chat template"):
        render_prompt(p, "chat")
    with pytest.raises(ValueError, match="unknown prompt style"):
        render_prompt(p, "bogus", tokenizer=_Templater())


@pytest.mark.parametrize("path", [O1, QWEN], ids=["o1-mini", "qwen2.5-coder-7b"])
def test_extraction_parity_with_official_code_lists(path):
    rows = paths.read_json(path)
    pairs = [(o, c) for r in rows for o, c in zip(r["output_list"], r["code_list"])]
    assert len(pairs) >= 880
    mismatches = [i for i, (o, c) in enumerate(pairs) if extract_code(o) != c]
    assert mismatches == []


def test_extraction_edge_cases():
    assert extract_code("") == "" and extract_code("no fences at all") == ""
    assert extract_code("```python\nprint(1)\n```") == "print(1)"
    assert extract_code("```python\na\n```\ntext\n```python\nb\n```") == "b"  # last block
    assert extract_code("```python\nprint(1)") == ""  # unclosed: LCB gives nothing
    assert extract_code("```python\nprint(1)", "lenient") == "print(1)"
    assert extract_code("print(1)\n", "lenient") == "print(1)"
    assert extract_code("```\n```") == ""
    assert extract_code("x ```py\ny\nz ``` w") == "y"  # fence lines may carry other text
    assert extract_code("```python\r\nprint(1)\r\n```") == "print(1)\r"  # LCB splits on \n only
    with pytest.raises(ValueError):
        extract_code("x", "other")


no_fence_text = st.text(alphabet=st.characters(blacklist_characters="`", blacklist_categories=("Cs",)), max_size=200)
no_fence_lines = st.lists(no_fence_text.map(lambda s: s.replace("\n", " ")), max_size=8).map("\n".join)


@settings(max_examples=300, deadline=None)
@given(prefix=no_fence_text, code=no_fence_lines, suffix=no_fence_text, lang=st.sampled_from(["python", "py", "", "Python3"]))
def test_fuzz_single_block_roundtrip(prefix, code, suffix, lang):
    text = f"{prefix}\n```{lang}\n{code}\n```\n{suffix}"
    assert extract_code(text) == code
    assert extract_code(text, "lenient") == code


@settings(max_examples=300, deadline=None)
@given(blocks=st.lists(no_fence_lines, min_size=1, max_size=4), gaps=st.lists(no_fence_text, min_size=5, max_size=5))
def test_fuzz_last_block_wins(blocks, gaps):
    text = gaps[0]
    for i, b in enumerate(blocks):
        text += f"\n```python\n{b}\n```\n" + gaps[i + 1]
    assert extract_code(text) == blocks[-1]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_never_raises_and_returns_a_slice(text):
    for mode in ("lcb", "lenient"):
        out = extract_code(text, mode)
        assert isinstance(out, str)
        assert out in text or out == text.strip()
    if text.count("```") == 0:
        assert extract_code(text) == ""
