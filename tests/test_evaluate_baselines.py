"""Baselines train on the data-prep fixtures' training split and rank the test candidate sets."""

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures_raw import run_in_process, write_esci, write_movielens  # noqa: E402
from verl_flexrec.evaluate import BASELINES, METRICS, evaluate  # noqa: E402
from verl_flexrec.evaluate.baselines import (  # noqa: E402
    BaselineError,
    make_ranker,
    rank_by_scores,
    resolve_baselines,
    tie_keys,
)
from verl_flexrec.evaluate.data import EvalDataError, load_rows, load_training_interactions  # noqa: E402

# small models: the fixtures have ~350 interactions
FAST = {
    "bpr": {"factors": 8, "iterations": 30},
    "als": {"factors": 8, "iterations": 5},
    "sasrec": {"n_epochs": 1, "embedding_dim": 16, "max_len": 20, "batch_size": 64, "n_sample": 64, "threads": 1},
}


@pytest.fixture(scope="module")
def ml(ml_prepared):
    return ml_prepared


@pytest.fixture(scope="module")
def ml_results(ml):
    return evaluate(ml / "test.parquet", baselines=["all", "oracle,reversed_oracle"], shuffle_seeds=2, n_boot=200,
                    baseline_options=FAST, progress=False)


def _truth_rows(path):
    """(gains with unobserved = 0) per row, read straight from the parquet."""
    out = []
    for r in pq.read_table(path).to_pylist():
        gt = r["reward_model"]["ground_truth"]
        out.append([g if o else 0.0 for g, o in zip(gt["gains"], gt["observed"])])
    return out


def test_every_baseline_trains_evaluates_and_ignores_candidate_order(ml_results):
    systems = ml_results["systems"]
    assert list(systems) == [*BASELINES, "oracle", "reversed_oracle"]
    for name, s in systems.items():
        assert s["overall"]["valid_ratio"] == 1.0, name
        for policy in ("strict", "complete"):
            for m in METRICS:
                st = s["overall"][policy][m]
                assert 0.0 <= st["ci_low"] <= st["mean"] <= st["ci_high"] <= 1.0, (name, m)
                assert s["overall"]["strict"][m] == s["overall"]["complete"][m]  # always valid
                bias = s["position_bias"][policy][m]
                assert len(bias["per_order"]) == 3 and bias["spread"] == 0.0, (name, m)
    for name in ("popularity", "trending", "bpr", "als", "item_knn", "sasrec"):
        assert systems[name]["coverage"] == 1.0, name  # every test user has training history here
    assert systems["random"]["coverage"] == 0.0


def test_oracle_is_one_and_reversed_oracle_the_analytic_minimum(ml, ml_results):
    gains_rows = [g for g in _truth_rows(ml / "test.parquet") if any(x > 0 for x in g)]
    for m, k in (("ndcg@5", 5), ("ndcg@10", 10), ("ndcg@30", 30)):
        assert ml_results["systems"]["oracle"]["overall"]["strict"][m]["mean"] == pytest.approx(1.0)
        minima = []
        for g in gains_rows:
            d = [1 / math.log2(r + 2) for r in range(len(g))]
            ideal = sum(x * d[r] for r, x in enumerate(sorted(g, reverse=True)[:k]))
            minima.append(sum(x * d[r] for r, x in enumerate(sorted(g)[:k])) / ideal)
        got = ml_results["systems"]["reversed_oracle"]["overall"]["strict"][m]["mean"]
        assert got == pytest.approx(np.mean(minima), abs=1e-12)
    for need, s in ml_results["systems"]["oracle"]["by_need"].items():
        assert s["strict"]["ndcg@10"]["mean"] == pytest.approx(1.0), need


def test_floor_is_reported_and_learned_baselines_are_not_below_reversed_oracle(ml_results):
    floor = ml_results["floor"]["overall"]
    assert set(floor) == set(METRICS)
    worst = ml_results["systems"]["reversed_oracle"]["overall"]["strict"]
    for m in METRICS:
        assert worst[m]["mean"] <= floor[m] <= 1.0
    assert set(ml_results["floor"]["by_need"]) == {"explore_new_topics", "maximize_interest", "trend_promotion"}


def test_popularity_and_trending_count_training_interactions(ml):
    inter = pd.read_parquet(ml / "interactions.parquet")
    counts = inter[inter["observed"]].groupby("item_id").size()
    days = json.loads((ml / "prep_info.json").read_text())["settings"]["popularity_days"]
    train = load_training_interactions(ml / "train.parquet")
    pop, trend = make_ranker("popularity"), make_ranker("trending")
    pop.fit(train, 0)
    trend.fit(train, 0)
    for row in load_rows(ml / "test.parquet")[:8]:
        expected = np.array([counts.get(i, 0) for i in row.item_ids], dtype=float)
        assert np.array_equal(pop.score(row), expected)
        window = inter[(inter["timestamp"] >= row.cutoff - days * 86400) & (inter["timestamp"] < row.cutoff)]
        recent = window.groupby("item_id").size()
        assert np.array_equal(trend.score(row), np.array([recent.get(i, 0) for i in row.item_ids], dtype=float))
        order = rank_by_scores(expected, tie_keys(0, row.key, row.item_ids))
        assert np.all(np.diff(expected[order]) <= 0)


def test_fold_in_for_unknown_users_and_no_signal_without_history(ml):
    train = load_training_interactions(ml / "train.parquet")
    row = load_rows(ml / "test.parquet")[0]
    for name in ("bpr", "als", "item_knn", "sasrec"):
        ranker = make_ranker(name, FAST.get(name))
        ranker.fit(train, 0)
        stranger = dataclasses.replace(row, user_id="nobody")
        known = [i in set(train.frame["item_id"]) for i in row.item_ids]
        scores = ranker.score(stranger)
        assert np.all(np.isfinite(scores[known])) and np.all(np.isnan(scores[~np.array(known)])), name
        assert np.all(np.isnan(ranker.score(dataclasses.replace(stranger, history=())))), name


def test_random_baseline_depends_on_seed_only(ml):
    rows = load_rows(ml / "test.parquet")
    orders = {s: [rank_by_scores(np.zeros(r.truth.num_candidates), tie_keys(s, r.key, r.item_ids)).tolist()
                  for r in rows] for s in (0, 1)}
    again = [rank_by_scores(np.zeros(r.truth.num_candidates), tie_keys(0, r.key, r.item_ids)).tolist() for r in rows]
    assert orders[0] == again and orders[0] != orders[1]


def test_sparse_pairs_are_hidden_from_baselines(tmp_path):
    write_movielens(tmp_path / "raw")
    code, err = run_in_process("movielens", "--raw-dir", tmp_path / "raw", "--out-dir", tmp_path / "out",
                               "--num-candidates", 10, "--sparse-frac", "0.5")
    assert code == 0, err
    inter = pd.read_parquet(tmp_path / "out" / "interactions.parquet")
    train = load_training_interactions(tmp_path / "out" / "train.parquet")
    assert 0 < len(train.frame) == int(inter["observed"].sum()) < len(inter)
    hidden = set(zip(inter.loc[~inter["observed"], "user_id"], inter.loc[~inter["observed"], "item_id"]))
    assert not hidden & set(zip(train.frame["user_id"], train.frame["item_id"]))
    assert "unobserved" in train.notes[0]


def test_esci_baselines_derive_interactions_and_report_no_signal(tmp_path):
    write_esci(tmp_path / "raw")
    code, err = run_in_process("esci", "--raw-dir", tmp_path / "raw", "--out-dir", tmp_path / "out")
    assert code == 0, err
    res = evaluate(tmp_path / "out" / "test.parquet", baselines=["random", "popularity", "bpr", "item_knn"],
                   n_boot=50, baseline_options=FAST, progress=False)
    assert "derived" in res["meta"]["train_interactions"]["source"]
    for name in ("bpr", "item_knn"):  # new queries, no history: nothing to personalise from
        assert res["systems"][name]["coverage"] == 0.0
        assert res["systems"][name]["overall"]["strict"] == res["systems"]["random"]["overall"]["strict"]


def test_resolve_baselines_and_errors(tmp_path):
    assert resolve_baselines(["bpr,als", "random", "bpr"]) == ["bpr", "als", "random"]
    assert resolve_baselines(["all"]) == list(BASELINES)
    with pytest.raises(BaselineError, match="unknown baseline 'nope'"):
        resolve_baselines(["random,nope"])
    with pytest.raises(EvalDataError, match="training file not found"):
        load_training_interactions(tmp_path / "train.parquet")
