"""data_prep/kuairec.py on a generated KuaiRec-2.0-format fixture, run as a user runs it."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verl_flexrec.data.leakage import check_no_leakage, row_record  # noqa: E402
from fixtures_raw import parquet_files, read_rows, run_either, run_script, write_kuairec  # noqa: E402
from verl_flexrec.schema import GroundTruth  # noqa: E402

DATA = "KuaiRec 2.0/data"
NEEDS = ["explore_new_topics", "maximize_interest", "trend_promotion"]
BEIJING = timezone(timedelta(hours=8))


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("kuairec_raw")
    write_kuairec(root)
    return root


def _prep(raw, out, *extra):
    result = run_script("kuairec", "--raw-dir", raw, "--out-dir", out, "--test-time-frac", "0.5", *extra)
    assert result.returncode == 0, result.stderr
    return out, result.stderr


@pytest.fixture(scope="module")
def dense(raw, tmp_path_factory):
    """Default 30 candidates, every need, two training contexts per user."""
    return _prep(raw, tmp_path_factory.mktemp("kuairec_dense"), "--needs", "all", "--train-per-user", "2")


def _read_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def watch(raw):
    """(user, video, timestamp) -> watch_ratio from both matrices, parsed independently."""
    out = {}
    for name in ("small_matrix.csv", "big_matrix.csv"):
        for r in _read_csv(raw / DATA / name):
            if r["timestamp"]:
                out[(r["user_id"], r["video_id"], float(r["timestamp"]))] = float(r["watch_ratio"])
    return out


def test_rows_have_30_candidates_and_verl_schema(dense):
    out, stderr = dense
    train, test = read_rows(out / "train.parquet"), read_rows(out / "test.parquet")
    assert train and test
    for rows in (train, test):
        for row in rows:
            assert row["data_source"] == "flexrec/kuairec" and row["ability"] == "recommendation"
            gt = GroundTruth.from_any(row["reward_model"]["ground_truth"])
            assert gt.num_candidates == 30 and len(set(gt.item_ids)) == 30
    assert "dropped 4 rows with an empty 'timestamp'" in stderr  # like the real small matrix


def test_interest_is_capped_watch_ratio(dense, watch):
    out, _ = dense
    for row in read_rows(out / "train.parquet") + read_rows(out / "test.parquet"):
        gt, info = row["reward_model"]["ground_truth"], row["extra_info"]
        expected = [min(watch[(gt["user_id"], v, t)], 5.0) for v, t in zip(gt["item_ids"], info["candidate_ts"])]
        assert gt["interest"] == pytest.approx(expected)
        np.testing.assert_allclose(gt["gains"], np.multiply(gt["interest"], gt["need_weight"]))


def test_test_rows_use_the_small_matrix_train_rows_the_big_one(dense, raw):
    out, _ = dense
    small = {(r["user_id"], r["video_id"]) for r in _read_csv(raw / DATA / "small_matrix.csv")}
    big = {(r["user_id"], r["video_id"]) for r in _read_csv(raw / DATA / "big_matrix.csv")}
    for split, source in (("test", small), ("train", big)):
        for row in read_rows(out / f"{split}.parquet"):
            gt = row["reward_model"]["ground_truth"]
            assert all((gt["user_id"], v) in source for v in gt["item_ids"])


def test_trend_popularity_is_play_cnt_of_the_day_before_the_cutoff(dense, raw):
    out, _ = dense
    plays = {(r["video_id"], r["date"]): int(r["play_cnt"]) for r in _read_csv(raw / DATA / "item_daily_features.csv")}
    rows = [r for r in read_rows(out / "test.parquet") + read_rows(out / "train.parquet")
            if r["extra_info"]["need"] == "trend_promotion"]
    assert rows
    for row in rows:
        gt, info = row["reward_model"]["ground_truth"], row["extra_info"]
        day_before = (datetime.fromtimestamp(info["cutoff_ts"], BEIJING) - timedelta(days=1)).strftime("%Y%m%d")
        counts = [plays.get((v, day_before), 0) for v in gt["item_ids"]]
        assert gt["need_weight"] == pytest.approx(np.divide(counts, max(counts)))
        lines = [ln for ln in row["prompt"][1]["content"].splitlines() if ln.startswith("ID ")]
        assert [ln.rsplit("| ", 1)[1] for ln in lines] == [f"{c:,} plays in the last day" for c in counts]


def test_novel_topic_uses_caption_categories(dense, raw):
    out, _ = dense
    category = {}
    for r in _read_csv(raw / DATA / "kuairec_caption_category.csv"):
        if r.get("first_level_category_name") and r["video_id"].isdigit() and r["video_id"] != "5":
            category[r["video_id"]] = r["first_level_category_name"]
    rows = [r for r in read_rows(out / "test.parquet") if r["extra_info"]["need"] == "explore_new_topics"]
    assert rows
    for row in rows:
        gt, info = row["reward_model"]["ground_truth"], row["extra_info"]
        seen = {category.get(v) for v in info["history_item_ids"]} - {None}
        expected = [float(v in category and category[v] not in seen) for v in gt["item_ids"]]
        assert gt["need_weight"] == expected
        assert gt["categories"] == [category.get(v, "") for v in gt["item_ids"]]


def test_global_time_split_is_leak_free(dense):
    out, _ = dense
    rows = read_rows(out / "train.parquet") + read_rows(out / "test.parquet")
    cutoff = json.loads((out / "prep_info.json").read_text())["split"]["global_cutoff"]
    check_no_leakage((row_record(r) for r in rows), global_cutoff=cutoff)
    for r in rows:
        info = r["extra_info"]
        times = info["history_ts"] + info["candidate_ts"]
        if info["split"] == "train":
            assert max(times) < cutoff
        else:
            assert info["cutoff_ts"] == cutoff and max(info["history_ts"]) < cutoff <= min(info["candidate_ts"])


def test_deterministic_bytes(raw, dense, tmp_path):
    again, _ = _prep(raw, tmp_path / "again", "--needs", "all", "--train-per-user", "2")
    for name in ("train.parquet", "test.parquet", "interactions.parquet", "prep_info.json"):
        assert (again / name).read_bytes() == (dense[0] / name).read_bytes(), name


def test_sparse_flag_alone_keeps_ten_percent(raw, tmp_path):
    out, _ = _prep(raw, tmp_path / "sparse", "--num-candidates", "10", "--train-per-user", "4", "--sparse-frac")
    assert json.loads((out / "prep_info.json").read_text())["settings"]["sparse_frac"] == 0.1
    observed = [o for r in read_rows(out / "train.parquet") for o in r["reward_model"]["ground_truth"]["observed"]]
    assert 0 < np.mean(observed) < 0.25
    assert all(all(r["reward_model"]["ground_truth"]["observed"]) for r in read_rows(out / "test.parquet"))


def test_without_caption_file_categories_are_tags(tmp_path):
    root = tmp_path / "raw"
    write_kuairec(root, captions=False)
    out, stderr = _prep(root, tmp_path / "out", "--num-candidates", "10")
    assert "categories from tags" in stderr
    row = read_rows(out / "test.parquet")[0]
    assert all(c.startswith("tag ") for c in row["reward_model"]["ground_truth"]["categories"])
    assert "| category: tag " in row["prompt"][1]["content"]


def _edit(path: Path, fn) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    fn(lines)
    path.write_text("\n".join(lines), encoding="utf-8")


def _set_line(number, text):
    def fn(lines):
        lines[number - 1] = text
    return fn


@pytest.mark.parametrize("name, fn, message", [
    ("big_matrix.csv", None, "KuaiRec big_matrix.csv: file not found"),
    ("small_matrix.csv", lambda lines: lines.__setitem__(0, lines[0].replace("watch_ratio", "ratio")),
     "small_matrix.csv: missing column(s) ['watch_ratio']"),
    ("small_matrix.csv", _set_line(9, "0,3,100,200,2020-07-05 00:08:23.438,20200705.0,1593878903.438,abc"),
     "small_matrix.csv: line 9: field 'watch_ratio': expected a finite number, got 'abc'"),
    ("big_matrix.csv", _set_line(40, "1,70,100,200,2020-07-05 00:08:23.438,20200705.0,1593878903.438,-1"),
     "big_matrix.csv: line 40: field 'watch_ratio': expected a value in [0.0, inf], got -1"),
    ("small_matrix.csv", _set_line(15, "0,3,100,200,2020-07-05 00:08:23.438,20200705.0,1593878903.438,0.5,9"),
     "small_matrix.csv: line 15: expected 8 fields, saw 9"),
    ("item_categories.csv", _set_line(5, "3,[27; 9]"), "item_categories.csv: line 5: field 'feat'"),
    ("item_daily_features.csv", _set_line(30, "7,2020x0705" + ",0" * 56), "item_daily_features.csv: line 30: field 'date'"),
])
def test_bad_input_fails_cleanly(tmp_path, name, fn, message):
    root = tmp_path / "raw"
    folder = write_kuairec(root)
    if fn is None:
        (folder / name).unlink()
    else:
        _edit(folder / name, fn)
    out = tmp_path / "out"
    via = "subprocess" if "file not found" in message else "in-process"
    code, stderr = run_either(via, "kuairec", "--raw-dir", root, "--out-dir", out)
    assert code == 2, stderr
    assert message in stderr
    assert stderr.count("error:") == 1 and "Traceback" not in stderr
    assert parquet_files(out) == []
