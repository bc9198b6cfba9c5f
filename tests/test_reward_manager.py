"""The `flexrec` reward manager on verl's real classes and a real (tiny, locally built) tokenizer.

Covers: run_single on valid and invalid responses, item token indices checked against the
decoded text, both tokenisation paths (canonical and non-canonical ids), and that the output
survives verl's plumbing (legacy numpy stacking, V1 validation metrics) and drives the estimator.
"""

import asyncio
import json
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.metric_utils import process_validation_metrics

import verl_flexrec.register  # noqa: F401
from verl_flexrec.integration.item_data import (
    ITEM_REWARDS_KEY,
    ITEM_TOKENS_KEY,
    collate_flexrec_inputs,
    decode_item_rewards,
    decode_item_tokens,
    item_token_spans,
)
from verl_flexrec.integration.reward_manager import EXTRA_INFO_KEYS
from verl_flexrec.parsing import format_answer
from verl_flexrec.ranking import ndcg, swap_item_rewards
from verl_flexrec.schema import GroundTruth, GroundTruthError
from verl_flexrec.testing import build_tiny_tokenizer

K = 12
IDS = [str(i) for i in range(1, K + 1)]
RNG = np.random.default_rng(3)
GAINS = [float(x) for x in RNG.integers(0, 4, K)]
PROMPT = [{"role": "user", "content": "rank these"}]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def manager(tokenizer):
    cls = get_reward_manager_cls("flexrec")
    config = OmegaConf.create({"algorithm": {"flexrec": {"reward": {"format_bonus": 0.1}}}})
    return cls(config=config, tokenizer=tokenizer, compute_score=None)


def _data(tokenizer, response_ids, gt, pad_to=None):
    """One rollout laid out the way verl's AgentLoopWorker._compute_score builds it."""
    prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"]) if isinstance(prompt, dict) or hasattr(prompt, "keys") else list(prompt)
    resp = list(response_ids)
    pad = (pad_to or len(resp)) - len(resp)
    responses = torch.tensor([resp + [tokenizer.pad_token_id] * pad])
    prompts = torch.tensor([prompt])
    attention = torch.cat([torch.ones(1, len(prompt) + len(resp)), torch.zeros(1, pad)], dim=1).long()
    batch = {
        "prompts": prompts,
        "responses": responses,
        "attention_mask": attention,
        "input_ids": torch.cat([prompts, responses], dim=1),
        "position_ids": torch.arange(attention.shape[1])[None],
    }
    non_tensor = {
        "data_source": np.array(["flexrec/test"], dtype=object),
        "reward_model": np.array([{"style": "rule", "ground_truth": gt}], dtype=object),
        "extra_info": np.array([{"split": "train", "index": 7}], dtype=object),
    }
    return DataProto.from_dict(tensors=batch, non_tensors=non_tensor)


def _gt_dict(**kw):
    return GroundTruth(candidates=IDS, gains=GAINS, **kw).to_dict()


def _run(manager, data):
    return asyncio.run(manager.run_single(data))


def _check_spans(tokenizer, response_ids, order, spans):
    assert len(spans) == len(order)
    prev_end = 0
    for cid, (first, end) in zip(order, spans):
        assert prev_end <= first < end, (cid, first, end)
        piece = tokenizer.decode(response_ids[first:end], skip_special_tokens=True)
        assert cid in piece.replace(" ", "").replace(",", " ").replace("[", " ").replace("]", " ").split(), (cid, piece)
        # the span is tight: dropping its first or last token loses part of the id
        if end - first > 1:
            assert cid not in tokenizer.decode(response_ids[first + 1 : end]).split(",")
        prev_end = end


def test_valid_response_reward_items_and_token_spans(tokenizer, manager):
    order = list(RNG.permutation(IDS))
    text = format_answer(order, "the user watches comedy, so 3 goes first")
    ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    out = _run(manager, _data(tokenizer, ids, _gt_dict(), pad_to=len(ids) + 5))
    info = out["reward_extra_info"]
    assert set(info) == set(EXTRA_INFO_KEYS)
    ranked = torch.tensor([GAINS[IDS.index(c)] for c in order], dtype=torch.float64)
    assert out["reward_score"] == pytest.approx(0.1 + float(ndcg(ranked)))
    assert info["flexrec_valid"] == 1.0 and info["flexrec_error"] == ""
    assert info["flexrec_num_items"] == K
    rewards, tokens = decode_item_rewards(info), decode_item_tokens(info)
    assert rewards.dtype == np.float32 and tokens.dtype == np.int32 and tokens.shape == (info["flexrec_num_item_tokens"], 2)
    np.testing.assert_allclose(rewards, swap_item_rewards(ranked).numpy(), atol=1e-7)
    assert (np.diff(tokens[:, 0]) > 0).all() and (np.diff(tokens[:, 1]) >= 0).all() and set(tokens[:, 1]) == set(range(K))
    spans = item_token_spans(info)
    _check_spans(tokenizer, ids, order, spans)
    assert sorted(t for first, end in spans for t in range(first, end)) == tokens[:, 0].tolist()  # each id's tokens adjoin


def test_non_canonical_tokenisation_uses_the_generated_tokens(tokenizer, manager):
    """A sampled response may spell '12' as '1' + '2'; spans must index *those* tokens."""
    order = list(RNG.permutation(IDS))
    text = format_answer(order)
    ids = [t for ch in text for t in tokenizer.encode(ch, add_special_tokens=False)]
    assert ids != tokenizer.encode(text, add_special_tokens=False)  # really non-canonical
    out = _run(manager, _data(tokenizer, ids, _gt_dict()))
    spans = item_token_spans(out["reward_extra_info"])
    _check_spans(tokenizer, ids, order, spans)
    for cid, (first, end) in zip(order, spans):
        assert end - first == len(cid)  # one token per character here


@pytest.mark.parametrize(
    "text,error",
    [
        ("I think 3 is best", "missing_tags"),
        ("<think>hmm</think><answer>[1, 2, 3", "truncated"),
        ("<think>x</think><answer>[1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]</answer>", "duplicate_id"),
        ("<think>x</think><answer>[1, 2, 99]</answer>", "unknown_id"),
        ("<think>x</think><answer>[1, 2, 3]</answer>", "missing_ids"),
        ("<think>x</think><answer>[1, 2, 3]</answer> also 4", "extra_text"),
    ],
)
def test_invalid_responses_get_the_penalty_and_no_item_signal(tokenizer, manager, text, error):
    ids = tokenizer.encode(text, add_special_tokens=False)
    out = _run(manager, _data(tokenizer, ids, _gt_dict()))
    info = out["reward_extra_info"]
    assert out["reward_score"] == -2.0
    assert info["flexrec_valid"] == 0.0 and info["flexrec_error"] == error
    assert info["flexrec_num_items"] == 0
    assert info["flexrec_num_item_tokens"] == 0
    assert decode_item_rewards(info).size == 0 and decode_item_tokens(info).size == 0


def test_ground_truth_json_string_and_bad_ground_truth(tokenizer, manager):
    ids = tokenizer.encode(format_answer(IDS), add_special_tokens=False)
    as_json = _run(manager, _data(tokenizer, ids, GroundTruth(candidates=IDS, gains=GAINS).to_json()))
    as_struct = _run(manager, _data(tokenizer, ids, _gt_dict()))
    assert as_json == as_struct
    with pytest.raises(GroundTruthError, match="index=7.*gains has 2 entries"):
        _run(manager, _data(tokenizer, ids, {"candidates": IDS, "gains": [1.0, 2.0]}))


def test_outputs_survive_verl_plumbing_and_drive_the_estimator(tokenizer, manager, tmp_path):
    """A group of rollouts: legacy stacking, V1 validation metrics and dump, collation, estimator."""
    var = [0.05 if i % 3 else 0.0 for i in range(K)]
    gt = _gt_dict(observed=[v == 0 for v in var], gain_var=var)
    texts = [format_answer(list(RNG.permutation(IDS)), "because") for _ in range(5)] + ["no tags here", format_answer(IDS[:4])]
    index = np.array(["p0"] * 4 + ["p1"] * 3, dtype=object)
    responses = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    L = max(map(len, responses)) + 3
    outs = [_run(manager, _data(tokenizer, r, gt)) for r in responses]
    infos = [o["reward_extra_info"] for o in outs]

    for key in EXTRA_INFO_KEYS:  # legacy trainer: np.array per key must not be ragged
        arr = np.array([info[key] for info in infos])
        assert arr.shape == (len(infos),), key
    metrics = process_validation_metrics(
        ["flexrec/test"] * len(infos), list(index), {"reward": [o["reward_score"] for o in outs], **{k: [i[k] for i in infos] for k in EXTRA_INFO_KEYS}}
    )
    assert "ndcg@5" in metrics["flexrec/test"] and "flexrec_num_items" in metrics["flexrec/test"]
    assert ITEM_REWARDS_KEY not in metrics["flexrec/test"] and ITEM_TOKENS_KEY not in metrics["flexrec/test"]  # str: skipped
    # V1 validation's generation dump (JSON lines) writes the binary strings and reads them back
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    n = len(infos)
    PPOTrainer._write_generations(["p"] * n, texts, [None] * n, [o["reward_score"] for o in outs],
                                  {k: [i[k] for i in infos] for k in EXTRA_INFO_KEYS}, str(tmp_path), 1)
    with open(tmp_path / "1.jsonl", encoding="utf-8") as f:  # lines end at "\n" only: json escapes it
        dumped = [json.loads(line) for line in f]
    for row, info in zip(dumped, infos):
        assert np.array_equal(decode_item_rewards(row), decode_item_rewards(info))
        assert np.array_equal(decode_item_tokens(row), decode_item_tokens(info))

    kwargs = collate_flexrec_inputs(infos)
    mask = torch.zeros(len(responses), L)
    for i, r in enumerate(responses):
        mask[i, : len(r)] = 1
    tlr = torch.zeros(len(responses), L)
    for i, o in enumerate(outs):
        tlr[i, len(responses[i]) - 1] = o["reward_score"]
    cfg = OmegaConf.create({"norm_adv_by_std_in_grpo": True, "flexrec": {}})
    adv, _ = core_algos.get_adv_estimator_fn("flexrec")(tlr, mask, index=index, config=cfg, **kwargs)

    # reference: item advantages from each row's own arrays, per position within each prompt group
    rewards = [decode_item_rewards(i).tolist() for i in infos]
    # the default uncertainty scale, written out: 1 / (u + 0.01) over its batch mean, clipped at 3
    u = kwargs["uncertainty"].double()
    raw = 1.0 / (u + 0.01)
    scales = (raw / raw.mean()).clamp(max=3.0)
    valid_rows = [i for i, r in enumerate(rewards) if r]
    assert valid_rows == [0, 1, 2, 3, 4]
    grp = [0, 1, 2, 3]
    # default std floor: a position's std is at least 0.1 x the RMS of the group's per-position stds
    typical = torch.tensor([[rewards[i][k] for i in grp] for k in range(K)], dtype=torch.float64).std(1).pow(2).mean().sqrt()
    for k in range(K):
        vals = torch.tensor([rewards[i][k] for i in grp], dtype=torch.float64)
        expected = (vals - vals.mean()) / (torch.maximum(vals.std(), 0.1 * typical) + 1e-6)
        for j, i in enumerate(grp):
            first, end = item_token_spans(infos[i])[k]
            scale = float(scales[i])
            torch.testing.assert_close(adv[i, first:end].double(), torch.full((end - first,), float(expected[j]) * scale, dtype=torch.float64), atol=1e-4, rtol=1e-4)
            assert (adv[i, first:end] != 0).all() or expected[j] == 0
    # invalid rollouts: every token carries the (scaled) sequence advantage, padding is zero
    for i in (5, 6):
        n = len(responses[i])
        assert torch.allclose(adv[i, :n], adv[i, 0].expand(n)) and (adv[i, n:] == 0).all()
        grpo = core_algos.compute_grpo_outcome_advantage(tlr, mask, index)[0]  # verl's, on the same rewards
        assert float(adv[i, 0]) == pytest.approx(float(grpo[i, 0]) * float(scales[i]), abs=1e-5)
    assert float(kwargs["uncertainty"][0]) > 0 and float(kwargs["uncertainty"][5]) == 0.0


def test_response_cut_at_the_length_limit_is_reported_as_truncated(tokenizer):
    text = "the user likes comedy and drama so I will rank"  # prefilled <think>, never closed
    ids = tokenizer.encode(text, add_special_tokens=False)
    cls = get_reward_manager_cls("flexrec")
    capped = cls(config=OmegaConf.create({"actor_rollout_ref": {"rollout": {"response_length": len(ids)}}}), tokenizer=tokenizer, compute_score=None)
    uncapped = cls(config=OmegaConf.create({}), tokenizer=tokenizer, compute_score=None)
    assert _run(capped, _data(tokenizer, ids, _gt_dict()))["reward_extra_info"]["flexrec_error"] == "truncated"
    assert _run(uncapped, _data(tokenizer, ids, _gt_dict()))["reward_extra_info"]["flexrec_error"] == "missing_tags"


def test_live_critic_fill_inside_the_reward_manager(tokenizer, tmp_path):
    """algorithm.flexrec.reward.critic_path: unobserved gains are filled in the reward loop."""
    from verl_flexrec.critic import CriticConfig, load_interactions, train_critic
    from verl_flexrec.critic.synthetic import make_rows, make_synthetic, write_parquet

    matrix = make_synthetic(n_users=40, n_items=60, density=0.3, seed=0)
    train = write_parquet(make_rows(matrix, n_candidates=K), tmp_path / "train.parquet")
    predictor = train_critic(load_interactions(train), CriticConfig(epochs=3, ensemble=2), progress=False)
    path = predictor.save(tmp_path / "critic.pt")

    observed = [i % 3 == 0 for i in range(K)]
    gt = GroundTruth(
        candidates=IDS, gains=[g if o else 0.0 for g, o in zip(GAINS, observed)], observed=observed,
        user_id="u0", item_ids=[f"i{j}" for j in range(K)], interest=[g if o else 0.0 for g, o in zip(GAINS, observed)],
        need_weight=[0.5] * K,  # not 1: a weight w must scale the mean by w and the variance by w**2
    )
    cls = get_reward_manager_cls("flexrec")
    live = cls(config=OmegaConf.create({"algorithm": {"flexrec": {"reward": {"critic_path": str(path)}}}}), tokenizer=tokenizer, compute_score=None)
    offline = cls(config=OmegaConf.create({}), tokenizer=tokenizer, compute_score=None)
    order = list(IDS)
    ids = tokenizer.encode(format_answer(order), add_special_tokens=False)
    filled = predictor.fill(gt)
    out_live = _run(live, _data(tokenizer, ids, gt.to_dict()))
    out_pre = _run(offline, _data(tokenizer, ids, filled.to_dict()))  # same as filling the parquet offline
    assert out_live == out_pre
    assert out_live["reward_extra_info"]["flexrec_uncertainty"] > 0
    # independently of fill(): the critic's raw prediction through the documented mapping
    # (gain = w max(mu, 0), variance = w^2 s2), then NDCG and u = sum_k d_k^2 s2_k / IDCG^2 written out
    unobs = [j for j in range(K) if not observed[j]]
    mu, s2 = predictor.predict("u0", [f"i{j}" for j in unobs])
    gains, var = list(gt.gains), [0.0] * K
    for j, m, v in zip(unobs, mu, s2):
        gains[j], var[j] = 0.5 * max(float(m), 0.0), 0.25 * float(v)
    disc = [1 / np.log2(r + 2) for r in range(K)]
    ranked = [IDS.index(c) for c in order]
    idcg = sum(d * g for d, g in zip(disc, sorted(gains, reverse=True)))
    ndcg_live = sum(d * gains[j] for d, j in zip(disc, ranked)) / idcg
    u_live = sum(d * d * var[j] for d, j in zip(disc, ranked)) / idcg**2
    assert out_live["reward_score"] == pytest.approx(0.1 + ndcg_live, rel=1e-9)
    assert out_live["reward_extra_info"]["flexrec_uncertainty"] == pytest.approx(u_live, rel=1e-9)
    assert filled.gains[0] == gt.gains[0] and filled.gain_var[0] == 0.0 and all(v > 0 for v in filled.gain_var[1:3])


def test_reward_options_from_the_algorithm_config_are_applied(tokenizer):
    """Every reward option the manager reads from ``algorithm.flexrec.reward`` reaches the score:
    format bonus, invalid penalty, cut-off, swap mode and gain (none of them the defaults)."""
    cls = get_reward_manager_cls("flexrec")
    options = {"format_bonus": 0.25, "invalid_penalty": -4.0, "cutoff": 3, "swap_mode": "independent", "gain": "exponential"}
    manager = cls(config=OmegaConf.create({"algorithm": {"flexrec": {"reward": options}}}), tokenizer=tokenizer,
                  compute_score=None)
    order = IDS[::-1]
    ids = tokenizer.encode(format_answer(order), add_special_tokens=False)
    out = manager.score_text(ids, GroundTruth(candidates=IDS, gains=GAINS))
    ranked = [2.0 ** GAINS[IDS.index(c)] - 1.0 for c in order]
    d = [1 / math.log2(i + 2) for i in range(3)]
    idcg3 = sum(g * w for g, w in zip(sorted(ranked, reverse=True), d))
    ndcg3 = sum(g * w for g, w in zip(ranked, d)) / idcg3
    assert out["reward_score"] == pytest.approx(0.25 + ndcg3, rel=1e-12)
    # independent swap credit at cut-off 3: g_k d_k / IDCG@3 (0 past the cut-off)
    want = [g * (d[k] if k < 3 else 0.0) / idcg3 for k, g in enumerate(ranked)]
    np.testing.assert_allclose(decode_item_rewards(out["reward_extra_info"]), want, rtol=1e-6, atol=1e-7)
    assert manager.score_text(tokenizer.encode("no answer", add_special_tokens=False),
                              GroundTruth(candidates=IDS, gains=GAINS))["reward_score"] == -4.0
