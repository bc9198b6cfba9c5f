"""Tests for verl_flexrec.testing: the tiny tokenizer and model other tests build on."""

from __future__ import annotations

import string

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verl_flexrec.testing import (
    ANSWER_TAGS,
    EOS_TOKEN,
    PAD_TOKEN,
    build_tiny_model,
    build_tiny_tokenizer,
)

SAMPLE = (
    "<think>The user likes comedy and music; item 12 fits the need.</think>\n"
    "<answer>[7, 12, 3, 'v1429', \"30\", 1]</answer>"
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory, tokenizer):
    out_dir = tmp_path_factory.mktemp("tiny")
    build_tiny_model(tokenizer, out_dir=out_dir, seed=0)
    return out_dir


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def test_tokenizer_is_small_and_deterministic(tokenizer):
    assert 260 < len(tokenizer) < 1000
    assert build_tiny_tokenizer().backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_special_tokens(tokenizer):
    assert tokenizer.pad_token == PAD_TOKEN and tokenizer.eos_token == EOS_TOKEN
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1
    # Special tokens vanish with skip_special_tokens; the answer tags must not.
    ids = tokenizer.encode("<|im_start|><think>a</think><|im_end|>", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>a</think>"


def test_tags_are_single_tokens_and_aliases_are_short(tokenizer):
    for tag in ANSWER_TAGS:
        assert len(tokenizer.encode(tag, add_special_tokens=False)) == 1, tag
    for alias in map(str, range(1, 31)):
        # Qwen2-style split: one token per digit, so the aliases "1".."30" take 1-2 tokens.
        ids = tokenizer.encode(alias, add_special_tokens=False)
        assert [tokenizer.decode([i]) for i in ids] == list(alias)
        in_list = tokenizer.encode(f"[3, {alias}]", add_special_tokens=False)
        assert [tokenizer.decode([i]) for i in in_list][-len(alias) - 1 :] == [*alias, "]"]


@pytest.mark.parametrize(
    "text",
    [
        SAMPLE,
        "",
        "  leading and trailing spaces  \n\n",
        "0123456789 [1,2,3] <answer></answer> </think> x<think>y",
        string.printable,
    ],
)
def test_round_trip_fixed(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.lists(
        st.one_of(st.text(alphabet=string.printable, max_size=12), st.sampled_from(ANSWER_TAGS)),
        max_size=8,
    ).map("".join)
)
def test_round_trip_ascii_with_tags(tokenizer, text):
    # `tokenizer` is module-scoped, which Hypothesis allows (built once, never mutated).
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_offsets_tile_the_text(tokenizer):
    encoding = tokenizer(SAMPLE, return_offsets_mapping=True, add_special_tokens=False)
    offsets = encoding["offset_mapping"]
    assert len(offsets) == len(encoding["input_ids"])
    # Contiguous, gap-free, in order: the reward manager relies on this to map id spans to tokens.
    assert offsets[0][0] == 0 and offsets[-1][1] == len(SAMPLE)
    for (_, end), (start, _) in zip(offsets, offsets[1:]):
        assert end == start
    for token_id, (start, end) in zip(encoding["input_ids"], offsets):
        assert tokenizer.decode([token_id]) == SAMPLE[start:end]


def test_offsets_locate_an_id(tokenizer):
    text = "<answer>[7, 12, 3]</answer>"
    encoding = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    start = text.index("12")
    covering = [i for i, (s, e) in enumerate(encoding["offset_mapping"]) if s < start + 2 and e > start]
    assert "".join(tokenizer.decode([encoding["input_ids"][i]]) for i in covering).strip() == "12"


def test_chat_template_renders_chatml(tokenizer):
    messages = [{"role": "system", "content": "Rank."}, {"role": "user", "content": "Items: 1, 2"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nRank.<|im_end|>\n"
        "<|im_start|>user\nItems: 1, 2<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    without_prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert without_prompt == rendered.removesuffix("<|im_start|>assistant\n")


def test_chat_template_adds_default_system_prompt(tokenizer):
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert rendered == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"


def test_saved_tokenizer_loads_with_auto_and_verl(tmp_path, tokenizer, saved_dir):
    from transformers import AutoTokenizer
    from verl.utils import hf_tokenizer

    build_tiny_tokenizer(tmp_path)
    expected = tokenizer(SAMPLE, return_offsets_mapping=True)
    for directory in (tmp_path, saved_dir):
        for loaded in (AutoTokenizer.from_pretrained(str(directory)), hf_tokenizer(str(directory))):
            encoding = loaded(SAMPLE, return_offsets_mapping=True)
            assert encoding["input_ids"] == expected["input_ids"]
            assert encoding["offset_mapping"] == expected["offset_mapping"]
            assert loaded.eos_token == EOS_TOKEN and loaded.pad_token == PAD_TOKEN
            assert loaded.chat_template == tokenizer.chat_template


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def test_model_size_and_vocab(tokenizer):
    model = build_tiny_model(tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    assert 50_000 <= n_params <= 300_000
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.num_hidden_layers == 2
    assert model.config.eos_token_id == tokenizer.eos_token_id


def test_model_is_seeded_and_leaves_global_rng_alone(tokenizer):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = build_tiny_model(tokenizer, seed=0)
    assert torch.equal(torch.rand(1), expected_next)
    same = build_tiny_model(tokenizer, seed=0)
    other = build_tiny_model(tokenizer, seed=1)
    weight = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(first.state_dict()[weight], same.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])


def test_model_generates(tokenizer):
    model = build_tiny_model(tokenizer)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Rank 1, 2, 3"}], add_generation_prompt=True, tokenize=False
    )
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert output.shape == (1, inputs["input_ids"].shape[1] + 4)
    assert torch.equal(output[0, : inputs["input_ids"].shape[1]], inputs["input_ids"][0])
    assert int(output.max()) < len(tokenizer)


def test_saved_model_reloads_with_same_logits(tokenizer, saved_dir):
    from transformers import AutoModelForCausalLM

    original = build_tiny_model(tokenizer, seed=0)
    reloaded = AutoModelForCausalLM.from_pretrained(str(saved_dir))
    inputs = tokenizer(SAMPLE, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(original(**inputs).logits, reloaded(**inputs).logits, atol=1e-6)
