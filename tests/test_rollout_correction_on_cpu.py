"""verl's rollout correction (rejection sampling) runs before the FlexRec estimator, on CPU.

verl 0.9.1's V1 ``PPOTrainer._compute_advantage`` calls
``rollout_corr_helper.compute_rollout_correction_and_add_to_batch`` *before* the estimator when
``algorithm.rollout_correction`` is set and the rollouts carry ``rollout_log_probs``: rejected
tokens (``rollout_rs`` token modes) or whole rejected sequences (sequence modes) are zeroed in
``response_mask``, which the estimator then receives and verl writes back to TransferQueue.

The chain here is the production one (the helpers of ``test_trainer_seam_on_cpu``): the FlexRec
reward manager scores each rollout inside verl's agent-loop postprocess, TransferQueue is the
in-memory store with TransferQueue's own wire encoding, verl pads and reorders the batch, the
rollouts' ``old_log_probs`` differ from their ``rollout_log_probs`` at chosen tokens (some of them
item tokens), and ``FlexRecTrainerSync._compute_advantage`` runs verl's own ``_compute_advantage``
(rollout correction included). Expected: FlexRec's advantages from first principles (group
statistics unchanged, as verl's GRPO keeps them: rejection changes the mask, not the rewards)
times verl's corrected mask; and in ``rec_r1`` mode without the uncertainty scale, exactly verl's
own GRPO under the same rejection.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from test_trainer_seam_on_cpu import InMemoryTQ, _config, _expected, _padded, _roll_out, _trainer
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size

from verl_flexrec.integration import handoff
from verl_flexrec.testing import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


OFF_POLICY_LOG_RATIO = 0.5  # old_log_prob - rollout_log_prob at the chosen tokens
CASES = {
    # token level: a token with log ratio 0.5 lies outside [log 0.9999, log 1.0001] and is rejected
    "token_k1": ("token_k1", "0.9999_1.0001"),
    # sequence level: the largest per-token k2 = 0.5 * 0.5**2 = 0.125 > 0.01 rejects the whole rollout
    "seq_max_k2": ("seq_max_k2", "0.01"),
    # both at once (every criterion must pass)
    "token_k1,seq_mean_k1": ("token_k1,seq_mean_k1", "0.9999_1.0001,0.99_1.01"),
}


def _off_policy_tokens(truth, key):
    """Tokens whose training log prob differs from the rollout's: rollouts of session 0 and 2 of
    each prompt, at token 1 and at the first token of the ranked ids at positions 0 and 2."""
    _, order, ids, spans = truth[key]
    session = int(key.split("_")[1])
    if session not in (0, 2):
        return []
    picked = {1}
    if order is not None:
        picked |= {spans[0][0], spans[2][0]}
    return sorted(t for t in picked if t < len(ids))


def _run(tokenizer, config, pad_to=12, seed=3):
    store = InMemoryTQ()
    with contextlib.ExitStack() as stack:
        for p in store.patches():
            stack.enter_context(p)
        truth = _roll_out(tokenizer, store, config, prompt_ids=[5, 6, 7])
        keys = list(truth)
        batch = KVBatchMeta(keys=keys, tags=[store.tags[("train", k)] for k in keys], partition_id="train")
        batch = upsample_batch_to_divisible_size(batch, pad_to, tokenizer.eos_token_id)
        batch.reorder(list(np.random.default_rng(seed).permutation(len(batch))))
        # what PPOTrainer._compute_old_log_prob writes: per-rollout log probs of the training policy;
        # the rollouts themselves logged 0 for every token (AgentLoopOutput.response_logprobs)
        old = []
        for key in batch.keys:
            n = len(truth[key][2]) if key in truth else 1
            lp = torch.zeros(n, dtype=torch.float32)
            if key in truth:
                lp[_off_policy_tokens(truth, key)] = OFF_POLICY_LOG_RATIO
            old.append(lp)
        nested = torch.nested.as_nested_tensor(old, layout=torch.jagged)
        store.kv_batch_put(batch.keys, "train", fields=TensorDict({"old_log_probs": nested}, batch_size=[len(old)]))
        metrics = {}
        out_batch = _trainer(config)._compute_advantage(batch, metrics)
        written = store.kv_batch_get(out_batch.keys, "train", ["advantages", "response_mask"])
    return truth, batch, written, metrics


def _with_rollout_correction(config, rs, threshold):
    config.algorithm.rollout_correction = {
        "rollout_is": None,
        "rollout_is_threshold": 2.0,
        "rollout_is_batch_normalize": False,
        "rollout_rs": rs,
        "rollout_rs_threshold": threshold,
        "bypass_mode": False,
    }
    return config


@pytest.fixture(autouse=True)
def _rollouts_log_zero(monkeypatch):
    """Every rollout reports its tokens' log probs (actor_rollout_ref.rollout.calculate_log_probs)."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopOutput

    original = AgentLoopOutput.__init__

    def with_log_probs(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.response_logprobs is None:
            self.response_logprobs = [0.0] * len(self.response_ids)

    monkeypatch.setattr(AgentLoopOutput, "__init__", with_log_probs)


@pytest.mark.parametrize("case", list(CASES))
def test_flexrec_advantages_under_verl_rejection_sampling(tokenizer, case):
    rs, threshold = CASES[case]
    config = _with_rollout_correction(_config(), rs, threshold)
    truth, batch, written, metrics = _run(tokenizer, config)
    keys = list(batch.keys)

    mask = _padded(written["response_mask"]).double()
    adv = _padded(written["advantages"]).double()
    width = adv.shape[1]
    # verl really rejected something, and only where the log probs differ
    full = torch.zeros_like(mask)
    off = torch.zeros_like(mask, dtype=torch.bool)
    for row, key in enumerate(keys):
        if key in truth:
            full[row, : len(truth[key][2])] = 1
            off[row, _off_policy_tokens(truth, key)] = True
    rejected = (full == 1) & (mask == 0)
    assert rejected.any() and (mask <= full).all()
    if rs.startswith("token"):
        assert bool(rejected[off].all())  # every off-policy token is out ...
    if rs == "token_k1":
        assert torch.equal(rejected, off)  # ... and nothing else
    if rs.startswith("seq"):  # whole rollouts
        for row in range(len(keys)):
            assert not rejected[row].any() or bool(rejected[row][full[row] == 1].all())
    assert any(k.startswith("rollout_corr/") for k in metrics)

    # FlexRec's advantages with the group statistics of the full batch, zero on rejected tokens
    expected, *_ = _expected(truth, keys)
    torch.testing.assert_close(adv, expected[:, :width] * mask, atol=2e-6, rtol=2e-6)
    # item tokens were among the rejected ones, and the ones kept still carry item credit
    item = torch.zeros_like(mask, dtype=torch.bool)
    for row, key in enumerate(keys):
        if key in truth and truth[key][1] is not None:
            for first, end in truth[key][3]:
                item[row, first:end] = True
    assert rejected[item].any()
    assert (adv[item & (mask == 1)] != 0).any()
    assert "flexrec/valid_ratio" in metrics


@pytest.mark.parametrize("case", ["token_k1", "seq_max_k2"])
def test_rec_r1_under_rejection_sampling_is_verls_grpo(tokenizer, case):
    """FlexRec without item credit and scale = verl's own GRPO, both after verl's rejection step."""
    rs, threshold = CASES[case]
    flexrec = {"advantage": {"mode": "rec_r1"}, "uncertainty": {"enable": False}}
    _, _, ours, _ = _run(tokenizer, _with_rollout_correction(_config(flexrec=flexrec), rs, threshold))
    _, _, grpo, _ = _run(tokenizer, _with_rollout_correction(_config(adv_estimator="grpo", flexrec=flexrec), rs, threshold))
    torch.testing.assert_close(_padded(ours["advantages"]), _padded(grpo["advantages"]), atol=1e-6, rtol=1e-6)
    assert torch.equal(_padded(ours["response_mask"]), _padded(grpo["response_mask"]))


def test_a_mask_longer_than_the_fetched_response_is_still_refused():
    """Rejection only removes tokens; a row whose mask reaches past its own response is a row of
    another rollout (verl reordered rows), and the error says so."""
    provided = handoff.FlexRecBatch(uids=["a", "a"], infos=[None, None], response_lengths=[3, 5], real=[True, True])
    mask = torch.zeros(2, 5)
    mask[0, :5] = 1  # row 0 holds the 5-token rollout's mask
    mask[1, :3] = 1
    index = np.array(["a", "a"], dtype=object)
    with pytest.raises(handoff.FlexRecBatchMismatch, match=r"row 0.*token 3.*3 response tokens.*order"):
        provided.check_aligned(index, mask)
    # fewer tokens than fetched (verl rejected some, even all): accepted
    mask = torch.zeros(2, 5)
    mask[1, [0, 2, 4]] = 1
    provided.check_aligned(index, mask)


def test_item_tokens_past_the_response_are_refused():
    """The reward manager's item tokens must lie in the rollout's own response."""
    from verl_flexrec.integration.estimator import compute_flexrec_advantage
    from verl_flexrec.integration.item_data import encode_item_data

    def info(spans):
        return {"flexrec_valid": 1.0, "flexrec_error": "", "flexrec_seq_reward": 1.0, "flexrec_ndcg": 0.9,
                "flexrec_uncertainty": 0.0, **encode_item_data([0.5, 0.0], spans)}

    provided = handoff.FlexRecBatch(uids=["a", "a"], infos=[info([[0, 1], [1, 2]]), info([[2, 3], [4, 6]])],
                                    response_lengths=[6, 5], real=[True, True])
    mask = torch.zeros(2, 6)
    mask[0, :6], mask[1, :5] = 1, 1
    with handoff.provide(provided), pytest.raises(ValueError, match=r"row 1 .*item 1 on response token 5.*5 tokens"):
        compute_flexrec_advantage(torch.zeros(2, 6), mask, index=np.array(["a", "a"], dtype=object), config=_config().algorithm)
