"""Trainer-path options through verl's own ``PPOTrainer._compute_advantage`` (CPU, no Ray).

The harness of ``tests/test_trainer_seam_on_cpu.py`` (its in-memory TransferQueue with
TransferQueue's wire encoding, verl's agent-loop postprocess, the first-principles reference
``_expected``), on what that file leaves at the defaults:

* ``algorithm.use_kl_in_reward=true``: verl subtracts ``beta * KL`` from ``rm_scores`` per token;
  the sequence part of FlexRec's advantage must be built from verl's ``token_level_rewards``
  (penalty included), the item part is unchanged;
* ``algorithm.norm_adv_by_std_in_grpo=false``: mean-centring only (Dr.GRPO), sequence and items;
* multi-output trajectories (keys ``{uid}_{session}_{index}``): verl copies the final output's
  reward and ``reward_extra_info`` to the earlier outputs; only the final output of each session
  takes part in the statistics and carries item advantages, the earlier ones get the session's
  sequence advantage (as verl's ``compute_advantage_for_multi_trajectories`` does for GRPO).
"""

from __future__ import annotations

import asyncio
import contextlib
import math

import numpy as np
import pytest
import torch
from transfer_queue import KVBatchMeta
from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
from verl.trainer.ppo import core_algos

from test_trainer_seam_on_cpu import (  # the seam harness (tests/ is on sys.path, see conftest.py)
    ROLLOUTS,
    InMemoryTQ,
    _agent_loop_worker,
    _config,
    _expected,
    _ground_truth,
    _padded,
    _response,
    _roll_out,
    _run_seam,
    _trainer,
)
from verl_flexrec.testing import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def _item_token_mask(truth, keys, width):
    """True on the tokens that spell a ranked id (valid rollouts only)."""
    on = torch.zeros(len(keys), width, dtype=torch.bool)
    for row, key in enumerate(keys):
        if key in truth and truth[key][1] is not None:
            for first, end in truth[key][3]:
                on[row, first:end] = True
    return on


def _group_normalise(values: dict, truth, norm_by_std=True):
    """(R - mean_G R) / (std_G R + 1e-6) per prompt group, written out (std: unbiased)."""
    out = {}
    for prompt in {t[0] for t in truth.values()}:
        keys = [k for k in values if truth[k][0] == prompt]
        v = np.array([values[k] for k in keys], dtype=np.float64)
        centred = v - v.mean()
        adv = centred / (v.std(ddof=1) + 1e-6) if norm_by_std else centred
        out.update(zip(keys, adv.tolist()))
    return out


# -- norm_adv_by_std_in_grpo=false ----------------------------------------------------------------
def test_norm_adv_by_std_false_is_honoured_on_the_trainer_path(tokenizer):
    config = _config()
    config.algorithm.norm_adv_by_std_in_grpo = False
    truth, batch, written, _ = _run_seam(tokenizer, config, seed=2)
    expected, *_ = _expected(truth, list(batch.keys), norm_by_std=False)
    adv = _padded(written["advantages"]).double()
    torch.testing.assert_close(adv, expected[:, : adv.shape[1]], atol=2e-6, rtol=2e-6)
    # and it differs from the std-normalised default (the switch is not a no-op here)
    default, *_ = _expected(truth, list(batch.keys), norm_by_std=True)
    assert (default[:, : adv.shape[1]] - adv).abs().max() > 0.05


# -- use_kl_in_reward=true ------------------------------------------------------------------------
BETA = 0.5


def _run_with_kl(tokenizer, config, seed=3):
    """Roll out, give every row old / reference log-probs, run the trainer's _compute_advantage."""
    store = InMemoryTQ()
    rng = np.random.default_rng(seed)
    kl_sum = {}
    with contextlib.ExitStack() as stack:
        for p in store.patches():
            stack.enter_context(p)
        truth = _roll_out(tokenizer, store, config, prompt_ids=[5, 6, 7])
        keys = list(truth)
        for key in keys:
            n = len(truth[key][2])
            old = torch.tensor(rng.normal(-1.0, 0.5, n), dtype=torch.float32)
            ref = torch.tensor(rng.normal(-1.0, 0.5, n), dtype=torch.float32)
            store.rows[("train", key)]["old_log_probs"] = old
            store.rows[("train", key)]["ref_log_prob"] = ref
            kl_sum[key] = float((old.double() - ref.double()).sum())  # verl's "kl" estimator: logp - ref_logp
        batch = KVBatchMeta(keys=keys, tags=[store.tags[("train", k)] for k in keys], partition_id="train")
        trainer = _trainer(config)
        trainer.kl_ctrl_in_reward = core_algos.FixedKLController(kl_coef=BETA)
        metrics = {}
        trainer._compute_advantage(batch, metrics)
        written = store.kv_batch_get(keys, "train", ["advantages", "token_level_rewards"])
    return truth, keys, written, kl_sum, metrics


@pytest.mark.parametrize("flexrec", [{"uncertainty": {"eps": 0.01}}, {"advantage": {"mode": "rec_r1"}, "uncertainty": {"enable": False}}],
                         ids=["flexrec", "rec_r1"])
def test_in_reward_kl_penalty_reaches_the_sequence_advantage(tokenizer, flexrec):
    config = _config(flexrec=flexrec)
    config.algorithm.use_kl_in_reward = True
    config.algorithm.kl_penalty = "kl"
    truth, keys, written, kl_sum, metrics = _run_with_kl(tokenizer, config)
    assert metrics["actor/reward_kl_penalty_coeff"] == BETA  # verl applied its penalty
    items = "mode" not in flexrec.get("advantage", {})
    plain, scale, _, _, seq = _expected(truth, keys, items=items, uncertainty=items)
    # sequence reward = what verl's token_level_rewards sum to: R - beta * sum_t KL_t
    seq_kl = {k: seq[k] - BETA * kl_sum[k] for k in keys}
    tlr = _padded(written["token_level_rewards"]).double().sum(-1)
    np.testing.assert_allclose(tlr.numpy(), [seq_kl[k] for k in keys], rtol=1e-5, atol=1e-5)
    seq_adv = _group_normalise(seq_kl, truth)
    adv = _padded(written["advantages"]).double()
    on_item = _item_token_mask(truth, keys, adv.shape[1]) if items else torch.zeros_like(adv, dtype=torch.bool)
    expected = plain[:, : adv.shape[1]].clone()  # item tokens: the KL-free item advantages
    for row, key in enumerate(keys):
        n = len(truth[key][2])
        expected[row, :n] = torch.where(on_item[row, :n], expected[row, :n], seq_adv[key] * scale[key])
    torch.testing.assert_close(adv, expected, atol=5e-6, rtol=5e-6)
    # the penalty changed the sequence advantages (a test that could not tell would be no test)
    assert max(abs(seq_adv[k] * scale[k] - plain[keys.index(k), 0].item()) for k in keys) > 0.05


# -- multi-output trajectories ----------------------------------------------------------------------
MULTI = {("p0", 0): 2, ("p1", 1): 3}  # (prompt, session) -> number of outputs of that trajectory


def _roll_out_multi(tokenizer, store, config):
    """ROLLOUTS with some sessions written as several outputs (an agent turn before the answer)."""
    manager = get_reward_manager_cls("flexrec")(config=config, tokenizer=tokenizer, compute_score=None)
    worker = _agent_loop_worker(manager, config)
    final_truth, earlier = {}, {}
    for prompt, orders in ROLLOUTS.items():
        for session, order in enumerate(orders):
            ids, spans = _response(tokenizer, order)
            n_out = MULTI.get((prompt, session), 1)
            outputs = []
            for i in range(n_out - 1):  # earlier turns: plain text of their own lengths
                pre = tokenizer.encode("let me look at the candidates" + " again" * (i + 1), add_special_tokens=False)
                outputs.append(pre)
                earlier[f"{prompt}_{session}_{i}"] = (prompt, session, pre)
            outputs.append(ids)
            final_truth[f"{prompt}_{session}_{n_out - 1}"] = (prompt, order, ids, spans)
            agent_outputs = [AgentLoopOutput(prompt_ids=[5, 6, 7], response_ids=r, response_mask=[1] * len(r), num_turns=2,
                                             metrics=AgentLoopMetrics(), extra_fields={}) for r in outputs]
            kwargs = {"uid": prompt, "session_id": session, "global_steps": 1, "data_source": "flexrec/test",
                      "reward_model": {"style": "rule", "ground_truth": _ground_truth(prompt)},
                      "extra_info": {"split": "train", "index": 0}}
            asyncio.run(worker._agent_loop_postprocess(agent_outputs, False, **kwargs))
    return final_truth, earlier


@pytest.mark.parametrize("flexrec", [{"uncertainty": {"eps": 0.01}}, {"advantage": {"mode": "rec_r1"}, "uncertainty": {"enable": False}}],
                         ids=["flexrec", "rec_r1"])
def test_only_the_final_output_of_each_session_counts(tokenizer, flexrec):
    config = _config(flexrec=flexrec)
    store = InMemoryTQ()
    with contextlib.ExitStack() as stack:
        for p in store.patches():
            stack.enter_context(p)
        truth, earlier = _roll_out_multi(tokenizer, store, config)
        keys = sorted([*truth, *earlier])
        assert len(keys) == 7 + 3
        batch = KVBatchMeta(keys=keys, tags=[store.tags[("train", k)] for k in keys], partition_id="train")
        metrics = {}
        _trainer(config)._compute_advantage(batch, metrics)
        written = store.kv_batch_get(keys, "train", ["advantages", "response_mask"])
    items = "mode" not in flexrec.get("advantage", {})
    # the reference: the seven final outputs alone, as if every session had one output
    expected, scale, *_ = _expected(truth, keys, items=items, uncertainty=items)
    adv = _padded(written["advantages"]).double()
    width = max(expected.shape[1], adv.shape[1])
    expected = torch.nn.functional.pad(expected, (0, width - expected.shape[1]))
    for key, (prompt, session, ids) in earlier.items():
        final = next(k for k in truth if k.startswith(f"{prompt}_{session}_"))
        row, final_row = keys.index(key), keys.index(final)
        expected[row, : len(ids)] = expected[final_row, 0]  # the session's sequence advantage (token 0: <think>)
    torch.testing.assert_close(adv, expected[:, : adv.shape[1]], atol=2e-6, rtol=2e-6)
    assert metrics["flexrec/valid_ratio"] == pytest.approx(6 / 7)  # metrics over final outputs only
    if items:
        assert metrics["flexrec/uncertainty_scale/mean"] == pytest.approx(np.mean(list(scale.values())), abs=1e-6)


# --- the trainer mixin's own checks, without verl's trainer ---------------------------------------

class _VerlWithoutTheEstimator:
    """A verl ``_compute_advantage`` that never calls the registered estimator."""

    def _compute_advantage(self, batch, metrics):
        return batch


def _mixin_trainer(adv_estimator):
    from omegaconf import OmegaConf

    from verl_flexrec.integration.trainer import FlexRecTrainerMixin

    class Trainer(FlexRecTrainerMixin, _VerlWithoutTheEstimator):
        config = OmegaConf.create({"algorithm": {"adv_estimator": adv_estimator}})

    return Trainer.__new__(Trainer)  # the mixin's __init__ resolves a real run's inputs


def test_trainer_refuses_a_verl_that_skips_the_flexrec_estimator(monkeypatch):
    from verl_flexrec.integration import handoff

    empty = handoff.FlexRecBatch(uids=[], infos=[], response_lengths=[], real=[])
    trainer = _mixin_trainer("flexrec")
    monkeypatch.setattr(trainer, "_fetch_flexrec_batch", lambda batch: empty)
    with pytest.raises(RuntimeError, match="did not call the flexrec estimator"):
        trainer._compute_advantage("batch", {})
    other = _mixin_trainer("grpo")  # another estimator: verl's own path, nothing to consume
    monkeypatch.setattr(other, "_fetch_flexrec_batch", lambda batch: empty)
    assert other._compute_advantage("batch", {}) == "batch"


def test_trainer_reads_a_batch_without_extra_fields(monkeypatch):
    """TransferQueue drops a field no rollout carries: with a non-FlexRec estimator (a GRPO
    baseline run with the flexrec_sync trainer) the rows simply carry no FlexRec info."""
    from types import SimpleNamespace

    from verl_flexrec.integration import trainer as trainer_module

    fetched = {"uid": ["u1", "u2", "u2"]}  # response lengths come from TransferQueue's response_len tags
    monkeypatch.setattr(trainer_module.tq, "kv_batch_get", lambda **kw: dict(fetched))
    batch = SimpleNamespace(keys=["u1_0", "u2_0", "u2_1"], partition_id="train",
                            tags=[{"response_len": 2}, {"response_len": 1}, {"is_padding": True, "response_len": 3}])
    provided = _mixin_trainer("grpo")._fetch_flexrec_batch(batch)
    assert provided.uids == ["u1", "u2", "u2"] and provided.infos == [None, None, None]
    assert provided.response_lengths == [2, 1, 3] and provided.real == [True, True, False]
    with pytest.raises(ValueError, match="lacks"):  # the flexrec estimator needs the reward manager's info
        _mixin_trainer("flexrec")._fetch_flexrec_batch(batch)


def test_training_metrics_report_the_clipped_share():
    from verl_flexrec.integration.item_data import encode_item_data
    from verl_flexrec.integration.metrics import flexrec_training_metrics

    infos = [{"flexrec_valid": 1.0, "flexrec_ndcg": 0.5, "flexrec_uncertainty": 0.1, "flexrec_error": "",
              **encode_item_data([0.2, -0.2], [(0, 1), (1, 2)])}] * 4
    out = flexrec_training_metrics(infos, torch.tensor([0.5, 1.0, 3.0, 1.5]), torch.tensor([True, False, True, False]))
    assert out["flexrec/uncertainty_scale/clipped_ratio"] == 0.5
    assert (out["flexrec/uncertainty_scale/min"], out["flexrec/uncertainty_scale/max"]) == (0.5, 3.0)
    assert flexrec_training_metrics(infos, torch.ones(4))["flexrec/uncertainty_scale/clipped_ratio"] == 0.0


def test_final_rows_of_keys_with_and_without_an_output_index():
    """``{uid}_{session}_{index}``: the row of each trajectory's highest index; a key whose last part
    is not a number is a trajectory of its own with index 0."""
    from verl_flexrec.integration.trainer import _final_rows

    keys = ["p1_0_0", "p1_0_2", "p1_0_1", "p2_0_0", "solo", "p3_x"]
    assert _final_rows(keys) == [1, 1, 1, 3, 4, 5]


def test_an_earlier_output_is_zero_outside_its_response_mask():
    """An earlier output of a multi-output trajectory carries its session's sequence advantage on
    its response tokens and exactly 0 on padding (the estimator's output is dense ``(bs, L)``)."""
    from omegaconf import OmegaConf

    from verl_flexrec.integration import handoff
    from verl_flexrec.integration.estimator import compute_flexrec_advantage
    from verl_flexrec.integration.item_data import encode_item_data

    def info(score):
        return {"flexrec_valid": 0.0, "flexrec_error": "missing_tags", "flexrec_ndcg": 0.0, "flexrec_uncertainty": 0.0,
                "flexrec_seq_reward": score, **encode_item_data([], [])}

    # rows: s1's earlier output (2 tokens), s1's final output, s2's final output; one prompt "p"
    provided = handoff.FlexRecBatch(uids=["p", "p", "p"], infos=[None, info(1.0), info(-1.0)], response_lengths=[2, 4, 3],
                                    real=[True, True, True], final_rows=[1, 1, 2])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.float32)
    rewards = torch.zeros(3, 4)
    rewards[1, 3], rewards[2, 2] = 1.0, -1.0
    config = OmegaConf.create({"norm_adv_by_std_in_grpo": True, "flexrec": {}})
    with handoff.provide(provided):
        adv, _ = compute_flexrec_advantage(rewards, mask, np.array(["p", "p", "p"], dtype=object), config)
    a = 1 / (math.sqrt(2.0) + 1e-6)  # GRPO of (1, -1): +-1/std, std = sqrt(2) (unbiased)
    want = torch.tensor([[a, a, 0, 0], [a, a, a, a], [-a, -a, -a, 0]])
    torch.testing.assert_close(adv, want, rtol=1e-6, atol=1e-7)
    assert torch.isfinite(adv).all() and adv.dtype == torch.float32


def test_the_estimator_takes_the_trainers_options_only_for_the_config_object_they_were_read_from():
    """flexrec_sync reads ``algorithm`` once per run and hands the result over with the rows; the
    estimator uses it when verl passes that same config object and reads any other config itself
    (here: pooled vs per-position item statistics, which give different advantages)."""
    from omegaconf import OmegaConf

    from verl_flexrec.integration import handoff
    from verl_flexrec.integration.estimator import compute_flexrec_advantage, estimator_options
    from verl_flexrec.integration.item_data import collate_flexrec_inputs, encode_item_data

    rng = np.random.default_rng(0)
    infos = [{"flexrec_seq_reward": float(rng.normal()), "flexrec_uncertainty": 0.0,
              **encode_item_data(rng.normal(size=3), [(0, 1), (2, 3), (4, 5)])} for _ in range(4)]
    index = np.array(["p", "p", "q", "q"], dtype=object)
    mask, rewards = torch.ones(4, 6), torch.zeros(4, 6)
    pooled = OmegaConf.create({"norm_adv_by_std_in_grpo": True, "flexrec": {"advantage": {"item_norm": "pooled"}}})
    position = OmegaConf.create({"norm_adv_by_std_in_grpo": True, "flexrec": {}})
    direct = {name: compute_flexrec_advantage(rewards, mask, index, cfg, **{**collate_flexrec_inputs(infos), "seq_reward": None})[0]
              for name, cfg in (("pooled", pooled), ("position", position))}
    assert not torch.equal(direct["pooled"], direct["position"])
    for read_from in (pooled, position):
        provided = handoff.FlexRecBatch(uids=list(index), infos=infos, response_lengths=[6] * 4, real=[True] * 4,
                                        options=(read_from, *estimator_options(read_from)))
        for name, cfg in (("pooled", pooled), ("position", position)):
            with handoff.provide(provided):
                adv, _ = compute_flexrec_advantage(rewards, mask, index, cfg)
            assert torch.equal(adv, direct[name])


def test_trainer_reads_the_algorithm_config_once_per_run(monkeypatch):
    from types import SimpleNamespace

    from verl_flexrec.integration import trainer as trainer_module
    from verl_flexrec.integration.estimator import estimator_options

    monkeypatch.setattr(trainer_module.tq, "kv_batch_get", lambda **kw: {"uid": ["u1"]})
    batch = SimpleNamespace(keys=["u1_0"], partition_id="train", tags=[{"response_len": 2}])
    trainer = _mixin_trainer("grpo")
    first, second = trainer._fetch_flexrec_batch(batch), trainer._fetch_flexrec_batch(batch)
    assert first.options[0] is trainer.config.algorithm and second.options is first.options
    assert first.options[1:] == estimator_options(trainer.config.algorithm)
