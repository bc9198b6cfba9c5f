"""data_prep/movielens.py on a generated ML-1M-format fixture, run as a user runs it."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verl_flexrec.data.leakage import check_no_leakage, row_record  # noqa: E402
from fixtures_raw import parquet_files, read_rows, run_either, run_in_process, run_script, write_movielens  # noqa: E402
from verl_flexrec.needs import get_need  # noqa: E402
from verl_flexrec.schema import GroundTruth  # noqa: E402

K = 10
NEEDS = ["explore_new_topics", "maximize_interest", "trend_promotion"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml_raw")
    write_movielens(root)
    return root


def _prep(raw, out, *extra):
    result = run_script("movielens", "--raw-dir", raw, "--out-dir", out, "--num-candidates", K, *extra)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def dense(raw, tmp_path_factory):
    return _prep(raw, tmp_path_factory.mktemp("ml_dense"), "--needs", "all", "--train-per-user", "2")


@pytest.fixture(scope="module")
def ratings(raw):
    """(user, movie) -> (rating, time), parsed independently of the script."""
    out = {}
    for line in (raw / "ml-1m" / "ratings.dat").read_text(encoding="latin-1").splitlines():
        u, m, r, t = line.split("::")
        out[(u, m)] = (float(r), float(t))
    return out


@pytest.fixture(scope="module")
def genres(raw):
    out = {}
    for line in (raw / "ml-1m" / "movies.dat").read_text(encoding="latin-1").splitlines():
        m, _, g = line.split("::")
        out[m] = set(g.split("|"))
    return out


def test_rows_follow_verl_schema(dense):
    train, test = read_rows(dense / "train.parquet"), read_rows(dense / "test.parquet")
    assert train and test
    for split, rows in (("train", train), ("test", test)):
        for i, row in enumerate(rows):
            assert row["data_source"] == "flexrec/ml-1m"
            assert row["ability"] == "recommendation"
            assert [m["role"] for m in row["prompt"]] == ["system", "user"]
            assert row["reward_model"]["style"] == "rule"
            gt = GroundTruth.from_any(row["reward_model"]["ground_truth"])
            assert gt.candidates == [str(j) for j in range(1, K + 1)]
            assert len(set(gt.item_ids)) == K and gt.need in NEEDS and gt.gain_var == []
            info = row["extra_info"]
            assert (info["split"], info["index"], info["need"], info["user_id"]) == (split, i, gt.need, gt.user_id)
            for cid in gt.candidates:
                assert f"\nID {cid} | " in row["prompt"][1]["content"]
    # every test user gets one row per test need
    per_user = Counter(r["extra_info"]["user_id"] for r in test)
    assert set(per_user.values()) == {len(NEEDS)}


def test_gains_come_from_the_raw_ratings(dense, ratings, genres):
    for row in read_rows(dense / "train.parquet") + read_rows(dense / "test.parquet"):
        gt = GroundTruth.from_any(row["reward_model"]["ground_truth"])
        info = row["extra_info"]
        interest = [ratings[(gt.user_id, m)][0] for m in gt.item_ids]
        assert gt.interest == interest and all(gt.observed)
        assert info["candidate_ts"] == [ratings[(gt.user_id, m)][1] for m in gt.item_ids]
        np.testing.assert_allclose(gt.gains, np.multiply(interest, gt.need_weight))
        if gt.need == "maximize_interest":
            assert gt.need_weight == [1.0] * K
        if gt.need == "explore_new_topics":
            seen = set().union(*(genres[m] for m in info["history_item_ids"]))
            assert gt.need_weight == [float(not (genres[m] & seen)) for m in gt.item_ids]
        if gt.need == "trend_promotion":
            lines = [ln for ln in row["prompt"][1]["content"].splitlines() if ln.startswith("ID ")]
            counts = [int(ln.rsplit("| ", 1)[1].split()[0].replace(",", "")) for ln in lines]
            top = max(counts)
            assert gt.need_weight == pytest.approx([c / top if top else 0.0 for c in counts])


def test_novelty_window_uses_only_the_most_recent_history(raw, genres, tmp_path):
    """--novelty-window N: novel = no genre among the last N history items (history is oldest first)."""
    window = 3
    out = _prep(raw, tmp_path / "w", "--needs", "explore_new_topics", "--novelty-window", window)
    same = _prep(raw, tmp_path / "full", "--needs", "explore_new_topics", "--novelty-window", 1000)
    default = _prep(raw, tmp_path / "default", "--needs", "explore_new_topics")
    more_novel = 0
    for split in ("train.parquet", "test.parquet"):
        # a window wider than the history is the default
        assert read_rows(same / split) == read_rows(default / split)
        for row, base in zip(read_rows(out / split), read_rows(default / split)):
            gt, gt_base = (GroundTruth.from_any(r["reward_model"]["ground_truth"]) for r in (row, base))
            recent = row["extra_info"]["history_item_ids"][-window:]
            seen = set().union(*(genres[m] for m in recent))
            assert gt.need_weight == [float(not (genres[m] & seen)) for m in gt.item_ids]
            assert all(w >= b for w, b in zip(gt.need_weight, gt_base.need_weight))  # fewer familiar genres
            more_novel += sum(gt.need_weight) > sum(gt_base.need_weight)
    assert more_novel > 0


def test_popularity_counts_recent_ratings_only(dense, ratings):
    """trend_promotion counts: ratings of the movie in the 30 days before the cut-off, no test rating."""
    test = read_rows(dense / "test.parquet")
    held_out = {(r["extra_info"]["user_id"], m) for r in test for m in r["reward_model"]["ground_truth"]["item_ids"]}
    for row in test + read_rows(dense / "train.parquet"):
        if row["extra_info"]["need"] != "trend_promotion":
            continue
        cutoff = row["extra_info"]["cutoff_ts"]
        lines = [ln for ln in row["prompt"][1]["content"].splitlines() if ln.startswith("ID ")]
        for movie, line in zip(row["reward_model"]["ground_truth"]["item_ids"], lines):
            expected = sum(1 for (u, m), (_, t) in ratings.items()
                           if m == movie and cutoff - 30 * 86400 <= t < cutoff and (u, m) not in held_out)
            assert line.endswith(f"| {expected} rating{'s' if expected != 1 else ''} in the last 30 days")


def test_split_is_leak_free(dense):
    rows = read_rows(dense / "train.parquet") + read_rows(dense / "test.parquet")
    check_no_leakage(row_record(r) for r in rows)  # the script's own check, rerun on its output
    test_pairs = {(r["extra_info"]["user_id"], m) for r in rows if r["extra_info"]["split"] == "test"
                  for m in r["reward_model"]["ground_truth"]["item_ids"]}
    for r in rows:
        info, items = r["extra_info"], r["reward_model"]["ground_truth"]["item_ids"]
        assert max(info["history_ts"]) < info["cutoff_ts"] <= min(info["candidate_ts"])
        assert not {(info["user_id"], m) for m in info["history_item_ids"]} & test_pairs
        if info["split"] == "train":
            assert not {(info["user_id"], m) for m in items} & test_pairs


def test_same_seed_gives_identical_bytes(raw, dense, tmp_path):
    again = _prep(raw, tmp_path / "again", "--needs", "all", "--train-per-user", "2")
    for name in ("train.parquet", "test.parquet", "interactions.parquet", "prep_info.json"):
        assert (again / name).read_bytes() == (dense / name).read_bytes(), name
    other = _prep(raw, tmp_path / "other", "--needs", "all", "--train-per-user", "2", "--seed", "1")
    assert (other / "test.parquet").read_bytes() != (dense / "test.parquet").read_bytes()


def test_sparse_variant_masks_training_feedback_only(raw, dense, tmp_path):
    sparse = _prep(raw, tmp_path / "sparse", "--needs", "all", "--train-per-user", "2", "--sparse-frac", "0.3")
    # test rows are untouched: the very same file as the dense run
    assert (sparse / "test.parquet").read_bytes() == (dense / "test.parquet").read_bytes()
    dense_train, sparse_train = read_rows(dense / "train.parquet"), read_rows(sparse / "train.parquet")
    flags, seen = [], {}
    for d, s in zip(dense_train, sparse_train):
        dg, sg = d["reward_model"]["ground_truth"], s["reward_model"]["ground_truth"]
        assert sg["item_ids"] == dg["item_ids"] and s["extra_info"]["sparse"] is True
        for i, obs in enumerate(sg["observed"]):
            pair = (sg["user_id"], sg["item_ids"][i])
            assert seen.setdefault(pair, obs) == obs  # one flag per (user, item), whatever the row
            if obs:
                assert (sg["interest"][i], sg["gains"][i]) == (dg["interest"][i], dg["gains"][i])
            else:
                assert sg["interest"][i] == 0.0 and sg["gains"][i] == 0.0
            assert sg["need_weight"][i] == dg["need_weight"][i]
            flags.append(obs)
        assert sg["gain_var"] == []
    assert 0.15 < np.mean(flags) < 0.45


def test_train_on_interest_test_on_unseen_needs(raw, tmp_path):
    out = _prep(raw, tmp_path / "gen", "--train-needs", "maximize_interest",
                "--test-needs", "explore_new_topics,trend_promotion")
    train, test = read_rows(out / "train.parquet"), read_rows(out / "test.parquet")
    assert {r["extra_info"]["need"] for r in train} == {"maximize_interest"}
    assert {r["extra_info"]["need"] for r in test} == {"explore_new_topics", "trend_promotion"}
    assert not any("in the last 30 days" in r["prompt"][1]["content"] for r in train)
    for r in test:
        assert get_need(r["extra_info"]["need"]).instruction in r["prompt"][1]["content"]
        assert ("ratings in the last 30 days" in r["prompt"][1]["content"]) == (r["extra_info"]["need"] == "trend_promotion")


def test_multi_need_mix_is_uniform_over_user_and_need(dense):
    train = read_rows(dense / "train.parquet")
    needs = Counter(r["extra_info"]["need"] for r in train)
    assert set(needs) == set(NEEDS)
    info = json.loads((dense / "prep_info.json").read_text())
    assert info["split"]["train_contexts"] == len(train)  # 'sample': one need per context


def test_item_id_style_shows_movie_ids(raw, tmp_path):
    out = _prep(raw, tmp_path / "items", "--id-style", "item", "--test-size", "2")
    for row in read_rows(out / "test.parquet"):
        gt = row["reward_model"]["ground_truth"]
        assert gt["candidates"] == gt["item_ids"]
        assert f"\nID {gt['item_ids'][0]} | " in row["prompt"][1]["content"]


def test_user_defined_need_from_yaml(raw, tmp_path):
    needs = tmp_path / "needs.yaml"
    needs.write_text(
        "- name: dp_hidden_gems\n"
        "  instruction: Rank first the movies I would love whose genres I have not rated yet.\n"
        "  weights: {novel_topic: 2.0}\n"
        "- name: dp_bad_trend\n"
        "  instruction: Rank the least popular first.\n"
        "  weights: {popularity: -1.0}\n"
    )
    code, stderr = run_in_process("movielens", "--raw-dir", raw, "--out-dir", tmp_path / "out", "--num-candidates", K,
                                  "--needs-yaml", needs, "--needs", "dp_hidden_gems,maximize_interest")
    assert code == 0, stderr
    rows = read_rows(tmp_path / "out" / "test.parquet")
    gems = [r for r in rows if r["extra_info"]["need"] == "dp_hidden_gems"]
    assert gems and all("whose genres I have not rated yet" in r["prompt"][1]["content"] for r in gems)
    for r in gems:
        gt = r["reward_model"]["ground_truth"]
        assert set(gt["need_weight"]) <= {0.0, 1.0}
        np.testing.assert_allclose(gt["gains"], np.multiply(gt["interest"], gt["need_weight"]))
    # a need whose gain is infinite for some candidate (0 ** -1) stops with the row and need named
    code, stderr = run_in_process("movielens", "--raw-dir", raw, "--out-dir", tmp_path / "bad", "--num-candidates", K,
                                  "--needs-yaml", needs, "--needs", "dp_bad_trend")
    assert code == 2 and "(user " in stderr and "need dp_bad_trend): ground_truth.gains" in stderr
    assert parquet_files(tmp_path / "bad") == []


# --- bad input: one clear error, exit code 2, nothing written -------------------------------
def _broken_copy(raw, tmp_path, edit):
    root = tmp_path / "raw"
    folder = write_movielens(root)
    edit(folder)
    return root


def _replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text(encoding="latin-1").splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")


@pytest.mark.parametrize("edit, message", [
    (lambda f: (f / "ratings.dat").unlink(), "ratings.dat: file not found"),
    (lambda f: _replace_line(f / "ratings.dat", 7, "1::abc::5::978300760"),
     "ratings.dat: line 7: field 'MovieID': expected an integer, got 'abc'"),
    (lambda f: _replace_line(f / "ratings.dat", 12, "1::3::4"), "ratings.dat: line 12: field 'Timestamp': value is missing"),
    (lambda f: _replace_line(f / "ratings.dat", 20, "1::3::4::978300760::9"), "ratings.dat: line 20: expected 4 fields, saw 5"),
    (lambda f: _replace_line(f / "ratings.dat", 30, "2::3::7::978300760"),
     "ratings.dat: line 30: field 'Rating': expected a value in [1, 5], got 7"),
    (lambda f: _replace_line(f / "users.dat", 3, "3::X::35::3::10003"), "users.dat: line 3: field 'Gender'"),
])
def test_bad_input_fails_cleanly(raw, tmp_path, edit, message):
    root = _broken_copy(raw, tmp_path, edit)
    out = tmp_path / "out"
    via = "subprocess" if "file not found" in message else "in-process"
    code, stderr = run_either(via, "movielens", "--raw-dir", root, "--out-dir", out, "--num-candidates", K)
    assert code == 2
    assert message in stderr
    assert stderr.count("error:") == 1 and "Traceback" not in stderr
    assert parquet_files(out) == []


def test_failed_run_keeps_previous_output(raw, dense, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("train.parquet", "test.parquet"):
        (out / name).write_bytes((dense / name).read_bytes())
    result = run_script("movielens", "--raw-dir", raw, "--out-dir", out, "--needs", "no_such_need")
    assert result.returncode == 2 and "unknown need 'no_such_need'" in result.stderr
    assert parquet_files(out) == ["test.parquet", "train.parquet"]
    assert (out / "train.parquet").read_bytes() == (dense / "train.parquet").read_bytes()
