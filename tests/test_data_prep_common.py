"""Unit tests of verl_flexrec.data's building blocks: validated reading, the leakage check, masks,
atomic writes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verl_flexrec.atomic import AtomicFiles  # noqa: E402
from verl_flexrec.data.candidates import recent_history  # noqa: E402
from verl_flexrec.data.events import EventLog  # noqa: E402
from verl_flexrec.data.io import Column, DataPrepError, read_csv_checked  # noqa: E402
from verl_flexrec.data.leakage import LeakageError, LeakRecord, check_no_leakage  # noqa: E402
from verl_flexrec.data.seeded import observed_mask  # noqa: E402

COLS = [Column("user_id", "int"), Column("score", "float"), Column("when", "float", missing="drop")]


def _csv(tmp_path, body: str, name="x.csv") -> Path:
    path = tmp_path / name
    path.write_text("user_id,score,when,other\n" + body, encoding="utf-8")
    return path


def test_line_numbers_are_exact_across_chunks(tmp_path):
    rows = [f"{i},{i / 2},{i},x\n" for i in range(20)]
    rows[12] = "12,oops,12,x\n"  # file line 14 (header is line 1)
    path = _csv(tmp_path, "".join(rows))
    with pytest.raises(DataPrepError, match=r"x\.csv: line 14: field 'score': expected a finite number, got 'oops'"):
        read_csv_checked(path, COLS, chunksize=3)


@pytest.mark.parametrize("body, message", [
    ("1,2,3,x\n1,2,3,x,y\n", "line 3: expected 4 fields, saw 5"),
    ("1,2,3,x\n,2,3,x\n", "line 3: field 'user_id': value is missing"),
    ("1,2,3,x\n1.5,2,3,x\n", "line 3: field 'user_id': expected an integer, got 1.5"),
    ("1,2,3,x\n1,inf,3,x\n", "line 3: field 'score': expected a finite number, got inf"),
    ("", "file has no data rows"),
])
def test_bad_values_name_file_line_and_field(tmp_path, body, message):
    with pytest.raises(DataPrepError, match=f"x.csv: {message}".replace("(", r"\(").replace(")", r"\)")):
        read_csv_checked(_csv(tmp_path, body), COLS)


def test_missing_column_and_bad_encoding(tmp_path):
    path = tmp_path / "y.csv"
    path.write_text("user_id,when\n1,2\n")
    with pytest.raises(DataPrepError, match=r"y\.csv: missing column\(s\) \['score'\]; found \['user_id', 'when'\]"):
        read_csv_checked(path, COLS)
    path.write_bytes(b"user_id,score,when\n1,2,3\n1,\xff\xfe,3\n")
    with pytest.raises(DataPrepError, match=r"y\.csv: line 3: not valid utf-8 text"):
        read_csv_checked(path, COLS)


def test_drop_policy_counts_rows(tmp_path):
    df, report = read_csv_checked(_csv(tmp_path, "1,2,3,x\n2,3,,x\n3,4,5,x\n"), COLS)
    assert df["user_id"].tolist() == [1, 3] and report.dropped == {"when": 1}


def _rec(split, user="u", cutoff=10.0, hist=(("a", 1.0),), cands=(("b", 11.0),)):
    return LeakRecord(split, user, cutoff, tuple(i for i, _ in hist), tuple(t for _, t in hist),
                      tuple(i for i, _ in cands), tuple(t for _, t in cands))


def test_leakage_check_accepts_a_clean_split():
    records = [_rec("test"), _rec("train", cutoff=5.0, hist=(("a", 1.0),), cands=(("c", 6.0),))]
    assert check_no_leakage(records, global_cutoff=10.0) == {"rows": 2, "test_pairs": 1}


@pytest.mark.parametrize("records, message", [
    ([_rec("test", hist=(("a", 10.0),))], "history time 10.0 is not before the cut-off"),
    ([_rec("test", cands=(("b", 9.0),))], "candidate time 9.0 is before the cut-off"),
    ([_rec("test"), _rec("train", cutoff=2.0, hist=(("a", 1.0),), cands=(("b", 3.0),))], "candidate b is a test candidate"),
    ([_rec("test"), _rec("test", user="u", cutoff=20.0, hist=(("b", 15.0),), cands=(("d", 21.0),))],
     "history item b is a test candidate"),
    ([_rec("test"), _rec("train", cutoff=9.0, hist=(("a", 1.0),), cands=(("c", 12.0),))], "not before the test cut-off 10.0"),
])
def test_leakage_check_catches(records, message):
    with pytest.raises(LeakageError, match=message):
        check_no_leakage(records)


def test_leakage_check_global_cutoff_covers_users_without_test_rows():
    with pytest.raises(LeakageError, match="not before the test cut-off 10.0"):
        check_no_leakage([_rec("train", user="other", cutoff=5.0, cands=(("c", 10.5),))], global_cutoff=10.0)


def test_observed_mask_is_a_stable_per_pair_coin():
    items = list(range(5000))
    mask = observed_mask(0, "u1", items, 0.1)
    assert 0.08 < mask.mean() < 0.12
    assert (observed_mask(0, "u1", items[::-1], 0.1)[::-1] == mask).all()  # depends on the pair only
    assert (observed_mask(1, "u1", items, 0.1) != mask).any()


def test_recent_history_is_distinct_most_recent_and_strictly_before():
    inter = EventLog([1] * 6, [5, 6, 5, 7, 8, 9], [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6])
    items, ts, interest, n_distinct = recent_history(inter, 1, before=5.0, length=2)
    assert items.tolist() == [5, 7] and ts.tolist() == [3, 4] and interest.tolist() == [3, 4]
    assert n_distinct == 3


def test_atomic_outputs_leave_nothing_on_failure(tmp_path):
    (tmp_path / "train.parquet").write_text("old")
    with pytest.raises(RuntimeError):
        with AtomicFiles(tmp_path) as out:
            out.path("train.parquet").write_text("new")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.parquet"]
    assert (tmp_path / "train.parquet").read_text() == "old"
    with AtomicFiles(tmp_path) as out:
        out.path("train.parquet").write_text("new")
    assert (tmp_path / "train.parquet").read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_needs_all_is_the_builtins_plus_this_runs_yaml_only(tmp_path):
    """A need registered earlier in the same process (another run's YAML) must not leak into 'all'."""
    from verl_flexrec.data.targets import resolve_needs
    from verl_flexrec.needs import BUILTIN_NEEDS, Need, register_need

    register_need(Need(name="zz_leaked_need", title="t", instruction="i", base="interest", weights={}))
    kw = dict(features=("interest", "novel_topic", "popularity"), side_info=("title", "category"), dataset="x")
    names = [n.name for n in resolve_needs("all", **kw)]
    assert "zz_leaked_need" not in names
    assert "maximize_interest" in names and set(names) <= set(BUILTIN_NEEDS)
    assert "zz_leaked_need" in [n.name for n in resolve_needs("all", yaml_names=["zz_leaked_need"], **kw)]
