"""User-KNN / Item-KNN fillers (Table 8 baselines): exact on a toy matrix, sane on synthetic data."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from verl_flexrec.critic.data import Interactions, load_interactions
from verl_flexrec.critic.evaluate import gaussian_metrics
from verl_flexrec.critic.fill import fill_parquet
from verl_flexrec.critic.knn import ItemKNNFiller, KNNFiller, UserKNNFiller
from verl_flexrec.critic.synthetic import make_rows, make_synthetic, write_parquet


def _toy():
    # u1 and u2 agree (same residual pattern), u3 is opposite; u1 has not seen item c
    triples = [
        ("u1", "a", 5.0),
        ("u1", "b", 1.0),
        ("u2", "a", 4.0),
        ("u2", "b", 0.0),
        ("u2", "c", 4.0),
        ("u3", "a", 0.0),
        ("u3", "b", 4.0),
        ("u3", "c", 0.0),
    ]
    u, i, y = zip(*triples)
    return Interactions(np.array(u, dtype=object), np.array(i, dtype=object), None, np.array(y))


def test_user_knn_toy_prediction():
    f = UserKNNFiller(k=2, shrink=2.0).fit(_toy())
    mean, var = f.predict("u1", ["c"])
    # u1 mean 3; neighbours: u2 (cosine +1 on centred rows, residual on c = 4 - 8/3) and u3 (negative
    # similarity, ignored) -> 3 + 4/3
    assert mean[0] == pytest.approx(3.0 + 4.0 / 3.0)
    assert var[0] > 0
    # unknown user -> item mean; unknown item -> user mean; both unknown -> global mean
    assert f.predict("nobody", ["c"])[0][0] == pytest.approx(2.0)
    assert f.predict("u1", ["zzz"])[0][0] == pytest.approx(3.0)
    assert f.predict("nobody", ["zzz"])[0][0] == pytest.approx(np.mean([5, 1, 4, 0, 4, 0, 4, 0]))


def test_item_knn_toy_prediction_is_finite():
    f = ItemKNNFiller(k=2).fit(_toy())
    mean, var = f.predict(["u1", "u3"], ["c", "a"])
    assert np.isfinite(mean).all() and (var > 0).all()


@pytest.fixture(scope="module")
def synth():
    m = make_synthetic(150, 200, 0.15, seed=5)
    train, test = m.split(0.2, seed=6)
    return m, m.interactions(train), m.interactions(test)


@pytest.mark.parametrize("cls", [UserKNNFiller, ItemKNNFiller])
def test_knn_beats_constant_rmse_on_synthetic(synth, cls):
    _, train, test = synth
    f = cls(k=30).fit(train)
    mean, var = f.predict(test.user_ids, test.item_ids)
    assert np.isfinite(mean).all() and np.isfinite(var).all() and (var > 0).all()
    ours = gaussian_metrics(test.interest, mean, var)
    const = gaussian_metrics(
        test.interest, np.full(len(test), train.interest.mean()), np.full(len(test), train.interest.var())
    )
    assert ours["rmse"] < const["rmse"], (ours, const)


@pytest.mark.parametrize("kind", ["user", "item"])
def test_knn_fills_parquet(tmp_path, kind):
    m = make_synthetic(40, 60, 0.2, seed=2)
    rows = make_rows(m, n_candidates=10, lists_per_user=2, observed_share=0.4, seed=1)
    path = write_parquet(rows, tmp_path / "train.parquet")
    f = KNNFiller(kind, k=10).fit(load_interactions(path))
    stats = fill_parquet(path, tmp_path / "out.parquet", f)
    assert stats["filled"] > 0
    for rm_in, rm_out in zip(
        pq.read_table(path).column("reward_model").to_pylist(),
        pq.read_table(tmp_path / "out.parquet").column("reward_model").to_pylist(),
    ):
        obs = np.array(rm_in["ground_truth"]["observed"])
        g = np.array(rm_out["ground_truth"]["gains"])
        assert np.isfinite(g).all() and (g >= 0).all()
        np.testing.assert_array_equal(g[obs], np.array(rm_in["ground_truth"]["gains"])[obs])


def test_knn_rejects_bad_use():
    with pytest.raises(ValueError):
        KNNFiller("both")
    with pytest.raises(RuntimeError, match="before fit"):
        UserKNNFiller().predict("u", ["i"])
