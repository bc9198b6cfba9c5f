"""interactions.parquet: the critic's training interactions written by kuairec.py and movielens.py.

Each script runs (in-process, dense and ``--sparse-frac``) on its generated fixture; the table is
checked against the raw files, train.parquet and test.parquet, and fed to the critic's CLI.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verl_flexrec.data import events, leakage, parquet, pipeline, seeded  # noqa: E402
from verl_flexrec.data import interactions as critic_table  # noqa: E402
from verl_flexrec.data.leakage import LeakageError, check_no_leakage, row_record  # noqa: E402
from fixtures_raw import REPO, parquet_files, read_rows, run_in_process, write_kuairec, write_movielens  # noqa: E402
from verl_flexrec.critic.data import load_interactions  # noqa: E402

SPARSE = 0.1  # what '--sparse-frac' alone means
COLUMNS = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("interest", pa.float64()),
                     ("observed", pa.bool_()), ("categories", pa.string()), ("timestamp", pa.float64())])
ARGS = {  # explicit needs, not 'all': other tests register needs in this process
    "movielens": ["--num-candidates", "10", "--train-per-user", "2", "--needs", "maximize_interest,explore_new_topics"],
    "kuairec": ["--test-time-frac", "0.5", "--train-per-user", "2", "--needs", "maximize_interest,trend_promotion"],
}
DATASETS = sorted(ARGS)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("inter_raw")
    write_movielens(root / "movielens")
    write_kuairec(root / "kuairec")
    return root


def _prep(raw, dataset, out, *extra) -> Path:
    code, stderr = run_in_process(dataset, "--raw-dir", raw / dataset, "--out-dir", out, *ARGS[dataset], *extra)
    assert code == 0, stderr
    return out


@pytest.fixture(scope="module")
def outputs(raw, tmp_path_factory):
    """{(dataset, 'dense' | 'sparse'): output folder}."""
    base = tmp_path_factory.mktemp("inter_out")
    return {(d, mode): _prep(raw, d, base / f"{d}_{mode}", *(["--sparse-frac"] if mode == "sparse" else []))
            for d in DATASETS for mode in ("dense", "sparse")}


def _table(folder: Path) -> pa.Table:
    return pq.read_table(folder / "interactions.parquet")


def _raw_interest(raw, dataset) -> dict:
    """(user, item, time) -> interest, parsed from the raw files independently of the script."""
    out = {}
    if dataset == "movielens":
        for line in (raw / dataset / "ml-1m" / "ratings.dat").read_text(encoding="latin-1").splitlines():
            u, m, r, t = line.split("::")
            out[(u, m, float(t))] = float(r)
        return out
    import csv

    for name in ("small_matrix.csv", "big_matrix.csv"):
        with open(raw / dataset / "KuaiRec 2.0" / "data" / name, encoding="utf-8", newline="") as f:
            for r in csv.DictReader(f):
                if r["timestamp"]:
                    out[(r["user_id"], r["video_id"], float(r["timestamp"]))] = min(float(r["watch_ratio"]), 5.0)
    return out


def _pairs(rows, field) -> set:
    if field == "history":
        return {(r["extra_info"]["user_id"], i) for r in rows for i in r["extra_info"]["history_item_ids"]}
    return {(r["reward_model"]["ground_truth"]["user_id"], i) for r in rows
            for i in r["reward_model"]["ground_truth"]["item_ids"]}


@pytest.mark.parametrize("dataset", DATASETS)
def test_columns_dtypes_and_one_row_per_pair(outputs, raw, dataset):
    folder = outputs[(dataset, "dense")]
    table = _table(folder)
    assert table.schema.remove_metadata() == COLUMNS
    rows = table.to_pylist()
    assert rows and len({(r["user_id"], r["item_id"]) for r in rows}) == len(rows)
    assert all(r["observed"] for r in rows)  # dense: everything observed
    info = json.loads((folder / "prep_info.json").read_text())
    assert info["rows"]["interactions"] == table.num_rows == info["interactions"]["rows"]
    assert info["split"]["leakage_check"]["interactions"] == table.num_rows
    # the values are the raw interactions (latest one of a pair before the cut-off), capped watch ratio / stars
    interest = _raw_interest(raw, dataset)
    assert [r["interest"] for r in rows] == pytest.approx([interest[(r["user_id"], r["item_id"], r["timestamp"])]
                                                           for r in rows])
    # categories as in the rows' ground truth; rows in (user, time, item) order
    cats = {i: c for r in read_rows(folder / "train.parquet") + read_rows(folder / "test.parquet")
            for i, c in zip(r["reward_model"]["ground_truth"]["item_ids"], r["reward_model"]["ground_truth"]["categories"])}
    assert cats and all(cats.get(r["item_id"], r["categories"]) == r["categories"] for r in rows)
    keys = [(int(r["user_id"]), r["timestamp"], int(r["item_id"])) for r in rows]
    assert keys == sorted(keys)


@pytest.mark.parametrize("mode", ["dense", "sparse"])
@pytest.mark.parametrize("dataset", DATASETS)
def test_no_test_period_interaction(outputs, dataset, mode):
    folder = outputs[(dataset, mode)]
    rows = _table(folder).to_pylist()
    test = read_rows(folder / "test.parquet")
    held_out = _pairs(test, "candidates")
    cutoff = {}
    for r in test:
        cutoff[r["extra_info"]["user_id"]] = min(cutoff.get(r["extra_info"]["user_id"], math.inf), r["extra_info"]["cutoff_ts"])
    global_cutoff = json.loads((folder / "prep_info.json").read_text())["split"]["global_cutoff"]
    assert held_out and cutoff
    for r in rows:
        assert (r["user_id"], r["item_id"]) not in held_out
        assert r["timestamp"] < cutoff.get(r["user_id"], math.inf)
        if global_cutoff is not None:
            assert r["timestamp"] < global_cutoff
    # the script's own check, rerun on what it wrote
    records = [row_record(r) for r in read_rows(folder / "train.parquet") + test]
    assert check_no_leakage(records, global_cutoff=global_cutoff, interactions=_table(folder))["interactions"] == len(rows)


@pytest.mark.parametrize("dataset", DATASETS)
def test_covers_every_training_row_interaction(outputs, dataset):
    """Every history item and training candidate of train.parquet is in the table, and more."""
    folder = outputs[(dataset, "dense")]
    pairs = {(r["user_id"], r["item_id"]) for r in _table(folder).to_pylist()}
    train = read_rows(folder / "train.parquet")
    used = _pairs(train, "history") | _pairs(train, "candidates")
    assert used <= pairs and len(pairs) > len(used)


@pytest.mark.parametrize("dataset", DATASETS)
def test_sparse_flags_are_the_training_rows_coin(outputs, dataset):
    dense, sparse = _table(outputs[(dataset, "dense")]), _table(outputs[(dataset, "sparse")])
    assert sparse.column("user_id").equals(dense.column("user_id"))
    assert sparse.column("item_id").equals(dense.column("item_id"))
    obs = np.asarray(sparse.column("observed").to_pylist())
    # close to F: within 4 binomial standard deviations
    n = len(obs)
    assert abs(obs.mean() - SPARSE) <= 4 * math.sqrt(SPARSE * (1 - SPARSE) / n), (obs.mean(), n)
    # observed: the dense value; not observed: 0.0, the true value never written
    y_dense, y_sparse = dense.column("interest").to_numpy(), sparse.column("interest").to_numpy()
    np.testing.assert_array_equal(y_sparse[obs], y_dense[obs])
    assert (y_sparse[~obs] == 0.0).all() and (y_dense[~obs] != 0.0).any()
    # the flag of a pair is the one its training candidates carry
    flag = {(u, i): o for u, i, o in zip(sparse.column("user_id").to_pylist(), sparse.column("item_id").to_pylist(), obs)}
    compared = 0
    for row in read_rows(outputs[(dataset, "sparse")] / "train.parquet"):
        gt = row["reward_model"]["ground_truth"]
        for item, o in zip(gt["item_ids"], gt["observed"]):
            assert flag[(gt["user_id"], item)] == o
            compared += 1
    assert compared > 0
    info = json.loads((outputs[(dataset, "sparse")] / "prep_info.json").read_text())
    assert info["interactions"]["observed"] == int(obs.sum())


@pytest.mark.parametrize("dataset", DATASETS)
def test_same_input_and_seed_give_identical_bytes(raw, outputs, dataset, tmp_path):
    again = _prep(raw, dataset, tmp_path / "again", "--sparse-frac")
    assert (again / "interactions.parquet").read_bytes() == (outputs[(dataset, "sparse")] / "interactions.parquet").read_bytes()
    other = _prep(raw, dataset, tmp_path / "other", "--sparse-frac", "--seed", "1")
    assert not _table(other).column("observed").equals(_table(again).column("observed"))


@pytest.mark.parametrize("dataset, via", [("movielens", "subprocess"), ("kuairec", "in-process")])
def test_critic_trains_on_more_points_than_train_parquet(outputs, dataset, via, tmp_path, capsys):
    folder = outputs[(dataset, "sparse")]
    files = [str(folder / "interactions.parquet"), str(folder / "train.parquet")]
    alone = len(load_interactions(folder / "train.parquet"))
    both = len(load_interactions(files))
    assert both > alone >= 2
    assert both == int(_table(folder).column("observed").to_numpy().sum())  # the table covers the rows' points
    ckpt = tmp_path / "x.pt"
    argv = ["train", "--data", *files, "--out", str(ckpt), "--epochs", "2", "--ensemble", "2", "--threads", "1", "--quiet"]
    if via == "subprocess":  # exactly as a user runs it
        result = subprocess.run([sys.executable, "-m", "verl_flexrec.critic", *argv], cwd=REPO, capture_output=True,
                                text=True, timeout=300, check=False)
        code, stdout, stderr = result.returncode, result.stdout, result.stderr
    else:
        from verl_flexrec.critic.__main__ import main

        code = main(argv)
        stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert json.loads(stdout)["n_points"] == both and ckpt.is_file()


def test_a_leaking_table_stops_the_script(raw, monkeypatch, tmp_path):
    """The script's leakage check covers the table: slip a test candidate in, nothing is written."""
    real = critic_table.training_interactions

    def leaky(all_inter, cats, cutoffs, default_cutoff, test_tasks, **kw):
        table, info = real(all_inter, cats, cutoffs, default_cutoff, test_tasks, **kw)
        task = test_tasks[0]
        extra = pa.table({"user_id": [str(task.user)], "item_id": [str(task.cand_items[0])], "interest": [1.0],
                          "observed": [True], "categories": [""], "timestamp": [float(task.cutoff) - 1.0]},
                         schema=parquet.INTERACTIONS_SCHEMA)
        return pa.concat_tables([table, extra]), info

    monkeypatch.setattr(pipeline, "training_interactions", leaky)
    out = tmp_path / "out"
    code, stderr = run_in_process("movielens", "--raw-dir", raw / "movielens", "--out-dir", out, *ARGS["movielens"])
    assert code == 2 and "is a test candidate of that user" in stderr and "interactions row" in stderr
    assert parquet_files(out) == []


def test_failed_write_leaves_nothing_half_written(raw, outputs, monkeypatch, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    old = outputs[("movielens", "dense")]
    for name in ("train.parquet", "test.parquet", "interactions.parquet"):
        (out / name).write_bytes((old / name).read_bytes())
    real = pq.write_table

    def broken(table, where, **kw):
        real(table.slice(0, 3), where, **kw)  # a partial file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(parquet.pq, "write_table", broken)
    with pytest.raises(OSError):
        run_in_process("movielens", "--raw-dir", raw / "movielens", "--out-dir", out, *ARGS["movielens"], "--seed", "3")
    assert parquet_files(out) == ["interactions.parquet", "test.parquet", "train.parquet"]
    for name in ("train.parquet", "test.parquet", "interactions.parquet"):
        assert (out / name).read_bytes() == (old / name).read_bytes(), name


def test_table_and_check_units():
    """training_interactions on a hand-made split; check_no_leakage's table rules."""
    inter = events.EventLog(user=[1, 1, 1, 1, 2, 2, 3], item=[10, 11, 10, 12, 10, 13, 10],
                                ts=[1.0, 2.0, 3.0, 9.0, 1.0, 20.0, 50.0], interest=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    test_task = events.Task("test", 1, 5.0, np.array([10]), np.array([3.0]), np.array([3.0]),
                            np.array([12]), np.array([9.0]), np.array([4.0]))
    table, info = critic_table.training_interactions(inter, lambda i: ("a", "b") if i == 10 else (), {1: 5.0}, 30.0,
                                               [test_task], sparse_frac=None, seed=0)
    rows = table.to_pylist()
    # user 1 stops at its test cut-off 5.0 (item 12 at 9.0 is a test candidate anyway); 10 keeps its latest
    # interaction; user 2 and 3 stop at the global cut-off 30.0
    assert [(r["user_id"], r["item_id"], r["interest"], r["timestamp"]) for r in rows] == [
        ("1", "11", 2.0, 2.0), ("1", "10", 3.0, 3.0), ("2", "10", 5.0, 1.0), ("2", "13", 6.0, 20.0)]
    assert rows[1]["categories"] == "a|b" and rows[0]["categories"] == ""
    assert info["rows"] == 4 and info["observed"] == 4

    sparse, _ = critic_table.training_interactions(inter, lambda i: (), {1: 5.0}, 30.0, [test_task], sparse_frac=0.5, seed=0)
    flags = [seeded.observed_mask(0, int(u), [int(i)], 0.5)[0]
             for u, i in zip(sparse.column("user_id").to_pylist(), sparse.column("item_id").to_pylist())]
    assert sparse.column("observed").to_pylist() == flags
    assert [y if f else 0.0 for y, f in zip(table.column("interest").to_pylist(), flags)] == \
        sparse.column("interest").to_pylist()

    records = [leakage.task_record(test_task)]
    assert check_no_leakage(records, global_cutoff=30.0, interactions=table)["interactions"] == 4

    def with_row(user, item, ts):
        extra = pa.table({"user_id": [user], "item_id": [item], "interest": [1.0], "observed": [True],
                          "categories": [""], "timestamp": [ts]}, schema=parquet.INTERACTIONS_SCHEMA)
        return pa.concat_tables([table, extra])

    with pytest.raises(LeakageError, match=r"interactions row 4 \(user 1, item 14\): time 5.0 is not before the test cut-off 5.0"):
        check_no_leakage(records, global_cutoff=30.0, interactions=with_row("1", "14", 5.0))
    with pytest.raises(LeakageError, match=r"\(user 1, item 12\) is a test candidate"):
        check_no_leakage(records, global_cutoff=30.0, interactions=with_row("1", "12", 4.0))
    with pytest.raises(LeakageError, match="not before the test cut-off 30.0"):
        check_no_leakage(records, global_cutoff=30.0, interactions=with_row("7", "10", 31.0))
    check_no_leakage(records, interactions=with_row("7", "10", 31.0))  # user split: no limit for user 7

    # a test-candidate pair is left out even if it lay before the cut-off
    other = events.Task("test", 2, 25.0, np.array([10]), np.array([1.0]), np.array([5.0]),
                        np.array([13]), np.array([26.0]), np.array([6.0]))
    table, _ = critic_table.training_interactions(inter, lambda i: (), {1: 5.0}, 30.0, [test_task, other],
                                            sparse_frac=None, seed=0)
    assert ("2", "13") not in set(zip(table.column("user_id").to_pylist(), table.column("item_id").to_pylist()))
