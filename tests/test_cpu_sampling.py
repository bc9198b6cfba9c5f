"""verl_flexrec.cpu.sampling: vLLM-style sampling parameters -> transformers.generate arguments."""

import pytest

from verl_flexrec.cpu.sampling import generation_kwargs, max_new_tokens


def test_max_new_tokens_defaults_to_response_length_within_budget():
    # verl's vLLM server: min(response_length, prompt_length + response_length - len(prompt))
    assert max_new_tokens(100, {}, response_length=48, prompt_length=1280, max_model_len=None) == 48
    assert max_new_tokens(1300, {}, response_length=48, prompt_length=1280, max_model_len=None) == 28


def test_max_new_tokens_honours_max_tokens_and_clamps():
    kw = {"response_length": 48, "prompt_length": 100, "max_model_len": None}
    assert max_new_tokens(10, {"max_tokens": 5}, **kw) == 5
    assert max_new_tokens(10, {"max_new_tokens": 7}, **kw) == 7
    assert max_new_tokens(10, {"max_tokens": 0}, **kw) == 1
    assert max_new_tokens(140, {"max_tokens": 100}, **kw) == 8  # 148 - 140 left
    assert max_new_tokens(10, {}, response_length=48, prompt_length=100, max_model_len=20) == 10


def test_max_new_tokens_rejects_a_prompt_that_fills_the_context():
    with pytest.raises(ValueError, match="no room"):
        max_new_tokens(148, {}, response_length=48, prompt_length=100, max_model_len=None)


def test_temperature_zero_is_greedy():
    kw = generation_kwargs({"temperature": 0, "top_p": 0.5, "top_k": 3}, [2], 0)
    assert kw["do_sample"] is False and kw["temperature"] is None and kw["top_k"] is None
    assert kw["eos_token_id"] == [2] and kw["pad_token_id"] == 0


def test_sampling_maps_top_k_minus_one_to_off_and_adds_stop_tokens():
    kw = generation_kwargs({"temperature": 0.7, "top_p": 0.9, "top_k": -1, "stop_token_ids": [5, 2]}, [2], 0)
    assert kw["do_sample"] is True and kw["temperature"] == 0.7 and kw["top_p"] == 0.9 and kw["top_k"] == 0
    assert kw["eos_token_id"] == [2, 5]
    assert generation_kwargs({"temperature": 1.0, "top_k": 4}, [2], 0)["top_k"] == 4


def test_ignore_eos_drops_the_eos_stop():
    assert generation_kwargs({"temperature": 1.0, "ignore_eos": True}, [2], 0)["eos_token_id"] is None
