"""verl_flexrec.cpu.rollout.HFGenerationServer, called directly (no Ray): token in, token out."""

import asyncio
from types import SimpleNamespace

import pytest
import torch

from verl_flexrec.cpu.rollout import HFGenerationServer
from verl_flexrec.testing import build_tiny_model, build_tiny_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_model")
    build_tiny_model(build_tiny_tokenizer(), out, seed=3)
    return out


def _server(model_dir, response_length=12):
    from verl.workers.config import RolloutConfig

    config = RolloutConfig(name="hf_cpu", prompt_length=64, response_length=response_length,
                           tensor_model_parallel_size=1)
    return HFGenerationServer(config, SimpleNamespace(local_path=str(model_dir)))


def _manual_greedy(model, prompt, n, eos):
    """Reference: argmax decoding with full forwards (no cache, no generate)."""
    ids = list(prompt)
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            out.append(nxt)
            if nxt in eos:
                break
            ids.append(nxt)
    return out


def test_greedy_generation_matches_manual_argmax_decoding(model_dir):
    server = _server(model_dir)
    prompt = [5, 17, 42, 7, 99]
    out = asyncio.run(server.generate(prompt, {"temperature": 0, "logprobs": True}, "r1"))
    ref = _manual_greedy(server.model, prompt, 12, server.eos_token_ids)
    assert out.token_ids == ref
    assert out.stop_reason == "completed" and len(out.log_probs) == len(ref)
    assert all(lp <= 0 for lp in out.log_probs)
    assert asyncio.run(server.generate(prompt, {"temperature": 0, "max_tokens": 3}, "r2")).token_ids == ref[:3]


def test_load_weights_changes_the_policy_and_rejects_unknown_names(model_dir):
    server = _server(model_dir)
    prompt = [5, 17, 42]
    before = {k: v.clone() for k, v in server.model.state_dict().items()}
    other = build_tiny_model(build_tiny_tokenizer(), seed=11)
    n = server.load_weights(dict(other.state_dict()), global_steps=4)
    assert n == len(other.state_dict()) and server.weight_version == 1
    after = asyncio.run(server.generate(prompt, {"temperature": 0}, "b"))
    assert after.token_ids == _manual_greedy(other, prompt, 12, server.eos_token_ids)
    now = server.model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in other.state_dict().items())
    assert any(not torch.equal(now[k], before[k]) for k in before)
    assert after.extra_fields["global_steps"] == 4
    with pytest.raises(KeyError, match="unknown parameters"):
        server.load_weights({"not.a.param": torch.zeros(1)})
    partial = dict(other.state_dict())
    partial.pop("model.norm.weight")
    with pytest.raises(ValueError, match="lacks parameters"):
        server.load_weights(partial)


def _sample(server, prompt):
    return tuple(asyncio.run(server.generate(prompt, {"temperature": 1.0, "top_k": -1}, "x")).token_ids)


def test_sampling_is_seeded_and_multimodal_input_is_refused(model_dir):
    a = asyncio.run(_server(model_dir).generate([5, 17], {"temperature": 1.0, "top_k": -1}, "x")).token_ids
    b = asyncio.run(_server(model_dir).generate([5, 17], {"temperature": 1.0, "top_k": -1}, "x")).token_ids
    assert a == b
    with pytest.raises(NotImplementedError):
        asyncio.run(_server(model_dir).generate([5], {"temperature": 0}, "y", image_data=["img"]))


def test_samples_do_not_depend_on_the_order_requests_arrive_in(model_dir):
    """The agent loop's requests arrive in a different order each run: the same multiset of samples
    per prompt either way; repeats of one prompt draw different samples; new weights, new draws."""
    prompts = [[5, 17], [9, 3, 4], [5, 17], [9, 3, 4], [5, 17], [9, 3, 4]]
    first, second = _server(model_dir, response_length=20), _server(model_dir, response_length=20)
    forward = [(tuple(p), _sample(first, p)) for p in prompts]
    backward = [(tuple(p), _sample(second, p)) for p in prompts[::-1]]
    assert sorted(forward) == sorted(backward)
    assert len({out for p, out in forward if p == (5, 17)}) > 1  # three draws of one prompt differ
    other_seed = _server(model_dir, response_length=20)
    other_seed.seed += 1
    assert [_sample(other_seed, p) for p in prompts] != [out for _, out in forward]
    first.load_weights(dict(first.model.state_dict()))  # same weights, a new version: new draws
    assert [_sample(first, p) for p in prompts] != [out for _, out in forward]
