"""Multi-output trajectories: FlexRec's group statistics count each session once, like verl's GRPO.

An agent loop may return several outputs per session (multi-turn); verl's
``AgentLoopWorkerTQ._agent_loop_postprocess`` scores the final one, copies its reward and
``reward_extra_info`` to the earlier ones and stores each as ``{uid}_{session}_{index}``. verl's
GRPO (``v1.utils.compute_advantage_for_multi_trajectories``) normalises over the final output of
each session and gives the session's other outputs that advantage. The FlexRec trainer does the
same: here, verl's real postprocess, padding and ``_compute_advantage`` run on sessions of 1-3
outputs, and

* FlexRec in ``rec_r1`` mode without the uncertainty scale equals verl's own GRPO on the same rows;
* full FlexRec gives every final output exactly what the estimator gives the final outputs alone,
  and every earlier output its final output's sequence advantage on each of its tokens.
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest
import torch
from test_trainer_seam_on_cpu import (
    ROLLOUTS,
    InMemoryTQ,
    _agent_loop_worker,
    _config,
    _ground_truth,
    _padded,
    _response,
    _trainer,
)
from transfer_queue import KVBatchMeta
from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size

from verl_flexrec.advantage import flexrec_advantages
from verl_flexrec.config import FlexRecConfig
from verl_flexrec.integration.item_data import collate_flexrec_inputs
from verl_flexrec.testing import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def _turns(session: int) -> int:
    return 1 + session % 3  # sessions of 1, 2 and 3 outputs


def _roll_out_multi_turn(tokenizer, config):
    manager = get_reward_manager_cls("flexrec")(config=config, tokenizer=tokenizer, compute_score=None)
    worker = _agent_loop_worker(manager, config)
    lengths = {}
    for uid, orders in ROLLOUTS.items():
        for session, order in enumerate(orders):
            outputs = []
            for turn in range(_turns(session) - 1):  # earlier turns: a tool call, no ranking
                ids = tokenizer.encode(f"let me look up item {turn + 1} first", add_special_tokens=False)
                outputs.append(ids)
            outputs.append(_response(tokenizer, order)[0])
            loop_outputs = [
                AgentLoopOutput(prompt_ids=[5, 6, 7], response_ids=ids, response_mask=[1] * len(ids), num_turns=2 * (t + 1),
                                metrics=AgentLoopMetrics(), extra_fields={})
                for t, ids in enumerate(outputs)
            ]  # fmt: skip
            kwargs = {
                "uid": uid, "session_id": session, "global_steps": 1, "data_source": "flexrec/test",
                "reward_model": {"style": "rule", "ground_truth": _ground_truth(uid)},
                "extra_info": {"split": "train", "index": 0},
            }  # fmt: skip
            asyncio.run(worker._agent_loop_postprocess(loop_outputs, False, **kwargs))
            for t, ids in enumerate(outputs):
                lengths[f"{uid}_{session}_{t}"] = len(ids)
    return lengths


def _run(tokenizer, config, pad_to=24, seed=5):
    store = InMemoryTQ()
    with contextlib.ExitStack() as stack:
        for p in store.patches():
            stack.enter_context(p)
        lengths = _roll_out_multi_turn(tokenizer, config)
        keys = list(lengths)
        batch = KVBatchMeta(keys=keys, tags=[store.tags[("train", k)] for k in keys], partition_id="train")
        batch = upsample_batch_to_divisible_size(batch, pad_to, tokenizer.eos_token_id)
        batch.reorder(list(np.random.default_rng(seed).permutation(len(batch))))
        metrics = {}
        out = _trainer(config)._compute_advantage(batch, metrics)
        written = store.kv_batch_get(out.keys, "train", ["advantages", "response_mask", "extra_fields", "rm_scores"])
    return lengths, list(batch.keys), written, metrics


def test_rec_r1_on_multi_output_sessions_is_verls_grpo(tokenizer):
    flexrec = {"advantage": {"mode": "rec_r1"}, "uncertainty": {"enable": False}}
    lengths, keys, ours, _ = _run(tokenizer, _config(flexrec=flexrec))
    _, grpo_keys, grpo, _ = _run(tokenizer, _config(adv_estimator="grpo", flexrec=flexrec))
    real = [k for k in keys if k in lengths]
    assert real == [k for k in grpo_keys if k in lengths]  # same order (padding rows get fresh uids)
    assert len(real) == sum(_turns(s) for o in ROLLOUTS.values() for s in range(len(o)))
    ours_adv, grpo_adv = _padded(ours["advantages"]), _padded(grpo["advantages"])
    torch.testing.assert_close(ours_adv, grpo_adv, atol=1e-6, rtol=1e-6)
    # not trivially: sessions differ, and earlier turns carry their session's advantage
    earlier = [i for i, k in enumerate(keys) if k in lengths and k.endswith("_0") and f"{k[:-2]}_1" in lengths]
    assert earlier and all(ours_adv[i].abs().sum() > 0 for i in earlier)


def test_flexrec_on_multi_output_sessions_uses_final_outputs(tokenizer):
    config = _config()
    lengths, keys, written, metrics = _run(tokenizer, config)
    adv, mask = _padded(written["advantages"]), _padded(written["response_mask"])
    extra, scores = written["extra_fields"], _padded(written["rm_scores"])
    rows = {k: i for i, k in enumerate(keys)}

    def final_key(key):
        uid, session, _ = key.rsplit("_", 2)
        return f"{uid}_{session}_{_turns(int(session)) - 1}"

    finals = [k for k in keys if k in lengths and final_key(k) == k]
    assert len(finals) == sum(len(o) for o in ROLLOUTS.values())
    # the estimator on the final outputs alone
    take = torch.tensor([rows[k] for k in finals])
    inputs = collate_flexrec_inputs([extra[rows[k]]["reward_extra_info"] for k in finals])
    cfg = FlexRecConfig.from_algorithm_config(config.algorithm)
    alone = flexrec_advantages(
        mask[take], np.array([k.split("_")[0] for k in finals], dtype=object), scores[take].sum(-1),
        inputs["item_rewards"], None, inputs["uncertainty"], item_tokens=inputs["item_tokens"],
        options=cfg.advantage, uncertainty_options=cfg.uncertainty,
    )  # fmt: skip
    width = alone.advantages.shape[1]
    torch.testing.assert_close(adv[take, :width], alone.advantages, atol=1e-6, rtol=1e-6)
    seq_of = dict(zip(finals, alone.seq_token_advantage.tolist()))
    followers = [k for k in keys if k in lengths and k not in seq_of]
    assert followers
    for key in followers:
        row = rows[key]
        want = seq_of[final_key(key)] * mask[row].double()
        torch.testing.assert_close(adv[row].double(), want, atol=1e-6, rtol=1e-6)
    # training metrics count each session once
    assert metrics["flexrec/valid_ratio"] == pytest.approx(6 / 7)
