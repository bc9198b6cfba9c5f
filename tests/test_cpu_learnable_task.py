"""verl_flexrec.cpu.learnable_task: the genre task's rows, gains, references, and the warm-start knobs
(per-prompt target orders, the first-id entropy) the CPU learning benchmark relies on."""

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from verl_flexrec.config import RewardOptions
from verl_flexrec.cpu.learnable_task import GENRES, ITEM_GENRES, build_rows, write_task
from verl_flexrec.cpu.warm_start import build_examples, first_item_entropy, left_pad
from verl_flexrec.evaluate.metrics import expected_random_metrics
from verl_flexrec.parsing import format_answer, parse_ranking
from verl_flexrec.reward import score_response
from verl_flexrec.schema import GroundTruth
from verl_flexrec.testing import build_tiny_model, build_tiny_tokenizer


def test_rows_show_every_item_with_its_genre_and_the_need_decides_the_gains():
    rows = build_rows(25, "train", seed=0)
    assert sorted(r["extra_info"]["need"] for r in rows) == sorted(f"likes_{g}" for g in GENRES for _ in range(5))
    orders = set()
    for r in rows:
        truth = GroundTruth.from_any(r["reward_model"]["ground_truth"])
        text = r["prompt"][-1]["content"]
        first = r["extra_info"]["need"].removeprefix("likes_")
        second = GENRES[(GENRES.index(first) + 1) % 5]
        assert text.endswith(f"\nNeed: {first} first, then {second}.")  # the need last, before the answer
        assert sorted(truth.candidates) == [str(i) for i in range(10)]
        for cid, gain in zip(truth.candidates, truth.gains):
            assert f"ID {cid} | {ITEM_GENRES[int(cid)]}\n" in text
            genre = ITEM_GENRES[int(cid)]
            assert gain == (5.0 if genre == first else 3.0 if genre == second else 1.0)
        assert text.index(f"ID {truth.candidates[0]} ") < text.index(f"ID {truth.candidates[-1]} ")  # prompt order
        orders.add(tuple(truth.candidates))
    assert len(orders) == 25  # every row its own candidate order


def test_oracle_answer_earns_the_full_reward_and_the_floor_is_low_with_exponential_gains():
    for r in build_rows(10, "test", seed=1):
        truth = GroundTruth.from_any(r["reward_model"]["ground_truth"])
        best = [c for _, c in sorted(zip(truth.gains, truth.candidates), key=lambda t: -t[0])]
        res = score_response(format_answer(best, "x"), truth, RewardOptions(gain="exponential"))
        assert res.valid and res.metrics["ndcg@5"] == pytest.approx(1.0) and res.score == pytest.approx(1.1)
        g = truth.gains_array()
        # 2 items at 31, 2 at 7, 6 at 1: E[NDCG@5] = mean * sum(d_1..5) / IDCG@5, by hand
        d = [1 / math.log2(i + 2) for i in range(5)]
        by_hand = (82 / 10) * sum(d) / (31 * d[0] + 31 * d[1] + 7 * d[2] + 7 * d[3] + 1 * d[4])
        assert expected_random_metrics(g, "exponential")["ndcg@5"] == pytest.approx(by_hand)
        assert by_hand < 0.43 < 0.57 < expected_random_metrics(g)["ndcg@5"]


def test_write_task_is_deterministic_and_splits_differ(tmp_path):
    a = write_task(tmp_path / "a", n_train=12, n_val=6, seed=3)
    b = write_task(tmp_path / "b", n_train=12, n_val=6, seed=3)
    ta, tb = pq.read_table(a / "train.parquet").to_pylist(), pq.read_table(b / "train.parquet").to_pylist()
    assert ta == tb and len(ta) == 12 and pq.read_table(a / "test.parquet").num_rows == 6
    val = pq.read_table(a / "test.parquet").to_pylist()
    assert {r["prompt"][-1]["content"] for r in val}.isdisjoint(r["prompt"][-1]["content"] for r in ta)
    assert not list(tmp_path.rglob(".*.tmp"))
    with pytest.raises(ValueError, match="n must be >= 1"):
        build_rows(0, "train", 0)


def test_vary_by_prompt_draws_each_prompt_its_own_orders():
    tok = build_tiny_tokenizer()
    rows = build_rows(6, "train", seed=0)
    prompts = [r["prompt"] for r in rows]
    cands = [[str(i) for i in range(10)]] * 6  # the same list: only the seeding can make targets differ
    same = build_examples(tok, prompts, cands, n_orders=2, seed=0)
    varied = build_examples(tok, prompts, cands, n_orders=2, seed=0, vary_by_prompt=True)
    assert len({tuple(t) for _, t in same}) == 2  # one pair of shuffles applied to every prompt
    assert len({tuple(t) for _, t in varied}) > 6
    for _, target in varied:
        text = tok.decode(target, skip_special_tokens=True)
        assert parse_ranking(text, cands[0]).valid


def test_first_item_entropy_equals_the_unpadded_next_token_entropy():
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, seed=2)
    prompts = [r["prompt"] for r in build_rows(3, "train", seed=0)]
    prompts[1] = [{"role": "user", "content": prompts[1][0]["content"][:60]}]  # unequal lengths: left padding
    prefix = tok("<think>ok</think><answer>[", add_special_tokens=False)["input_ids"]
    ref = []
    with torch.no_grad():
        for m in prompts:
            ids = tok.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=False) + prefix
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1], -1)
            ref.append(float(-(logp.exp() * logp).sum()))
    assert first_item_entropy(model, tok, prompts, batch_size=3) == pytest.approx(np.mean(ref), abs=1e-4)
    assert 0 < np.mean(ref) <= math.log(len(tok)) + 1e-6
    ids, mask = left_pad([[1, 2], [3]], 0)
    assert ids.tolist() == [[1, 2], [0, 3]] and mask.tolist() == [[1, 1], [0, 1]]


def test_tiny_model_size_knobs():
    tok = build_tiny_tokenizer()
    small, wide = build_tiny_model(tok), build_tiny_model(tok, hidden_size=128, num_layers=3)
    assert small.config.hidden_size == 64 and small.config.num_hidden_layers == 2
    assert wide.config.hidden_size == 128 and wide.config.num_hidden_layers == 3
    assert sum(p.numel() for p in wide.parameters()) > 3 * sum(p.numel() for p in small.parameters())
