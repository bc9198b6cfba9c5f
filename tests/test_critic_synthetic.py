"""The synthetic helper: known truth, sparse skewed observation, rows in the GroundTruth schema."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from verl_flexrec.critic.data import load_interactions
from verl_flexrec.critic.synthetic import make_rows, make_synthetic, write_parquet
from verl_flexrec.schema import GroundTruth


def test_matrix_density_noise_and_cold_split():
    m = make_synthetic(300, 400, 0.1, cold_user_frac=0.1, cold_item_frac=0.1, seed=0)
    density = len(m.obs_values) / (300 * 400)
    assert 0.08 < density < 0.12
    assert len(set(zip(m.obs_users.tolist(), m.obs_items.tolist()))) == len(m.obs_values)  # no duplicate cells
    counts = np.bincount(m.obs_users, minlength=300)
    assert counts.max() > 4 * np.median(counts)  # skewed activity: some users are much better observed
    v = m.true_var(m.obs_users, m.obs_items)
    assert v.max() / v.min() > 10  # heteroscedastic
    train, test = m.split(0.1, seed=1)
    assert not (m.cold_users[m.obs_users[train]]).any() and not (m.cold_items[m.obs_items[train]]).any()
    assert (train ^ test).all()
    assert (m.obs_values >= 0).all()


@pytest.mark.parametrize("need", ["maximize_interest", "explore_new_topics", "trend_promotion"])
def test_rows_follow_the_schema(tmp_path, need):
    m = make_synthetic(20, 50, 0.2, seed=1)
    rows = make_rows(m, n_candidates=15, lists_per_user=2, need=need, observed_share=0.3, seed=2)
    assert len(rows) == 40
    for r in rows:
        assert set(r) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
        assert r["reward_model"]["style"] == "rule"
        assert set(r["extra_info"]) == {"split", "index", "need", "user_id"}
        assert all(set(msg) == {"role", "content"} for msg in r["prompt"])
        gt = GroundTruth.from_any(r["reward_model"]["ground_truth"])
        assert gt.need == need and len(gt.item_ids) == 15
        np.testing.assert_allclose(gt.gains, np.array(gt.interest) * np.array(gt.need_weight))
        assert all(x == 0 for x, o in zip(gt.interest, gt.observed) if not o)
        assert 0 < sum(gt.observed) <= round(0.3 * 15)  # fewer when the user has fewer observations
    assert max(sum(r["reward_model"]["ground_truth"]["observed"]) for r in rows) == round(0.3 * 15)
    path = write_parquet(rows, tmp_path / "rows.parquet")
    assert pq.read_table(path).num_rows == 40
    inter = load_interactions(path)
    assert len(inter) > 0 and set(inter.item_categories)  # categories collected as side information


def test_only_observed_rows_are_fully_observed():
    m = make_synthetic(10, 40, 0.3, seed=3)
    rows = make_rows(m, n_candidates=8, only_observed=True, split="test", seed=0)
    for r in rows:
        assert all(r["reward_model"]["ground_truth"]["observed"]) and r["extra_info"]["split"] == "test"


def test_interactions_table_feeds_the_critic(tmp_path):
    import pyarrow as pa

    from verl_flexrec.critic.data import CriticDataError

    table = pa.table(
        {
            "user_id": ["u1", "u1", "u2", "u3"],
            "item_id": ["a", "b", "a", "c"],
            "interest": [1.0, 2.0, 3.0, float("nan")],
            "observed": [True, True, True, False],
            "categories": ["x|y", "z", "x|y", None],
        }
    )
    pq.write_table(table, tmp_path / "inter.parquet")
    m = make_synthetic(10, 20, 0.3, seed=0)
    rows = write_parquet(make_rows(m, n_candidates=5, observed_share=0.4, seed=0), tmp_path / "rows.parquet")
    inter = load_interactions([tmp_path / "inter.parquet", rows])
    got = {(u, i): y for u, i, y in zip(inter.user_ids, inter.item_ids, inter.interest)}
    assert got[("u1", "b")] == 2.0 and ("u3", "c") not in got  # unobserved row skipped, NaN allowed there
    assert inter.item_categories["a"] == ("x", "y") and len(inter) > 3
    pq.write_table(
        pa.table({"user_id": ["u1", ""], "item_id": ["a", "b"], "interest": [1.0, 2.0]}), tmp_path / "bad.parquet"
    )
    with pytest.raises(CriticDataError, match=r"bad.parquet: row 1: user_id is empty"):
        load_interactions(tmp_path / "bad.parquet")
