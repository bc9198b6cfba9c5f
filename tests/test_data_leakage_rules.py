"""Data preparation's leakage rules on hand-made cases that make each rule fire.

* ESCI: a train query whose text (lower-cased, runs of whitespace collapsed) is also a test
  query's is dropped before sampling; the final check refuses a query id or a normalised text in
  both splits; duplicate (query, product) judgements are read once. The generated fixture's query
  texts are all distinct, so none of this runs in tests/test_data_prep_esci.py.
* The time split's boundary: training data must lie *strictly* before the cut-off (a test
  candidate may sit exactly at it): a training row, a history or an interactions-table row at
  exactly the cut-off is refused, one just before it passes; the generators exclude a point at the
  cut-off.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from verl_flexrec.data.candidates import candidate_pool, recent_history
from verl_flexrec.data.esci import check_query_leakage, read_examples, select_queries
from verl_flexrec.data.events import EventLog
from verl_flexrec.data.interactions import training_interactions
from verl_flexrec.data.io import DataPrepError
from verl_flexrec.data.leakage import LeakageError, LeakRecord, check_no_leakage
from verl_flexrec.data.split import training_limits

LABELS = ["E", "S", "I"]  # mixed gains: every query is eligible


def _frame(queries):
    """Judgements of ``{query_id: (text, split)}``, three products each."""
    rows = [{"query_id": qid, "query": text, "product_id": f"p{qid}-{j}", "esci_label": LABELS[j], "split": split}
            for qid, (text, split) in queries.items() for j in range(3)]
    return pd.DataFrame(rows)


def _ids(chosen):
    return {split: sorted(q for q, _ in chosen[split]) for split in chosen}


def test_esci_drops_train_queries_whose_normalised_text_is_a_test_query():
    df = _frame({
        1: ("Red Shoes", "train"),
        2: ("  red   SHOES ", "test"),
        3: ("red shoes\tfor kids", "train"),   # a different text: kept
        4: ("blue hat", "train"),
        5: ("Blue  Hat", "train"),             # same text as 4, both train: no leak, both kept
        6: ("green scarf", "test"),
        7: ("RED shoes", "train"),
    })
    chosen = select_queries(df, min_candidates=3, seed=0, train_size=None, test_size=None)
    assert _ids(chosen) == {"train": [3, 4, 5], "test": [2, 6]}
    assert check_query_leakage(chosen) == {"train_queries": 3, "test_queries": 2}


def test_esci_query_eligibility_and_a_query_in_both_splits():
    df = _frame({1: ("a", "train"), 2: ("b", "test")})
    flat = df["query_id"] == 1
    df.loc[flat, "esci_label"] = "E"  # one gain for every candidate: nothing to rank
    assert _ids(select_queries(df, min_candidates=3, seed=0, train_size=None, test_size=None)) == {"train": [], "test": [2]}
    assert _ids(select_queries(df, min_candidates=4, seed=0, train_size=None, test_size=None)) == {"train": [], "test": []}
    mixed = _frame({1: ("a", "train")})
    mixed.loc[0, "split"] = "test"
    with pytest.raises(DataPrepError, match="query 1 has judgements in both"):
        select_queries(mixed, min_candidates=3, seed=0, train_size=None, test_size=None)


@pytest.mark.parametrize("train,test,message", [
    ({1: "red shoes"}, {1: "blue hat"}, "query ids in both splits: \\[1\\]"),
    ({1: "Red  Shoes"}, {2: "red shoes "}, "query texts in both splits: \\['red shoes'\\]"),
])
def test_esci_final_check_refuses_shared_ids_and_texts(train, test, message):
    def part(queries):
        return [(qid, pd.DataFrame({"query": [text]})) for qid, text in queries.items()]

    with pytest.raises(LeakageError, match=message):
        check_query_leakage({"train": part(train), "test": part(test)})


def test_esci_duplicate_judgements_are_read_once(tmp_path):
    rows = {
        "query": ["shoes", "shoes", "shoes", "hat"],
        "query_id": [1, 1, 1, 2],
        "product_id": ["a", "a", "b", "a"],     # (1, a) twice
        "product_locale": ["us", "us", "us", "es"],
        "esci_label": ["E", "E", "I", "S"],
        "small_version": [1, 1, 1, 1],
        "large_version": [1, 1, 1, 1],
        "split": ["train"] * 4,
    }
    path = tmp_path / "examples.parquet"
    pq.write_table(pa.table(rows), path)
    df = read_examples(path, locale="us", version="small")
    assert sorted(zip(df["query_id"], df["product_id"])) == [(1, "a"), (1, "b")]
    assert len(read_examples(path, locale="all", version="small")) == 3


# -- the time split's boundary ---------------------------------------------------------------------
CUT = 10.0
BEFORE = math.nextafter(CUT, -math.inf)  # the largest float strictly before the cut-off


def _rec(split, user="u", cutoff=CUT, hist=(("a", 1.0),), cands=(("b", 11.0),)):
    return LeakRecord(split, user, cutoff, tuple(i for i, _ in hist), tuple(t for _, t in hist),
                      tuple(i for i, _ in cands), tuple(t for _, t in cands))


def test_test_candidates_may_sit_exactly_at_the_cut_off_but_history_may_not():
    assert check_no_leakage([_rec("test", hist=(("a", BEFORE),), cands=(("b", CUT),))])["rows"] == 1
    with pytest.raises(LeakageError, match="history time 10.0 is not before the cut-off 10.0"):
        check_no_leakage([_rec("test", hist=(("a", CUT),))])


@pytest.mark.parametrize("where", ["candidate", "history"])
def test_training_row_exactly_at_the_users_test_cut_off_is_a_leak(where):
    def train(t):  # a training row whose latest time is t (its own cut-off just after the history)
        if where == "candidate":
            return _rec("train", cutoff=5.0, hist=(("a", 1.0),), cands=(("c", t),))
        return _rec("train", cutoff=t + 0.5, hist=(("a", t),), cands=())

    test = _rec("test")  # user u: test cut-off 10
    assert check_no_leakage([test, train(BEFORE)])["rows"] == 2
    with pytest.raises(LeakageError, match="train row of user u: time 10.0 is not before the test cut-off 10.0"):
        check_no_leakage([test, train(CUT)])


def test_training_row_exactly_at_the_global_cut_off_is_a_leak():
    """A user without test rows is bounded by the global cut-off, with the same strict boundary."""
    assert check_no_leakage([_rec("train", user="v", cutoff=5.0, cands=(("c", BEFORE),))], global_cutoff=CUT)["rows"] == 1
    with pytest.raises(LeakageError, match="time 10.0 is not before the test cut-off 10.0"):
        check_no_leakage([_rec("train", user="v", cutoff=5.0, cands=(("c", CUT),))], global_cutoff=CUT)
    # the tighter of the user's test cut-off and the global one applies
    with pytest.raises(LeakageError, match="not before the test cut-off 8.0"):
        check_no_leakage([_rec("test", cutoff=20.0, hist=(("a", 1.0),), cands=(("b", 21.0),)),
                          _rec("train", cutoff=5.0, cands=(("c", 8.0),))], global_cutoff=8.0)


def _table(user, ts, item=None):
    item = item or ["x"] * len(user)
    return pa.table({"user_id": user, "item_id": item, "timestamp": pa.array(ts, type=pa.float64())})


def test_interactions_table_row_exactly_at_a_cut_off_is_a_leak():
    records = [_rec("test")]  # user u: test cut-off 10
    assert check_no_leakage(records, global_cutoff=20.0, interactions=_table(["u", "w"], [BEFORE, 19.0]))["interactions"] == 2
    with pytest.raises(LeakageError, match="interactions row 0 \\(user u, item x\\): time 10.0 is not before the test cut-off 10.0"):
        check_no_leakage(records, global_cutoff=20.0, interactions=_table(["u", "w"], [CUT, 19.0]))
    with pytest.raises(LeakageError, match="interactions row 1 \\(user w, item x\\): time 20.0 is not before the test cut-off 20.0"):
        check_no_leakage(records, global_cutoff=20.0, interactions=_table(["u", "w"], [BEFORE, 20.0]))
    with pytest.raises(LeakageError, match="interactions row 1: \\(user u, item b\\) is a test candidate"):
        check_no_leakage(records, interactions=_table(["u", "u"], [1.0, 2.0], ["a", "b"]))


def test_generators_leave_out_a_point_exactly_at_the_cut_off():
    """What the check guards: history, candidate pool and the critic's table are built with the
    same strict boundary (an interaction at exactly the cut-off is the test window's)."""
    inter = EventLog(user=[1, 1, 1, 1], item=[10, 11, 12, 13], ts=[1.0, BEFORE, CUT, 12.0],
                                interest=[1.0, 2.0, 3.0, 4.0])
    items, ts, _, _ = recent_history(inter, 1, CUT, 10)
    assert items.tolist() == [10, 11] and ts.tolist() == [1.0, BEFORE]
    pool, _, _ = candidate_pool(inter, inter, 1, 1.0, CUT)
    assert pool.tolist() == [10, 11]
    pool, _, _ = candidate_pool(inter, inter, 1, CUT, math.inf)
    assert pool.tolist() == [12, 13]
    limits = training_limits(inter, {1: CUT}, 20.0)
    assert limits.tolist() == [CUT] * 4
    table, _ = training_interactions(inter, lambda i: (), {1: CUT}, 20.0, [], sparse_frac=None, seed=0)
    assert table.column("item_id").to_pylist() == ["10", "11"]
    assert np.array_equal(training_limits(inter, {}, 20.0), np.full(4, 20.0))


def test_training_limits_against_a_per_row_lookup():
    """Each interaction's limit is its user's test cut-off, else the default: users below, between
    and above the ones with a cut-off, the first and the last of them, fractional cut-offs with an
    integer default (float64 throughout)."""
    rng = np.random.default_rng(0)
    users = rng.integers(0, 12, 200)
    inter = EventLog(user=users, item=np.arange(200), ts=rng.random(200) * 50, interest=np.ones(200))
    cutoffs = {2: 10.5, 3: 7.25, 7: 30.75, 10: 0.5}
    got = training_limits(inter, cutoffs, 20)
    assert got.dtype == np.float64
    assert got.tolist() == [cutoffs.get(int(u), 20.0) for u in inter.user]
    assert {0, 1, 2, 5, 10, 11} <= set(inter.user.tolist())  # below, first, between, last, above
    assert training_limits(EventLog([], [], [], []), cutoffs, 20.0).shape == (0,)


def _events(rng, n, users=4, items=12):
    ts = rng.integers(0, 20, n).astype(float)  # a coarse grid: ties in time and repeated items
    return EventLog(user=rng.integers(0, users, n), item=rng.integers(0, items, n), ts=ts, interest=rng.random(n))


def _rows(log, user):
    return [(float(t), int(i), float(v)) for u, i, t, v in zip(log.user, log.item, log.ts, log.interest) if u == user]


@pytest.mark.parametrize("seed", range(5))
def test_history_and_candidate_pool_against_a_row_by_row_reference(seed):
    """History: the last ``length`` distinct items strictly before the time (each at its most
    recent occurrence), oldest first. Pool: the first occurrence of each item of the source in
    [start, end), leaving out items the user met before ``start`` anywhere in the full log."""
    rng = np.random.default_rng(seed)
    all_inter = _events(rng, 300)
    keep = rng.random(300) < 0.6
    source = EventLog(all_inter.user[keep], all_inter.item[keep], all_inter.ts[keep], all_inter.interest[keep])
    for user in range(4):
        rows = sorted(_rows(all_inter, user), key=lambda r: (r[0], r[1]))
        for before in (0.0, 7.0, 13.0, 25.0):
            latest = {}
            for t, i, v in rows:
                if t < before:
                    latest[i] = (t, i, v)  # later rows overwrite: the most recent occurrence
            recent = sorted(latest.values(), key=lambda r: (r[0], r[1]))
            for length in (1, 3, 50):
                items, ts, interest, n_distinct = recent_history(all_inter, user, before, length)
                want = recent[-length:]
                assert items.tolist() == [r[1] for r in want] and ts.tolist() == [r[0] for r in want]
                assert interest.tolist() == [r[2] for r in want] and n_distinct == len(latest)
        src = sorted(_rows(source, user), key=lambda r: (r[0], r[1]))
        for start, end in ((0.0, 20.0), (5.0, 12.0), (12.0, 12.0), (8.0, 30.0)):
            met = {i for t, i, _ in rows if t < start}
            first = {}
            for t, i, v in src:
                if start <= t < end and i not in first:
                    first[i] = (t, i, v)
            want = [r for r in sorted(first.values(), key=lambda r: (r[0], r[1])) if r[1] not in met]
            items, ts, interest = candidate_pool(source, all_inter, user, start, end)
            assert items.tolist() == [r[1] for r in want], (user, start, end)
            assert ts.tolist() == [r[0] for r in want] and interest.tolist() == [r[2] for r in want]


def test_interactions_check_on_one_row_and_without_test_rows():
    with pytest.raises(LeakageError, match="interactions row 0 \\(user u, item x\\): time 10.0 is not before"):
        check_no_leakage([_rec("test")], global_cutoff=20.0, interactions=_table(["u"], [CUT]))
    # only training rows: the global cut-off is every user's limit
    train_only = [_rec("train", cutoff=5.0, cands=(("b", 6.0),))]
    assert check_no_leakage(train_only, global_cutoff=20.0, interactions=_table(["u", "w"], [1.0, 19.5]))["interactions"] == 2
    with pytest.raises(LeakageError, match="interactions row 1 \\(user w, item x\\): time 20.0 is not before the test cut-off 20.0"):
        check_no_leakage(train_only, global_cutoff=20.0, interactions=_table(["u", "w"], [1.0, 20.0]))


def test_esci_selection_is_seeded_sized_and_independent_of_row_order():
    """The same seed picks the same queries whatever the order of the judgement rows; the sizes are
    honoured; another seed picks others."""
    df = _frame({q: (f"query {q}", "train" if q % 3 else "test") for q in range(1, 61)})
    kw = dict(min_candidates=3, train_size=12, test_size=5)
    chosen = _ids(select_queries(df, seed=7, **kw))
    assert len(chosen["train"]) == 12 and len(chosen["test"]) == 5
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert _ids(select_queries(shuffled, seed=7, **kw)) == chosen
    assert _ids(select_queries(df, seed=7, **kw)) == chosen
    assert _ids(select_queries(df, seed=8, **kw)) != chosen


def test_a_user_with_several_test_rows_is_limited_by_the_earliest_cut_off():
    records = [_rec("test", cutoff=8.0, cands=(("c", 9.0),)), _rec("test", cutoff=CUT, cands=(("b", 11.0),)),
               _rec("train", cutoff=5.0, cands=(("d", 8.5),))]  # the earlier cut-off comes first
    with pytest.raises(LeakageError, match="^train row of user u: time 8.5 is not before the test cut-off 8.0$"):
        check_no_leakage(records)
    with pytest.raises(LeakageError, match="^test row of user u: history time 10.0 is not before the cut-off 10.0$"):
        check_no_leakage([_rec("test", hist=(("a", CUT),))])


def test_a_training_row_without_times_is_not_a_leak():
    empty = LeakRecord("train", "u", 5.0, (), (), (), ())
    assert check_no_leakage([_rec("test"), empty], global_cutoff=20.0)["rows"] == 2


def test_esci_a_query_with_one_judgement_is_never_eligible():
    df = _frame({1: ("one", "train"), 2: ("two", "test")}).iloc[[0, 3, 4, 5]]  # query 1 keeps one row
    assert _ids(select_queries(df, min_candidates=1, seed=0, train_size=None, test_size=None)) == {"train": [], "test": [2]}
