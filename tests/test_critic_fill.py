"""Filling unobserved gains: exact need mapping, observed untouched, no NaN, atomic, clear errors."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from verl_flexrec.critic.data import CriticDataError
from verl_flexrec.critic.fill import fill_ground_truth, fill_parquet, need_weights
from verl_flexrec.critic.synthetic import make_rows, make_synthetic, write_parquet
from verl_flexrec.schema import GroundTruth


class StubFiller:
    """mean = numeric part of the item id / 10 (may be negative), var = 0.5; records its calls."""

    def __init__(self, negative: bool = False):
        self.calls = []
        self.negative = negative

    def predict(self, user_ids, item_ids, need=None, categories=None):
        self.calls.append((user_ids, list(item_ids), need, categories))
        mean = np.array([float(str(i).lstrip("i")) / 10 for i in item_ids])
        return (-mean if self.negative else mean), np.full(len(item_ids), 0.5)


def _gt(**kw):
    base = dict(
        candidates=["A", "B", "C", "D"],
        gains=[2.0, 0.0, 0.0, 1.5],
        observed=[True, False, False, True],
        need="explore_new_topics",
        user_id="u1",
        item_ids=["i10", "i20", "i30", "i40"],
        interest=[2.0, 0.0, 0.0, 3.0],
        need_weight=[1.0, 0.0, 2.0, 0.5],
        categories=["a", "b|c", "", "d"],
    )
    base.update(kw)
    return GroundTruth(**base)


def test_fill_ground_truth_maps_base_through_need_weight():
    stub = StubFiller()
    out = fill_ground_truth(_gt(), stub)
    assert out.gains == [2.0, 0.0, 2.0 * 3.0, 1.5]  # unobserved: weight * mean; observed untouched
    assert out.gain_var == [0.0, 0.0, 2.0**2 * 0.5, 0.0]  # weight**2 * var, 0 where observed
    assert out.observed == [True, False, False, True] and out.interest == [2.0, 0.0, 0.0, 3.0]
    ((users, items, need, cats),) = stub.calls
    assert users == "u1" and items == ["i20", "i30"] and need == "explore_new_topics" and cats == ["b|c", ""]


def test_fill_clips_negative_means_and_keeps_observed_variance():
    out = fill_ground_truth(_gt(gain_var=[0.1, 0.0, 0.0, 0.2]), StubFiller(negative=True))
    assert out.gains[1:3] == [0.0, 0.0]
    assert out.gain_var[0] == 0.1 and out.gain_var[3] == 0.2


def test_fully_observed_record_is_unchanged():
    gt = _gt(observed=[True] * 4)
    stub = StubFiller()
    out = fill_ground_truth(gt, stub)
    assert out.gains == gt.gains and out.gain_var == [0.0] * 4 and not stub.calls


def test_need_weight_rules():
    assert need_weights(_gt(need="maximize_interest", need_weight=[])).tolist() == [1.0] * 4
    with pytest.raises(ValueError, match="need_weight is empty"):
        need_weights(_gt(need_weight=[]))
    with pytest.raises(ValueError, match=r"need_weight\[1\]"):
        need_weights(_gt(need_weight=[1.0, -1.0, 1.0, 1.0]))


@pytest.fixture()
def synth_parquet(tmp_path):
    m = make_synthetic(30, 60, 0.2, seed=0)
    rows = make_rows(m, n_candidates=12, lists_per_user=2, need="explore_new_topics", observed_share=0.3, seed=0)
    return write_parquet(rows, tmp_path / "train.parquet"), rows


def test_fill_parquet_roundtrip(synth_parquet, tmp_path):
    path, rows = synth_parquet
    out = tmp_path / "filled.parquet"
    stats = fill_parquet(path, out, StubFiller())
    before, after = pq.read_table(path), pq.read_table(out)
    assert before.schema.equals(after.schema) and after.num_rows == len(rows)
    for col in ("data_source", "prompt", "ability", "extra_info"):
        assert before.column(col).equals(after.column(col))
    n_filled = 0
    for a, b in zip(before.column("reward_model").to_pylist(), after.column("reward_model").to_pylist()):
        ga, gb = a["ground_truth"], b["ground_truth"]
        obs = np.array(ga["observed"])
        gains, var = np.array(gb["gains"]), np.array(gb["gain_var"])
        assert np.isfinite(gains).all() and np.isfinite(var).all()
        np.testing.assert_array_equal(gains[obs], np.array(ga["gains"])[obs])  # observed untouched
        assert (var[obs] == 0).all()
        w = np.array(ga["need_weight"])
        mean = np.array([float(i[1:]) / 10 for i in ga["item_ids"]])
        np.testing.assert_allclose(gains[~obs], w[~obs] * mean[~obs])
        np.testing.assert_allclose(var[~obs], w[~obs] ** 2 * 0.5)
        for key in ("candidates", "observed", "interest", "item_ids", "need", "user_id", "categories"):
            assert ga[key] == gb[key]
        n_filled += (~obs).sum()
    assert stats["filled"] == n_filled > 0 and stats["rows"] == len(rows)
    # GroundTruth still validates every filled row
    for rm in after.column("reward_model").to_pylist():
        GroundTruth.from_any(rm["ground_truth"])


def test_fill_parquet_in_place_and_json_ground_truth(synth_parquet, tmp_path):
    path, rows = synth_parquet
    json_rows = [
        {**r, "reward_model": {"style": "rule", "ground_truth": json.dumps(r["reward_model"]["ground_truth"])}}
        for r in rows
    ]
    jpath = write_parquet(json_rows, tmp_path / "json.parquet")
    fill_parquet(jpath, jpath, StubFiller())  # --out == --data
    after = pq.read_table(jpath).column("reward_model").to_pylist()
    gt = GroundTruth.from_any(after[0]["ground_truth"])  # still a JSON string
    assert isinstance(after[0]["ground_truth"], str)
    assert all(v == 0 for v, o in zip(gt.gain_var, gt.observed) if o)
    assert any(v > 0 for v in gt.gain_var)
    assert not list(tmp_path.glob(".*tmp*"))


def _write_broken(tmp_path, rows, row, **changes):
    broken = json.loads(json.dumps(rows))
    broken[row]["reward_model"]["ground_truth"].update(changes)
    return write_parquet(broken, tmp_path / "broken.parquet")


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"item_ids": []}, "ground_truth.item_ids"),
        ({"need_weight": []}, "ground_truth.need_weight"),
        ({"gains": [float("nan")] * 12}, "ground_truth.gains[0]"),
        ({"observed": [True]}, "ground_truth.observed"),
    ],
)
def test_bad_input_names_file_row_field_and_writes_nothing(synth_parquet, tmp_path, changes, field):
    _, rows = synth_parquet
    bad = _write_broken(tmp_path, rows, 3, **changes)
    out = tmp_path / "out.parquet"
    with pytest.raises(CriticDataError) as e:
        fill_parquet(bad, out, StubFiller())
    msg = str(e.value)
    assert str(bad) in msg and "row 3" in msg and field in msg, msg
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


def test_missing_column_and_file(tmp_path):
    p = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), p)
    with pytest.raises(CriticDataError, match="no column 'reward_model'"):
        fill_parquet(p, tmp_path / "o.parquet", StubFiller())
    with pytest.raises(CriticDataError, match="file not found"):
        fill_parquet(tmp_path / "nope.parquet", tmp_path / "o.parquet", StubFiller())
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(CriticDataError, match="junk.parquet: not a readable parquet"):
        fill_parquet(tmp_path / "junk.parquet", tmp_path / "o.parquet", StubFiller())


def test_is_filled_detects_rows_waiting_for_a_fill():
    from verl_flexrec.critic.fill import is_filled

    gt = _gt()
    assert not is_filled(gt)
    assert is_filled(fill_ground_truth(gt, StubFiller()))
    # a weight-0 unobserved candidate (familiar topic) needs no fill: its gain is 0 either way
    assert is_filled(_gt(need_weight=[1.0, 0.0, 0.0, 1.0]))
    assert is_filled(_gt(observed=[True] * 4))
